"""Write docs/configuration.md, the configuration reference, from the config's JSON Schema.

    .venv/bin/python docs/gen_config_reference.py           # rewrite docs/configuration.md
    .venv/bin/python docs/gen_config_reference.py --check   # exit 1 if it is out of date

Every key, type, default, bound and description comes from `agent.config.json_schema()`
(the pydantic models), so the page cannot drift from the code: tests/test_docs.py fails when
the committed page differs from what this script writes. The prose kept here is only the
short introduction of each section; the annotated example is docs/examples/agent.yaml,
copied in verbatim (the same test loads it with `agent.config.parse_config`).

This script imports only `agent.config` (not the CLI), so it runs wherever the project is
installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

DOCS = Path(__file__).resolve().parent
PAGE = DOCS / "configuration.md"
EXAMPLE = DOCS / "examples" / "agent.yaml"
REGENERATE = ".venv/bin/python docs/gen_config_reference.py"

# Where each model of the schema sits in the YAML file, and what it is for. A model the
# schema gains without an entry here stops the script (so a new section gets a place).
SECTIONS: dict[str, tuple[str, str]] = {
    "FactoryConfig": (
        "(top level)", "The file itself. Only `factory:` and `devices:` are required.",
    ),
    "Identity": ("factory", "Who the factory is. The ids are signed into every report."),
    "Collection": (
        "collection",
        "How samples are collected and kept, and when `/healthz` reports a problem.",
    ),
    "OpcUaConnection": (
        "connections.NAME (protocol: opcua)",
        "An OPC UA server. Devices name it with `connection: NAME`; their signals give "
        "`opcua: {node: ...}`.",
    ),
    "OpcUaSecurity": (
        "connections.NAME.security",
        "OPC UA message security and user identity. A secure policy needs a client "
        "certificate and key, and the files must exist when the configuration is loaded.",
    ),
    "OpcUaSubscription": (
        "connections.NAME.subscription",
        "Subscription settings used in `mode: subscribe`.",
    ),
    "ModbusConnection": (
        "connections.NAME (protocol: modbus)",
        "A Modbus TCP server (a PLC or a gateway). Devices name it with `connection: NAME` "
        "and give their `unit_id`; their signals give `modbus: {table, address, ...}`.",
    ),
    "Device": (
        "devices[]",
        "Every production device the factory declares, connected or not: the denominators "
        "of the networking and automation rates come from this list.",
    ),
    "Signal": (
        "devices[].signals[]",
        "One value read from a connected device, bound to a role. Indicators look only at "
        "roles, never at tag names.",
    ),
    "OpcUaAddress": ("devices[].signals[].opcua", "Where an OPC UA signal is read."),
    "ModbusAddress": ("devices[].signals[].modbus", "Where a Modbus signal is read."),
    "Reporting": (
        "reporting",
        "Optional. With it, `tieragent run` builds, signs and queues the report of every "
        "period that is over (see [Reporting and delivery](reporting.md)); `tieragent "
        "report` takes its defaults from it. Relative paths are read from the "
        "configuration file's folder.",
    ),
    "Delivery": (
        "delivery",
        "Optional. With it, `tieragent run` delivers the outbox to the bureau over MQTT and "
        "acts on every signed receipt; `tieragent report send --config` takes its defaults "
        "from it. Relative paths are read from the configuration file's folder.",
    ),
    "Secret": (
        "secrets: {env: VAR} or {file: PATH}",
        "Passwords and passphrases are never written in the file. Give exactly one of "
        "`env` (an environment variable) or `file` (a file holding the secret; surrounding "
        "white space is ignored). `check-config` and `run` resolve every one at start and "
        "stop (exit 2) naming the key, never the value.",
    ),
}

# What a key means, for keys whose model gives no description. A description in the schema
# always wins; a note for a key the schema does not have stops the script.
NOTES: dict[tuple[str, str], str] = {
    ("FactoryConfig", "schema"): "Format version of this file.",
    ("FactoryConfig", "factory"): "The factory's identity.",
    ("FactoryConfig", "collection"): "Collection, retention and health settings.",
    ("FactoryConfig", "state_maps"): "Your own maps from a device's state codes to the "
    "canonical states, named here and used as a signal's `state_map`.",
    ("FactoryConfig", "connections"): "OPC UA and Modbus TCP servers, by a name you choose.",
    ("FactoryConfig", "devices"): "The device inventory.",
    ("Identity", "name"): "The factory's name, as shown in reports and evidence.",
    ("Identity", "time_zone"): "IANA time zone; days, months and years are closed in it.",
    ("Identity", "industry_type"): "Discrete or process manufacturing (selects policy rules).",
    ("Identity", "province"): "Province, for benchmark comparison.",
    ("Collection", "default_interval_s"): "Expected sample interval of a signal that does not "
    "give `interval_s`; the data-collection rate counts samples against it.",
    ("Collection", "realtime_bound_s"): "A sample counts as on time when its protocol "
    "timestamp is within this many seconds of its receive time.",
    ("Collection", "raw_retention_days"): "Raw samples older than this are purged (derived "
    "tables and reports are kept).",
    ("Collection", "queue_size"): "Samples waiting for the store writer; when full, "
    "connectors wait (backpressure).",
    ("OpcUaConnection", "protocol"): "Selects this kind of connection.",
    ("OpcUaConnection", "mode"): "`subscribe` (monitored items) or `poll` (read every "
    "`poll_interval_s`); a server that refuses subscriptions is polled anyway.",
    ("OpcUaConnection", "poll_interval_s"): "Read interval in `mode: poll`.",
    ("OpcUaConnection", "request_timeout_s"): "Timeout of one OPC UA request.",
    ("OpcUaConnection", "reconnect_min_s"): "First wait between reconnection attempts.",
    ("OpcUaConnection", "reconnect_fast_window_s"): "Length of the fast-retry window at the "
    "start of an outage.",
    ("OpcUaSecurity", "policy"): "Security policy; `None` goes only with mode `None`.",
    ("OpcUaSecurity", "mode"): "Message security mode.",
    ("OpcUaSecurity", "username"): "User name, if the server asks for one.",
    ("OpcUaSecurity", "password"): "The user's password (needs `username`).",
    ("OpcUaSubscription", "publishing_interval_ms"): "How often the server sends changes.",
    ("OpcUaSubscription", "sampling_interval_ms"): "How often the server samples each node.",
    ("OpcUaSubscription", "queue_size"): "Values the server keeps per node between "
    "publishes.",
    ("OpcUaSubscription", "deadband_abs"): "Absolute deadband; 0 reports every change.",
    ("ModbusConnection", "protocol"): "Selects this kind of connection.",
    ("ModbusConnection", "host"): "Host name or IP address of the Modbus TCP server.",
    ("ModbusConnection", "port"): "TCP port.",
    ("ModbusConnection", "poll_interval_s"): "How often every mapped block is read.",
    ("ModbusConnection", "timeout_s"): "Timeout of one request.",
    ("ModbusConnection", "retries"): "Retries of a failed request before the link counts "
    "as down.",
    ("ModbusConnection", "reconnect_min_s"): "First wait between reconnection attempts.",
    ("ModbusConnection", "reconnect_max_s"): "Longest wait between reconnection attempts.",
    ("ModbusConnection", "max_registers_per_read"): "Largest register block read at once.",
    ("ModbusConnection", "max_bits_per_read"): "Largest coil/discrete-input block read at "
    "once.",
    ("Device", "id"): "Unique device id (letters, digits, `-`, `_`, `.`; at most 64).",
    ("Device", "name"): "Display name.",
    ("Device", "line"): "Production line.",
    ("Device", "process_step"): "Process step the device serves.",
    ("Device", "key_process"): "The device serves a key process (key-process rates).",
    ("Device", "kind"): "What the device is (automation rates).",
    ("Device", "digital"): "The device has a digital interface; a connected device must "
    "say `true`.",
    ("Device", "ideal_cycle_time_s"): "Ideal cycle time per piece, when no "
    "`ideal_cycle_time_s` signal gives it.",
    ("Device", "signals"): "The device's signals; none for `connection: none`.",
    ("Signal", "id"): "Signal id, unique within the device.",
    ("Signal", "role"): "What the value means to the indicators; each role except `alarm` "
    "and `process` once per device.",
    ("Signal", "required"): "Counted in the data-collection rate (expected samples).",
    ("Signal", "unit"): "Unit, for display.",
    ("Signal", "counter_bits"): "Counter width for rollover; default "
    "`collection.counter_bits`.",
    ("Signal", "opcua"): "Address on an OPC UA connection.",
    ("Signal", "modbus"): "Address on a Modbus connection.",
    ("ModbusAddress", "table"): "Modbus table (coil, discrete input, holding or input "
    "register).",
    ("ModbusAddress", "address"): "Zero-based address of the first register or bit.",
    ("ModbusAddress", "type"): "Value type; coils and discrete inputs are `bool`.",
    ("ModbusAddress", "word_order"): "Order of the 16-bit words of a 32/64-bit value.",
    ("ModbusAddress", "byte_order"): "Order of the bytes in each word.",
    ("ModbusAddress", "scale"): "value = raw × scale + offset.",
    ("ModbusAddress", "offset"): "value = raw × scale + offset.",
    ("Delivery", "protocol"): "MQTT protocol version.",
    ("Delivery", "keepalive_s"): "MQTT keepalive.",
    ("Delivery", "reconnect_min_s"): "First wait between reconnection attempts.",
    ("Delivery", "reconnect_max_s"): "Longest wait between reconnection attempts.",
    ("Delivery", "ca_file"): "CA of the broker (`mqtts://`); default: the system CAs.",
    ("Delivery", "cert_file"): "TLS client certificate, if the broker asks for one.",
    ("Delivery", "key_file"): "TLS client key.",
    ("Delivery", "username"): "MQTT user name.",
    ("Secret", "env"): "Name of an environment variable holding the secret.",
    ("Secret", "file"): "File holding the secret (e.g. a systemd credential).",
}


def _anchor(name: str) -> str:
    return name.lower()


def _scalar(value: Any) -> str:
    """A default or enum value as it is written in YAML (quoted where YAML would read a
    string as something else, e.g. the MQTT protocol "5")."""
    if value is None:
        return "not set"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value and yaml.safe_load(value) == value else json.dumps(value)
    return json.dumps(value, ensure_ascii=False)


def _prose(text: str) -> str:
    """A description as Markdown table text: `<` outside code spans would start an HTML
    tag (and hide `<data-dir>`), `|` would end the cell."""
    parts = " ".join(text.split()).split("`")
    for index in range(0, len(parts), 2):  # even parts are outside code spans
        parts[index] = parts[index].replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts).replace("|", "\\|")


class Reference:
    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self.defs: dict[str, Any] = schema["$defs"]
        unplaced = sorted(
            name for name, body in self.defs.items()
            if "properties" in body and name not in SECTIONS
        )
        if unplaced:
            raise SystemExit(
                f"gen_config_reference: add a SECTIONS entry for {', '.join(unplaced)}"
            )
        stale = sorted(
            f"{model}.{key}" for model, key in NOTES
            if key not in self._model(model).get("properties", {})
        )
        if stale:
            raise SystemExit(f"gen_config_reference: NOTES for unknown keys {', '.join(stale)}")

    def _model(self, name: str) -> dict[str, Any]:
        return self.schema if name == "FactoryConfig" else self.defs.get(name, {})

    def _target(self, prop: dict[str, Any]) -> str | None:
        """The model (with keys of its own) that a property holds, if any."""
        for option in [prop, *prop.get("anyOf", [])]:
            ref = option.get("$ref")
            if isinstance(ref, str):
                name, body = self._resolve(ref)
                if "properties" in body:
                    return name
        return None

    def _resolve(self, ref: str) -> tuple[str, dict[str, Any]]:
        name = ref.rsplit("/", 1)[1]
        return name, self.defs[name]

    def type_of(self, prop: dict[str, Any]) -> str:
        """A short human type: `number > 0`, `one of a, b`, a link to a section, ..."""
        if "$ref" in prop:
            name, body = self._resolve(prop["$ref"])
            if "enum" in body:
                return "one of " + ", ".join(f"`{_scalar(v)}`" for v in body["enum"])
            return f"[{SECTIONS[name][0]}](#{_anchor(name)})"
        if "anyOf" in prop:
            options = [p for p in prop["anyOf"] if p.get("type") != "null"]
            return " or ".join(self.type_of(p) for p in options)
        if "oneOf" in prop:
            return " or ".join(self.type_of(p) for p in prop["oneOf"])
        if "const" in prop:
            return f"`{_scalar(prop['const'])}`"
        if "enum" in prop:
            return "one of " + ", ".join(f"`{_scalar(v)}`" for v in prop["enum"])
        kind = prop.get("type")
        if kind == "array" and "prefixItems" in prop:  # a fixed-length tuple
            return "[" + ", ".join(self.type_of(p) for p in prop["prefixItems"]) + "]"
        if kind == "array":
            return f"list of {self.type_of(prop['items'])}"
        if kind == "object":
            inner = prop.get("additionalProperties")
            if isinstance(inner, dict):
                return f"map of NAME → {self.type_of(inner)}"
            return "mapping"
        words = {"string": "text", "number": "number", "integer": "integer",
                 "boolean": "true/false"}
        text = words.get(str(kind), str(kind))
        if prop.get("format") == "path":
            text = "path"
        elif prop.get("format") == "date":
            text = "date (YYYY-MM-DD)"
        return text + self._bounds(prop)

    @staticmethod
    def _bounds(prop: dict[str, Any]) -> str:
        parts = []
        for key, sign in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                          ("exclusiveMaximum", "<")):
            if key in prop:
                parts.append(f"{sign} {_scalar(prop[key])}")
        if "minLength" in prop:
            parts.append(f"at least {prop['minLength']} character(s)")
        return (", " + ", ".join(parts)) if parts else ""

    def default_of(self, name: str, prop: dict[str, Any], required: set[str]) -> str:
        if name in required:
            return "**required**"
        if "default" not in prop:
            return "empty"
        value = prop["default"]
        if isinstance(value, dict):
            return "all defaults" if value else "empty"
        if value == [] or value == {}:
            return "empty"
        if value is None:
            return "not set"
        return f"`{_scalar(value)}`"

    def table(self, model: str, body: dict[str, Any]) -> list[str]:
        required = set(body.get("required", []))
        lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, prop in body["properties"].items():
            description = prop.get("description") or NOTES.get((model, name), "")
            target = self._target(prop)
            if target is not None and not description:
                description = self.defs[target].get("description") or SECTIONS[target][1]
                description = description.split(". ")[0].rstrip(".") + "."
            description = _prose(description)
            lines.append(
                f"| `{name}` | {self.type_of(prop)} | {self.default_of(name, prop, required)} "
                f"| {description} |"
            )
        return lines

    def order(self) -> list[str]:
        """Models in the order a reader meets them in the file (depth first)."""
        seen: list[str] = []

        def visit(node: Any) -> None:
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str):
                    name, body = self._resolve(ref)
                    if "properties" in body and name not in seen:
                        seen.append(name)
                        visit(body["properties"])
                for value in node.values():
                    visit(value)
            elif isinstance(node, list):
                for value in node:
                    visit(value)

        visit(self.schema["properties"])
        # Secrets are read by several sections: they close the page.
        if "Secret" in seen:
            seen.remove("Secret")
            seen.append("Secret")
        return seen

    def section(self, name: str, body: dict[str, Any]) -> list[str]:
        where, intro = SECTIONS[name]
        return [
            f"## `{where}` {{#{_anchor(name)}}}", "", intro, "", *self.table(name, body), "",
        ]


def render(schema: dict[str, Any], example: str, presets: dict[str, str]) -> str:
    ref = Reference(schema)
    lines = [
        "<!-- Generated by docs/gen_config_reference.py from agent.config.json_schema(); do not "
        f"edit by hand. Regenerate with: {REGENERATE} -->",
        "",
        "# Configuration reference",
        "",
        "One YAML file (UTF-8) describes a factory for the agent. This page is generated from "
        "the configuration's schema, so every key, type and default here is the one the code "
        "checks. `tieragent check-config FILE` prints every problem with its key; editors can "
        "validate against `config/schemas/config.schema.json` (`tieragent config-schema`).",
        "",
        "Types: *number* accepts decimals, *path* is a file or folder (relative paths in "
        "`reporting:` and `delivery:` are read from the configuration file's folder), *not "
        "set* means the key is absent or empty (`~`). Keys not listed here are refused.",
        "",
        "## A full, annotated example {#example}",
        "",
        "This is [`docs/examples/agent.yaml`](examples/agent.yaml); copy it and change what is "
        "yours. "
        "`tieragent init` writes a file of the same shape from your OPC UA servers.",
        "",
        "```yaml",
        example.rstrip("\n"),
        "```",
        "",
        *ref.section("FactoryConfig", schema),
    ]
    for name in ref.order():
        lines.extend(ref.section(name, ref.defs[name]))
    state = ref.defs.get("State", {}).get("enum", [])
    role = ref.defs.get("Role", {}).get("enum", [])
    lines += [
        "## Values used above {#values}",
        "",
        "- Signal roles (`role`): " + ", ".join(f"`{v}`" for v in role) + ".",
        "- Canonical states (values of a `state_maps` entry): "
        + ", ".join(f"`{v}`" for v in state) + ".",
        "- State-map presets (`state_map`): "
        + ", ".join(f"`{name}` ({about})" for name, about in presets.items())
        + ", or a name under `state_maps:`.",
        "",
    ]
    return "\n".join(lines)


def _presets() -> dict[str, str]:
    """The state-map presets the code has, each with what it is."""
    from indicators.vocabulary import PRESETS

    about = {
        "packml": "ISA-TR88 PackML state numbers",
        "opcua_machinery": "OPC 40001-1 MachineryItemState",
        "plain": "0 offline, 1 running, 2 idle, 3 setup, 4 planned stop, 5 unplanned stop",
    }
    if set(about) != set(PRESETS):
        raise SystemExit(f"gen_config_reference: describe the presets {sorted(PRESETS)}")
    return {name: about[name] for name in sorted(PRESETS)}


def generate() -> str:
    from agent.config import json_schema  # the project must be installed (pip install -e .)

    return render(json_schema(), EXAMPLE.read_text(encoding="utf-8"), _presets())


def main(argv: list[str]) -> int:
    text = generate()
    if "--check" in argv:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is out of date; regenerate it with: {REGENERATE}")
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"Wrote {PAGE}.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
