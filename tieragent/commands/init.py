"""`tieragent init`: write a commented factory configuration for a new gateway.

It asks for what it is not given (or, with --yes or without a terminal, fills
placeholders marked `# CHANGE ME`), discovers every OPC UA endpoint given with the same
connection code the agent runs (`connectors.discover`), writes a Modbus device template
(Modbus cannot be browsed), a `reporting:` section and, with a broker and the bureau's key,
a `delivery:` section. The text is built from a small template so that every key carries a
comment saying what it means; it is validated with `agent.config.parse_config` before it is
written, so what `init` writes always passes `tieragent check-config`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import typer
import yaml
from rich.console import Console

from agent.config import ConfigError, FactoryConfig, parse_config
from connectors.config import OpcUaConnection, OpcUaMode, OpcUaPolicy, OpcUaSecurity, Secret
from tieragent.console import InvalidInput, RunFailed, handle_errors

if TYPE_CHECKING:
    from connectors.discover import DeviceDraft

console = Console(stderr=True)
PLACEHOLDER = "CHANGE-ME"
CHANGE_ME = "# CHANGE ME"


@dataclass
class OpcUaTarget:
    """One OPC UA connection of the draft and the devices discovered behind it."""

    name: str
    endpoint: str
    security: OpcUaSecurity
    devices: list[DeviceDraft] = field(default_factory=list)


@dataclass
class Draft:
    """Everything the configuration text is made from."""

    factory_id: str
    enterprise_id: str
    industry_code: str
    name: str = ""
    time_zone: str = "Asia/Shanghai"
    opcua: list[OpcUaTarget] = field(default_factory=list)
    modbus: list[tuple[str, str, int]] = field(default_factory=list)  # (name, host, port)
    broker: str | None = None
    bureau_key: Path | None = None
    source: str = "tieragent init"


# --- options shared with `discover` ------------------------------------------------------


def security_from_options(
    policy: str,
    mode: str | None,
    certificate: Path | None,
    private_key: Path | None,
    pki_dir: Path | None,
    username: str | None,
    password_env: str | None,
) -> OpcUaSecurity:
    """The `security:` settings the options describe, checked by the connector's own model."""
    from pydantic import ValidationError

    policies = {p.value.lower(): p for p in OpcUaPolicy}
    chosen = policies.get(policy.lower())
    if chosen is None:
        raise InvalidInput(
            f"unknown --security-policy {policy!r}; choose from "
            f"{', '.join(p.value for p in OpcUaPolicy)}"
        )
    if mode is None:
        mode = "None" if chosen == OpcUaPolicy.NONE else "SignAndEncrypt"
    modes = {m.value.lower(): m for m in OpcUaMode}
    if mode.lower() not in modes:
        raise InvalidInput(f"unknown --mode {mode!r}; choose from Sign, SignAndEncrypt")
    if password_env is not None and username is None:
        raise InvalidInput("--password-env needs --username")
    try:
        return OpcUaSecurity(
            policy=chosen,
            mode=modes[mode.lower()],
            certificate=certificate.absolute() if certificate else None,
            private_key=private_key.absolute() if private_key else None,
            pki_dir=pki_dir.absolute() if pki_dir else None,
            username=username,
            password=Secret(env=password_env) if password_env else None,
        )
    except ValidationError as error:
        raise InvalidInput(error.errors()[0]["msg"].removeprefix("Value error, ")) from None


def check_endpoint(url: str) -> None:
    from pydantic import ValidationError

    try:
        OpcUaConnection(endpoint=url)  # the same endpoint check as the config
    except ValidationError as error:
        raise InvalidInput(error.errors()[0]["msg"].removeprefix("Value error, ")) from None


def discover_devices(
    url: str, security: OpcUaSecurity, timeout_s: float, observe_s: float = 0.0
) -> list[DeviceDraft]:
    """Browse `url` and group what it holds into device drafts; InvalidInput on failure."""
    from connectors.discover import discover, group_devices
    from connectors.errors import ConnectorError
    from connectors.opcua_security import SecurityNotOffered

    # Failures are reported in one sentence below; asyncua's own lines would repeat them.
    logging.getLogger("asyncua").setLevel(logging.CRITICAL)
    try:
        found = asyncio.run(discover(url, security, timeout_s=timeout_s, observe_s=observe_s))
    except (ValueError, ConnectorError, OSError, TimeoutError) as error:
        hint = ""
        if isinstance(error, SecurityNotOffered) and security.policy == OpcUaPolicy.NONE:
            hint = " Give --security-policy, --mode, --cert and --private-key."
        raise InvalidInput(f"Cannot discover {url}: {error}{hint}") from None
    return group_devices(found)


# --- the text ------------------------------------------------------------------------------


def _q(text: str) -> str:
    from connectors.discover import quoted

    return quoted(text)


def _identity_lines(draft: Draft) -> list[str]:
    def mark(value: str) -> str:
        return f"  {CHANGE_ME}" if value == PLACEHOLDER else ""

    return [
        "factory:",
        f"  enterprise_id: {_q(draft.enterprise_id)}  # unified social credit code (18 "
        f"characters){mark(draft.enterprise_id)}",
        f"  factory_id: {_q(draft.factory_id)}  # the id the bureau issued; it names every "
        f"report{mark(draft.factory_id)}",
        f"  name: {_q(draft.name)}  # shown in reports",
        f"  time_zone: {_q(draft.time_zone)}  # days and months are closed in this zone",
        f"  industry_code: {_q(draft.industry_code)}  # GB/T 4754 industry code, e.g. "
        f"C3484{mark(draft.industry_code)}",
        "  industry_type: discrete  # discrete or process",
    ]


def _security_lines(security: OpcUaSecurity) -> list[str]:
    lines = [
        "    security:  # as the server offers it; None/None only on a trusted network",
        f"      policy: {security.policy.value}",
        f"      mode: {security.mode.value}",
    ]
    if security.certificate is not None:
        lines.append(f"      certificate: {_q(str(security.certificate))}  # client certificate")
    if security.private_key is not None:
        lines.append(f"      private_key: {_q(str(security.private_key))}  # its private key")
    if security.pki_dir is not None:
        lines.append(
            f"      pki_dir: {_q(str(security.pki_dir))}  # trust list: the server certificate "
            "must be in trusted/"
        )
    if security.username is not None:
        lines.append(f"      username: {_q(security.username)}")
    if security.password is not None and security.password.env is not None:
        lines.append(
            f"      password: {{env: {security.password.env}}}  # read from the agent's "
            "environment at start"
        )
    return lines


def connection_lines(draft: Draft) -> list[str]:
    if not draft.opcua and not draft.modbus:
        return ["connections: {}  # none given: add opcua or modbus connections here"]
    lines = ["connections:  # how the agent reaches each server; devices name one of these"]
    for target in draft.opcua:
        lines += [
            f"  {target.name}:",
            "    protocol: opcua",
            f"    endpoint: {_q(target.endpoint)}",
            "    mode: subscribe  # subscribe (default) or poll, for servers without subscriptions",
            *_security_lines(target.security),
        ]
    for name, host, port in draft.modbus:
        lines += [
            f"  {name}:",
            "    protocol: modbus",
            f"    host: {_q(host)}",
            f"    port: {port}",
            "    poll_interval_s: 1.0  # seconds between reads of each signal",
        ]
    return lines


def _modbus_template(name: str, host: str, port: int) -> list[str]:
    """A commented device for a Modbus connection: Modbus has no browsing, so the register
    map comes from the device's manual."""
    return [
        f"  # Modbus {host}:{port} cannot be browsed: fill in a device from its register map,",
        "  # then uncomment it. Every address below is an example.",
        f"  # - id: {name}-device-1",
        "  #   line: L1",
        "  #   process_step: pressing",
        "  #   key_process: false",
        "  #   kind: plc_automated",
        "  #   digital: true",
        f"  #   connection: {name}",
        "  #   unit_id: 1  # the Modbus unit (slave) id of the device",
        "  #   signals:",
        "  #     - id: state",
        "  #       role: state",
        "  #       state_map: plain  # which code means what: plain, packml or opcua_machinery",
        "  #       modbus: {table: holding, address: 0, type: uint16}",
    ]


def _device_lines(draft: Draft) -> list[str]:
    from connectors.discover import render_devices

    body: list[str] = []
    for target in draft.opcua:
        found = len(target.devices)
        body.append(f"  # --- {target.endpoint}: {found} object(s) with variables ---")
        body += render_devices(target.devices, target.name)
    for name, host, port in draft.modbus:
        body += _modbus_template(name, host, port)
    head = [
        "# Every production device, networked or not: devices without a connection write",
        "# `connection: none` and no signals (they still count in the networking and automation",
        "# rates). Roles and state maps below are guesses: check each `# check:` line.",
    ]
    has_device = any(line.startswith("  - id:") for line in body)
    return [*head, "devices:" if has_device else "devices: []", *body]


def _reporting_lines() -> list[str]:
    return [
        "# With `reporting:` `tieragent run` builds and signs the report of every day that",
        "# has ended (plus grace_s for late data).",
        "reporting:",
        "  periods: [day]  # day, month, year",
        "  grace_s: 900  # seconds after a period ends before its report is built",
        "  # Without declarations, declared conditions are not_declared; without benchmarks,",
        "  # benchmark conditions are not_declared. Both are the factory's own files.",
        "  # declarations: declarations.yaml",
        "  # benchmarks: benchmarks.yaml",
        "  # key_dir: keys  # signing key folder (`tieragent keys init`); default <data-dir>/keys",
        "  # passphrase: {env: TIERAGENT_KEY_PASSPHRASE}  # for an encrypted signing key",
    ]


def _delivery_lines(draft: Draft) -> list[str]:
    head = "# With `delivery:` `tieragent run` sends reports to the bureau over MQTT."
    if draft.broker is not None and draft.bureau_key is not None:
        return [
            head,
            "delivery:",
            f"  broker_url: {_q(draft.broker)}  # mqtt://host:1883 or mqtts://host:8883",
            f"  bureau_key: {_q(str(draft.bureau_key))}  # the bureau's receipt-signing key",
            '  protocol: "5"  # MQTT 5, or "3.1.1" for older brokers',
            "  # ca_file: ca.pem  # TLS (mqtts://): the broker's CA",
            "  # username: factory",
            "  # password: {env: TIERAGENT_MQTT_PASSWORD}",
        ]
    return [
        head,
        "# delivery:",
        "#   broker_url: mqtts://bureau.example:8883",
        "#   bureau_key: bureau-key.json  # the bureau's receipt-signing public key",
        "#   username: factory",
        "#   password: {env: TIERAGENT_MQTT_PASSWORD}",
    ]


def render_config(draft: Draft) -> str:
    """The whole configuration text (not yet validated: see `validated`)."""
    lines = [
        f"# tieragent factory configuration, written by `{draft.source}` on "
        f"{date.today().isoformat()}.",
        f"# Lines marked {CHANGE_ME} hold placeholders or guesses: correct them. Check it with",
        "#   tieragent check-config FILE    and read every signal once with",
        "#   tieragent probe --config FILE",
        "schema: tieragent/config/v1",
        "",
        *_identity_lines(draft),
        "",
        "collection:",
        "  default_interval_s: 1.0  # expected seconds between samples of a signal",
        "  realtime_bound_s: 5.0  # a sample older than this on arrival is not real-time",
        "",
        *connection_lines(draft),
        "",
        *_device_lines(draft),
        "",
        *_reporting_lines(),
        "",
        *_delivery_lines(draft),
    ]
    return "\n".join(lines) + "\n"


def validated(text: str, file: str) -> FactoryConfig:
    """`text` parsed and validated as `load_config` does; RunFailed naming every problem."""
    try:
        return parse_config(yaml.safe_load(text), file)
    except (yaml.YAMLError, ConfigError) as error:
        raise RunFailed(
            f"the configuration drafted for {file} does not validate (a bug; please report "
            f"it): {error}"
        ) from None


def write_config(draft: Draft, out: Path, force: bool) -> FactoryConfig:
    if out.exists() and not force:
        raise InvalidInput(f"{out} exists; give --force to overwrite it")
    text = render_config(draft)
    config = validated(text, str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return config


# --- the command ---------------------------------------------------------------------------


def _modbus_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInput(f"--modbus wants HOST:PORT, e.g. 192.168.0.20:502, not {text!r}")
    return host, int(port)


def _ask(value: str | None, prompt: str, interactive: bool, missing: list[str]) -> str:
    if value:
        return value
    if interactive:
        return str(typer.prompt(prompt))
    missing.append(prompt)
    return PLACEHOLDER


@handle_errors
def init(
    out: Path = typer.Option(Path("factory.yaml"), "--out", help="Configuration file to write."),
    force: bool = typer.Option(False, "--force", help="Overwrite --out if it exists."),
    factory_id: str | None = typer.Option(None, "--factory-id", help="Id the bureau issued."),
    enterprise_id: str | None = typer.Option(
        None, "--enterprise-id", help="Unified social credit code."
    ),
    industry_code: str | None = typer.Option(
        None, "--industry-code", help="GB/T 4754 code, e.g. C3484."
    ),
    name: str = typer.Option("", "--name", help="Factory name."),
    time_zone: str = typer.Option("Asia/Shanghai", "--time-zone", help="Factory time zone."),
    opcua: list[str] = typer.Option([], "--opcua", help="opc.tcp://HOST:PORT (repeatable)."),
    modbus: list[str] = typer.Option([], "--modbus", help="Modbus TCP HOST:PORT (repeatable)."),
    broker: str | None = typer.Option(None, "--broker", help="Bureau MQTT broker URL."),
    bureau_key: Path | None = typer.Option(None, "--bureau-key", help="Bureau public key file."),
    security_policy: str = typer.Option("None", "--security-policy", help="OPC UA policy."),
    mode: str | None = typer.Option(None, "--mode", help="Sign or SignAndEncrypt."),
    cert: Path | None = typer.Option(None, "--cert", help="OPC UA client certificate."),
    private_key: Path | None = typer.Option(None, "--private-key", help="Its private key."),
    pki_dir: Path | None = typer.Option(None, "--pki-dir", help="OPC UA trust list folder."),
    username: str | None = typer.Option(None, "--username", help="OPC UA user name."),
    password_env: str | None = typer.Option(
        None, "--password-env", help="Environment variable holding the OPC UA password."
    ),
    timeout_s: float = typer.Option(10.0, "--timeout", help="Seconds per OPC UA request."),
    observe_s: float = typer.Option(
        0.0, "--observe", min=0.0, max=600.0,
        help="Also watch integer values this many seconds (better state map guesses).",
    ),
    yes: bool = typer.Option(False, "--yes", help="Ask nothing; placeholders for the rest."),
) -> None:
    """Write a commented factory configuration, discovering the OPC UA servers given."""
    if out.exists() and not force:
        raise InvalidInput(f"{out} exists; give --force to overwrite it")
    interactive = not yes and sys.stdin.isatty()
    missing: list[str] = []
    draft = Draft(
        factory_id=_ask(factory_id, "Factory id (issued by the bureau)", interactive, missing),
        enterprise_id=_ask(enterprise_id, "Enterprise id (social credit code)", interactive,
                           missing),
        industry_code=_ask(industry_code, "Industry code (GB/T 4754)", interactive, missing),
        name=name,
        time_zone=time_zone,
    )
    _check_identity(draft)
    if (broker is None) != (bureau_key is None):
        raise InvalidInput("--broker and --bureau-key go together (both or neither)")
    if bureau_key is not None and not bureau_key.is_file():
        raise InvalidInput(f"--bureau-key {bureau_key} is not a file")
    draft.broker, draft.bureau_key = broker, bureau_key.absolute() if bureau_key else None
    if not opcua and not modbus and interactive:
        answer = typer.prompt(
            "OPC UA endpoints (comma separated, empty for none)", default="", show_default=False
        )
        opcua = [part.strip() for part in str(answer).split(",") if part.strip()]
    security = security_from_options(
        security_policy, mode, cert, private_key, pki_dir, username, password_env
    )
    draft.modbus = [(f"modbus-{i}", *_modbus_address(a)) for i, a in enumerate(modbus, 1)]
    for url in opcua:
        check_endpoint(url)
    for index, url in enumerate(opcua, 1):
        console.print(f"Discovering {url} ...", highlight=False)
        target = OpcUaTarget(f"opcua-{index}", url, security)
        target.devices = discover_devices(url, security, timeout_s, observe_s)
        draft.opcua.append(target)
    _unique_device_ids(draft.opcua)
    config = write_config(draft, out, force)
    connected = sum(1 for d in config.devices if d.connection != "none")
    signals = sum(len(d.signals) for d in config.devices)
    console.print(
        f"Wrote {out}: {connected} device(s), {signals} signal(s), "
        f"{len(config.connections)} connection(s).",
        highlight=False,
    )
    if missing:
        console.print(f"Placeholders to change ({CHANGE_ME}): {', '.join(missing)}.",
                      highlight=False)
    console.print(
        f"Next: tieragent check-config {out}; tieragent probe --config {out}; "
        "tieragent keys init --dir data/keys (the signing key reporting: needs); "
        f"tieragent run --config {out} --data-dir data",
        highlight=False,
    )


def _check_identity(draft: Draft) -> None:
    """A mistake in an identity option is the user's (exit 2), named with its option."""
    from pydantic import ValidationError

    from agent.config import Identity

    options = {"factory_id": "--factory-id", "time_zone": "--time-zone"}
    try:
        Identity(
            enterprise_id=draft.enterprise_id, factory_id=draft.factory_id, name=draft.name,
            time_zone=draft.time_zone, industry_code=draft.industry_code,
        )
    except ValidationError as error:
        first = error.errors()[0]
        option = options.get(str(first["loc"][0]), str(first["loc"][0]))
        message = first["msg"].removeprefix("Value error, ")
        raise InvalidInput(f"{option}: {message}") from None


def _unique_device_ids(targets: Sequence[OpcUaTarget]) -> None:
    """Device ids stay unique across servers (two servers may both have a CNC-01)."""
    used: set[str] = set()
    for target in targets:
        host = urlparse(target.endpoint).hostname or target.name
        for device in target.devices:
            if device.id in used:
                device.id = f"{device.id}-{host}"[:64]
            n = 2
            base = device.id
            while device.id in used:
                device.id, n = f"{base[:60]}-{n}", n + 1
            used.add(device.id)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
