"""OPC UA face: the live source's OPC UA signals served by an asyncua server.

Address space: Objects/Factory/<line>/<device>/<signal>, string NodeIds
`ns=2;s=Factory/<line>/<device>/<signal>` in namespace `urn:tieragent:simulator`
(see `simulator.opcua_nodes`). Every tick the face asks the source for all values and
writes only those that changed, as DataValues whose SourceTimestamp is the moment the
value became true (`SignalValue.changed_at`).

Beyond asyncua's defaults the face adds what a collection test needs from a real
server: advertised *and enforced* operation limits (BadTooManyOperations), a strict
security mode offering only the configured endpoints and identity tokens (both enforced
by the server subclasses in `simulator.opcua_server`), and fault hooks (bad status
codes, timestamp skew, suspended notifications, dropped connections, restart on the
same port). The hooks are driven by `simulator.faults.FaultController`; what restarts and
hooks do to the running asyncua server (private API) is in `simulator.opcua_server`.

Values are written straight into the address space (no client-side write service), so
one process serves 5,000 tags changing at 1 Hz to a subscribing client with about 36 %
of one core, 8,000 with about 52 % (measured on the shared 2-core CI machine); the
`scale_tags` option adds such synthetic tags for load tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from asyncua import Server, ua

from simulator.api import LiveSource, SignalSpec, SignalValue
from simulator.certs import SERVER_APPLICATION_URI
from simulator.opcua_nodes import (
    NAMESPACE_INDEX,
    NAMESPACE_URI,
    SYNTHETIC_LINE,
    add_enum_strings,
    coerce_value,
    object_item,
    opcua_path_of,
    string_node,
    synthetic_path,
    variable_item,
    variant_type_of,
)
from simulator.opcua_server import (
    OperationLimits,
    SimInternalServer,
    abort_clients,
    advertise_operation_limits,
    close_client_sessions,
    close_listener,
    quietly_stop,
    reopen_listener,
    resume_publishing,
    stop_publishing,
)

_log = logging.getLogger(__name__)

_POLICY = ua.SecurityPolicyType
SECURITY_ENDPOINTS: dict[str, ua.SecurityPolicyType] = {
    "None": _POLICY.NoSecurity,
    "Basic256Sha256_Sign": _POLICY.Basic256Sha256_Sign,
    "Basic256Sha256_SignAndEncrypt": _POLICY.Basic256Sha256_SignAndEncrypt,
    "Aes128_Sha256_RsaOaep_Sign": _POLICY.Aes128Sha256RsaOaep_Sign,
    "Aes128_Sha256_RsaOaep_SignAndEncrypt": _POLICY.Aes128Sha256RsaOaep_SignAndEncrypt,
    "Aes256_Sha256_RsaPss_Sign": _POLICY.Aes256Sha256RsaPss_Sign,
    "Aes256_Sha256_RsaPss_SignAndEncrypt": _POLICY.Aes256Sha256RsaPss_SignAndEncrypt,
}
IDENTITY_TOKENS: dict[str, type] = {
    "anonymous": ua.AnonymousIdentityToken,
    "username": ua.UserNameIdentityToken,
    "certificate": ua.X509IdentityToken,
}


@dataclass(frozen=True, slots=True)
class OpcUaFaceConfig:
    host: str = "127.0.0.1"
    port: int = 0  # 0 = a free port chosen at the first start and kept across restarts
    tick_s: float = 0.1
    endpoints: tuple[str, ...] = ("None",)  # keys of SECURITY_ENDPOINTS
    identity_tokens: tuple[str, ...] = ("anonymous",)  # keys of IDENTITY_TOKENS
    users: Mapping[str, str] = field(default_factory=dict)  # username -> password
    strict: bool = False  # refuse NoSecurity and Anonymous altogether (docs/reliability.md S4)
    certificate: Path | None = None  # server certificate (DER or PEM)
    private_key: Path | None = None
    limits: OperationLimits = field(default_factory=OperationLimits)
    scale_tags: int = 0  # synthetic Double tags under Factory/Synthetic, each changing at 1 Hz
    application_uri: str = SERVER_APPLICATION_URI
    # The wall clock values are read at and stamped with (shifted for rehearsals).
    clock: Callable[[], float] = time.time

    def problems(self) -> list[str]:
        """Every inconsistency, as user-facing sentences (empty when valid)."""
        found: list[str] = []
        unknown = [name for name in self.endpoints if name not in SECURITY_ENDPOINTS]
        if unknown:
            found.append(
                f"unknown OPC UA endpoint(s) {unknown}; choose from {list(SECURITY_ENDPOINTS)}"
            )
        bad_tokens = [name for name in self.identity_tokens if name not in IDENTITY_TOKENS]
        if bad_tokens:
            found.append(
                f"unknown identity token(s) {bad_tokens}; choose from {list(IDENTITY_TOKENS)}"
            )
        if not self.endpoints:
            found.append("at least one OPC UA endpoint is needed")
        if not self.identity_tokens:
            found.append("at least one identity token is needed")
        secure = any(name != "None" for name in self.endpoints)
        if secure and (self.certificate is None or self.private_key is None):
            found.append("secure OPC UA endpoints need a server certificate and private key")
        if self.strict and "None" in self.endpoints:
            found.append("strict mode forbids the None endpoint")
        if self.strict and "anonymous" in self.identity_tokens:
            found.append("strict mode forbids anonymous identity tokens")
        if "username" in self.identity_tokens and not self.users:
            found.append("the username identity token needs at least one user")
        if not (0 < self.tick_s <= 10):
            found.append(f"tick_s must be in (0, 10], not {self.tick_s}")
        if not (0 <= self.port <= 65535):
            found.append(f"port {self.port} is out of range 0..65535")
        if self.scale_tags < 0:
            found.append("scale_tags cannot be negative")
        return found


@dataclass(slots=True)
class FaceStats:
    ticks: int = 0
    writes: int = 0
    overruns: int = 0  # ticks that took longer than tick_s
    max_tick_s: float = 0.0
    tick_errors: int = 0


@dataclass(slots=True)
class _Tag:
    spec: SignalSpec
    nodeid: ua.NodeId
    variant_type: ua.VariantType
    written: tuple[Any, ...] | None = None  # (value, changed_at, status, skew) last written


def _utc(epoch: float) -> ua.DateTime:
    # asyncua's DateTime is a datetime subclass for typing only; it encodes any aware one.
    return cast(ua.DateTime, datetime.fromtimestamp(epoch, UTC))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller binds it right away)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class OpcUaFace:
    """Serves a LiveSource over OPC UA. Use `start()`/`stop()` (or `async with`)."""

    def __init__(self, source: LiveSource, config: OpcUaFaceConfig) -> None:
        problems = config.problems()
        if problems:
            raise ValueError("; ".join(problems))
        self._source = source
        self._config = config
        self._specs = [spec for spec in source.signal_specs() if spec.face == "opcua"]
        self._port = config.port
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._tags: dict[tuple[str, str], _Tag] = {}
        self._synthetic: list[ua.NodeId] = []
        self._synthetic_slot: int | None = None
        self._status: dict[tuple[str, str], int] = {}
        self._skew_s: dict[str | None, float] = {}  # device id (None = all) -> seconds
        self._suspended = False
        self._suspended_subs: set[int] = set()
        self.stats = FaceStats()

    # --- lifecycle -----------------------------------------------------------------

    async def __aenter__(self) -> OpcUaFace:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def running(self) -> bool:
        """True while the face accepts connections (false during a fast restart's pause)."""
        return self._server is not None and self._server.bserver is not None

    @property
    def port(self) -> int:
        return self._port

    @property
    def endpoint_url(self) -> str:
        return f"opc.tcp://{self._config.host}:{self._port}"

    @property
    def specs(self) -> list[SignalSpec]:
        return list(self._specs)

    def node_id(self, device_id: str, signal_id: str) -> str:
        """The NodeId string of a signal, e.g. `ns=2;s=Factory/L1/CNC-01/state`."""
        return self._tags[(device_id, signal_id)].nodeid.to_string()

    async def start(self) -> None:
        """Build the address space and listen. Raises OSError if the port is taken."""
        if self._server is not None:
            return
        attempts = 5 if self._port == 0 else 1
        for attempt in range(attempts):
            if self._config.port == 0 and (self._port == 0 or attempt > 0):
                self._port = free_port(self._config.host)
            server = await self._build_server()
            # Values are in place before the first client can connect, never a fake 0.
            await self._write_values(server)
            try:
                await server.start()
            except OSError:
                await quietly_stop(server)
                if attempt == attempts - 1:
                    raise
                continue
            self._server = server
            break
        self._task = asyncio.create_task(self._run(), name="opcua-face-update")

    async def stop(self) -> None:
        """Close every connection and the listener. Idempotent."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._server is not None:
            server, self._server = self._server, None
            abort_clients(server)
            await close_client_sessions(server)
            await quietly_stop(server)
        self._suspended_subs.clear()

    async def restart(self, down_s: float = 0.0, *, fast: bool = False) -> None:
        """Stop, stay down `down_s` seconds, start again on the same port (new sessions).

        `fast` restarts only the network side, as a real server process restart looks to
        a client: every connection is aborted, every session and subscription is closed,
        the listener is closed for `down_s`, then a new listener accepts connections on
        the same port. The address space is kept, so the face is back in milliseconds
        instead of the seconds a full rebuild takes (and the rebuild does not stall the
        event loop the agent under test may share). Values keep being updated meanwhile.
        """
        if not fast or self._server is None:
            await self.stop()
            if down_s > 0:
                await asyncio.sleep(down_s)
            await self.start()
            return
        server = self._server
        await close_listener(server)
        self._suspended_subs.clear()
        try:
            if down_s > 0:
                await asyncio.sleep(down_s)
        finally:
            if self._server is server:  # not stopped meanwhile
                await reopen_listener(server, self._config.host, self._port)

    # --- fault hooks -----------------------------------------------------------------

    def set_status(self, device_id: str, signal_id: str, status: int | None) -> None:
        """Serve `status` (an OPC UA StatusCode value) for one signal; None = Good again.

        A Bad status carries a null value (asyncua follows Part 4 §7.7.1); an Uncertain
        one keeps the value. Raises KeyError for an unknown signal.
        """
        key = (device_id, signal_id)
        if key not in self._tags:
            raise KeyError(f"no OPC UA signal {device_id}/{signal_id}")
        if status is None or status == 0:
            self._status.pop(key, None)
        else:
            self._status[key] = status

    def set_timestamp_skew(self, seconds: float, device_id: str | None = None) -> None:
        """Shift SourceTimestamps by `seconds` (one device, or all when None); 0 clears.

        Takes effect with each signal's next value change, as a skewed device clock would.
        """
        if seconds == 0:
            self._skew_s.pop(device_id, None)
        else:
            self._skew_s[device_id] = seconds

    async def suspend_notifications(self, suspended: bool) -> None:
        """Stop (or resume) every subscription's publishing loop; sessions stay open.

        While suspended the server answers reads but sends no notifications and no
        keep-alives, so a client sees a silent, still-connected server (docs/reliability.md F3).
        """
        self._suspended = suspended
        if suspended:
            await self._enforce_suspension()
            return
        if self._server is None:
            return
        resume_publishing(self._server, self._suspended_subs)
        self._suspended_subs.clear()

    def drop_connections(self) -> int:
        """Abort every client TCP connection (the listener stays up). Returns how many."""
        if self._server is None:
            return 0
        return abort_clients(self._server)

    def clear_faults(self) -> None:
        self._status.clear()
        self._skew_s.clear()

    # --- internals -------------------------------------------------------------------

    async def _enforce_suspension(self) -> None:
        if self._server is None:
            return
        await stop_publishing(self._server, self._suspended_subs)

    async def _build_server(self) -> Server:
        cfg = self._config
        iserver = SimInternalServer(cfg.limits, refuse_unsecured=cfg.strict, users=cfg.users)
        server = Server(iserver=iserver)
        await server.init()
        server.set_endpoint(f"opc.tcp://{cfg.host}:{self._port}")
        server.set_server_name("tieragent simulator")
        server.product_uri = NAMESPACE_URI
        await server.set_application_uri(cfg.application_uri)
        index = await server.register_namespace(NAMESPACE_URI)
        if index != NAMESPACE_INDEX:
            raise RuntimeError(f"namespace {NAMESPACE_URI} got index {index}, expected 2")
        if cfg.certificate is not None and cfg.private_key is not None:
            await server.load_certificate(str(cfg.certificate))
            await server.load_private_key(str(cfg.private_key))
        server.set_security_policy([SECURITY_ENDPOINTS[name] for name in cfg.endpoints])
        server.set_identity_tokens([IDENTITY_TOKENS[name] for name in cfg.identity_tokens])
        await self._populate(server)
        await advertise_operation_limits(server, cfg.limits)
        return server

    async def _populate(self, server: Server) -> None:
        """Create the folders and variables in two bulk AddNodes calls (one per node
        class), which is ~20x faster than node-by-node for thousands of tags."""
        objects: dict[str, ua.AddNodesItem] = {}
        variables: list[ua.AddNodesItem] = []
        self._tags = {}
        paths = [(spec, opcua_path_of(spec)) for spec in self._specs]
        for spec, path in paths:
            parts = path.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in objects:
                    parent = "/".join(parts[: depth - 1]) or None
                    objects[folder] = object_item(folder, parent)
            vtype = variant_type_of(spec)
            nodeid = string_node(path)
            parent_path = "/".join(parts[:-1])
            variables.append(variable_item(nodeid, parts[-1], parent_path, vtype))
            self._tags[(spec.device_id, spec.signal_id)] = _Tag(spec, nodeid, vtype)
        self._synthetic = []
        self._synthetic_slot = None
        if self._config.scale_tags:
            for folder, parent in (("Factory", None), (f"Factory/{SYNTHETIC_LINE}", "Factory")):
                objects.setdefault(folder, object_item(folder, parent))
            for i in range(self._config.scale_tags):
                path = synthetic_path(i)
                folder, name = path.rsplit("/", 1)
                objects.setdefault(folder, object_item(folder, f"Factory/{SYNTHETIC_LINE}"))
                nodeid = string_node(path)
                variables.append(variable_item(nodeid, name, folder, ua.VariantType.Double))
                self._synthetic.append(nodeid)
        for items in (list(objects.values()), variables):
            if not items:
                continue
            results = await server.iserver.isession.add_nodes(items)
            for item, result in zip(items, results, strict=True):
                if not result.StatusCode.is_good():
                    raise RuntimeError(
                        f"cannot add node {item.RequestedNewNodeId}: {result.StatusCode}"
                    )
        for tag in self._tags.values():
            tag.written = None
            if tag.spec.state_names is not None:
                await add_enum_strings(server, tag.nodeid, tag.spec.state_names)

    async def _run(self) -> None:
        tick = self._config.tick_s
        next_at = time.monotonic()
        while True:
            started = time.monotonic()
            try:
                await self._tick()
            except Exception:
                # A bad value must not silence the whole server; it is logged and counted.
                self.stats.tick_errors += 1
                if self.stats.tick_errors <= 3:
                    _log.exception("OPC UA face tick failed.")
            elapsed = time.monotonic() - started
            self.stats.ticks += 1
            self.stats.max_tick_s = max(self.stats.max_tick_s, elapsed)
            next_at += tick
            delay = next_at - time.monotonic()
            if delay < 0:
                self.stats.overruns += 1
                next_at = time.monotonic()  # skip missed ticks instead of bursting
                delay = 0
            await asyncio.sleep(delay)

    async def _tick(self) -> None:
        if self._server is None:
            return
        if self._suspended:
            await self._enforce_suspension()
        await self._write_values(self._server)

    async def _write_values(self, server: Server) -> None:
        now = self._config.clock()
        now_dt = _utc(now)
        values = self._source.values_at(now)
        aspace = server.iserver.aspace
        value_attr = ua.AttributeIds.Value
        writes = 0
        all_skew = self._skew_s.get(None, 0.0)
        for key, tag in self._tags.items():
            current: SignalValue | None = values.get(key)
            if current is None:
                continue
            status = self._status.get(key, 0)
            skew = self._skew_s.get(key[0], all_skew)
            state = (current.value, current.changed_at, status, skew)
            if state == tag.written:
                continue
            datavalue = ua.DataValue(
                Value=ua.Variant(coerce_value(current.value, tag.variant_type), tag.variant_type),
                StatusCode=ua.StatusCode(ua.UInt32(status)),
                SourceTimestamp=_utc(current.changed_at + skew),
                ServerTimestamp=now_dt,
            )
            await aspace.write_attribute_value(tag.nodeid, value_attr, datavalue)
            tag.written = state
            writes += 1
            if writes % 500 == 0:
                await asyncio.sleep(0)  # let client requests through during big ticks
        writes += await self._write_synthetic(server, now, now_dt)
        self.stats.writes += writes

    async def _write_synthetic(self, server: Server, now: float, now_dt: ua.DateTime) -> int:
        """Each synthetic tag changes once per wall-clock second: the tags form one group
        per tick slot, and a late tick also writes the groups of the slots it missed, so
        an overloaded server updates late rather than silently less often."""
        if not self._synthetic:
            return 0
        groups = max(1, round(1.0 / self._config.tick_s))
        slot = math.floor(now * groups)
        first = slot if self._synthetic_slot is None else self._synthetic_slot + 1
        due = range(first, slot + 1)
        if self._synthetic_slot is None or len(due) >= groups:
            due = range(slot - groups + 1, slot + 1)  # first tick, or a full second behind
        self._synthetic_slot = slot
        aspace = server.iserver.aspace
        writes = 0
        for group_slot in due:
            for i in range(group_slot % groups, len(self._synthetic), groups):
                value = round(50.0 + 40.0 * math.sin(now / 60.0 + i), 3)
                datavalue = ua.DataValue(
                    Value=ua.Variant(value, ua.VariantType.Double),
                    SourceTimestamp=now_dt,
                    ServerTimestamp=now_dt,
                )
                await aspace.write_attribute_value(
                    self._synthetic[i], ua.AttributeIds.Value, datavalue
                )
                writes += 1
                if writes % 500 == 0:
                    await asyncio.sleep(0)
        return writes

