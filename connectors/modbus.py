"""Modbus TCP connector: coalesced block reads at each signal's interval, aligned to the clock.

Reconnection is owned here, not by pymodbus. Each connection episode uses a fresh
`AsyncModbusTcpClient` with `retries=0`; after any timeout or protocol error the client is
closed and a new one is opened before the next request, because pymodbus does not tie a
late reply to its request reliably (pymodbus #2709, #538). Every reply is also checked
against the request it answers (transaction id, unit, function code, length), so a stray
or rewritten reply is never decoded as a value.

Coalescing: the signals of one (unit, table) are merged into as few block reads as the
protocol allows (125 registers, 2000 coils or discrete inputs per read), bridging unused
addresses of any length; `max_gap`, when set, caps the bridged stretch instead.

An exception response marks only the signals of that block bad: the block is bisected
until the failing address is isolated, and that signal is read on its own from then on,
so the other signals keep their coalesced reads. When both halves of a failing block read
fine, what fails is the seam (an invalid unused address, or a request size the device
refuses), and reads are split there from then on.

Splits learned from exception 02 (illegal data address) outlive the connector: the caller
passes the ones learned earlier as `learned_splits` and is told the current set through
`on_split` whenever it changes. Where they are kept is the caller's business.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException
from pymodbus.pdu import ModbusPDU

from connectors.backoff import Backoff
from connectors.base import LinkEvent, LinkSink, LinkState, SampleSink, SignalBinding
from connectors.config import ModbusAddress, ModbusConnection, ModbusTable
from connectors.errors import ConnectorUnavailable
from connectors.modbus_codec import (
    BIT_TABLES,
    DecodeError,
    Hole,
    ReadBlock,
    Span,
    decode_value,
    plan_reads,
    slice_for,
    split_block,
)
from connectors.sample import Quality, Sample, TimestampOrigin
from connectors.status import MODBUS_DECODE_ERROR

log = logging.getLogger(__name__)

# Exception codes that can be caused by one address of a block: illegal data address,
# illegal data value, device failure. Others (illegal function, gateway errors) concern
# the whole request, so bisecting would only multiply failing requests.
_BISECT_CODES = frozenset({2, 3, 4})
# Exception 02, illegal data address: the device's map, so a split it causes is kept.
_ILLEGAL_ADDRESS = 2
# The `max_gap` meaning "any gap that fits in one read": a block's size limit decides.
_BRIDGE_ANY_GAP = 65536
# Sample.status for a value that arrived but cannot be decoded (NaN, bad length). Outside
# the one-byte range of Modbus exception codes.
STATUS_DECODE_ERROR = MODBUS_DECODE_ERROR


class _NoReply(Exception):
    """No usable reply to one request: timeout, broken link or a mismatching reply."""


class _LinkLost(Exception):
    """The link failed for longer than the retries allow; the episode ends."""


@dataclass(frozen=True, slots=True)
class _ExceptionReply(Exception):
    code: int


@dataclass
class ModbusStats:
    """Counters for self-monitoring; monotonically increasing for the connector's life."""

    requests: int = 0
    exception_replies: int = 0
    timeouts: int = 0
    mismatched_replies: int = 0
    connects: int = 0
    missed_ticks: int = 0


class _TransactionGuard:
    """Watches one client: the transaction id on the wire (pymodbus `trace_pdu` hook) and
    the loss of its socket (`trace_connect` hook)."""

    def __init__(self) -> None:
        self.sent_tid: int | None = None
        self.lost = False
        self.client: AsyncModbusTcpClient | None = None

    def trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self.sent_tid = pdu.transaction_id
        return pdu

    def trace_connect(self, connected: bool) -> None:
        if not connected:
            # pymodbus has just scheduled its own reconnect; cancel it by closing this
            # client. The connector opens a new one, so reconnection has a single owner.
            self.lost = True
            if self.client is not None:
                asyncio.get_running_loop().call_soon(self.client.close)


class _Link:
    """One open client and the guard watching its transactions."""

    def __init__(self, client: AsyncModbusTcpClient, guard: _TransactionGuard) -> None:
        self.client = client
        self.guard = guard


SplitSink = Callable[[tuple[Hole, ...]], None]


class ModbusConnector:
    """Polls the signals of one Modbus TCP connection and emits `Sample` batches.

    Each distinct `interval_s` of the bindings forms a poll group, polled at wall-clock
    multiples of its interval (a 1 s group at every whole second). One batch per group and
    poll is awaited on the sink. Construction validates the addresses and raises ValueError
    (or PlanError) for a configuration that cannot be read; it does no I/O.

    `learned_splits` are splits an earlier run learned from exception 02 (as passed to
    `on_split`): a hole that is exactly one signal's addresses marks that signal as read
    alone, any other hole is never bridged. `on_split` receives every such split known
    now, sorted, each time the set changes; it runs on the event loop and should be quick.
    """

    def __init__(
        self,
        name: str,
        connection: ModbusConnection,
        bindings: Sequence[SignalBinding],
        *,
        clock: Callable[[], float] = time.time,
        learned_splits: Iterable[Hole] = (),
        on_split: SplitSink | None = None,
    ) -> None:
        self.name = name
        self.stats = ModbusStats()
        self._conn = connection
        self._clock = clock
        self._bindings = tuple(bindings)
        self._addresses: list[ModbusAddress] = []
        self._spans: list[Span] = []
        groups: dict[float, list[int]] = defaultdict(list)
        for key, binding in enumerate(self._bindings):
            where = f"{binding.device_id}/{binding.signal_id}"
            if binding.modbus is None:
                raise ValueError(f"signal {where} has no Modbus address")
            if binding.unit_id is None:
                raise ValueError(f"signal {where} has no Modbus unit id")
            address = binding.modbus
            self._addresses.append(address)
            self._spans.append(
                Span(key, binding.unit_id, address.table, address.address, address.width)
            )
            groups[binding.interval_s].append(key)
        self._groups = dict(groups)
        self._max_gap = _BRIDGE_ANY_GAP if connection.max_gap is None else connection.max_gap
        self._known_bad: set[int] = set()
        self._barriers: set[Hole] = set()
        # Splits learned from exception 02: the set handed to `on_split`.
        self._learned: set[Hole] = set()
        self._on_split = on_split
        self._adopt(learned_splits)
        self._plans: dict[float, list[ReadBlock]] = {}
        for interval in self._groups:
            self._plans[interval] = self._plan(interval)  # raises PlanError early
        self._link: _Link | None = None
        self._state: LinkState | None = None
        self._reason = ""

    # --- public -------------------------------------------------------------------------

    def plan(self, interval_s: float) -> list[ReadBlock]:
        """The read requests one poll of the `interval_s` group sends now."""
        return list(self._plans[interval_s])

    async def run(self, samples: SampleSink, links: LinkSink) -> None:
        """Poll until cancelled; link failures end an episode, back off, and start another."""
        backoff = Backoff(self._conn.reconnect_min_s, self._conn.reconnect_max_s)
        try:
            while True:
                self._emit(links, LinkState.CONNECTING)
                try:
                    await self._reopen()
                    self._emit(links, LinkState.CONNECTED)
                    await self._poll_forever(samples, backoff)
                except (_LinkLost, ConnectorUnavailable) as exc:
                    reason = str(exc)
                    log.warning("Modbus link %s lost: %s", self.name, reason)
                    self._emit(links, LinkState.DISCONNECTED, reason)
                self._close()
                await asyncio.sleep(backoff.next_delay())
        finally:
            self._close()

    # --- planning -------------------------------------------------------------------------

    def _plan(self, interval: float) -> list[ReadBlock]:
        keys = self._groups[interval]
        healthy = [self._spans[k] for k in keys if k not in self._known_bad]
        holes = [*self._barriers]
        for key in self._known_bad:
            span = self._spans[key]
            holes.append(Hole(span.unit, span.table, span.address, span.end))
        blocks = plan_reads(
            healthy,
            max_registers=self._conn.max_registers_per_read,
            max_bits=self._conn.max_bits_per_read,
            max_gap=self._max_gap,
            avoid=holes,
        )
        for key in keys:
            if key in self._known_bad:
                blocks.extend(
                    plan_reads(
                        [self._spans[key]],
                        max_registers=self._conn.max_registers_per_read,
                        max_bits=self._conn.max_bits_per_read,
                        max_gap=0,
                    )
                )
        return blocks

    def _adopt(self, learned: Iterable[Hole]) -> None:
        """Apply splits learned by an earlier run, before the first plan."""
        own: dict[Hole, list[int]] = defaultdict(list)
        for key in range(len(self._spans)):
            own[self._own_hole(key)].append(key)
        for hole in learned:
            if hole.end < hole.start:
                continue
            self._learned.add(hole)
            if hole in own:
                self._known_bad.update(own[hole])
            else:
                self._barriers.add(hole)

    def _own_hole(self, key: int) -> Hole:
        span = self._spans[key]
        return Hole(span.unit, span.table, span.address, span.end)

    def _mark(self, key: int, bad: bool, code: int = 0) -> None:
        """Track signals whose own address fails; they are read alone so others coalesce."""
        if bad and code == _ILLEGAL_ADDRESS:
            self._learn(self._own_hole(key))
        elif not bad and key in self._known_bad:
            self._forget(self._own_hole(key))
        if bad == (key in self._known_bad):
            return
        if bad:
            self._known_bad.add(key)
        else:
            self._known_bad.discard(key)
        self._replan()

    def _add_barrier(self, hole: Hole, code: int) -> None:
        """Never again bridge these addresses: reading across them fails."""
        if hole.end < hole.start:
            return
        if code == _ILLEGAL_ADDRESS:
            self._learn(hole)
        if hole not in self._barriers:
            log.info(
                "Modbus %s: reads across %s %d..%d of unit %d fail (exception %d); "
                "splitting there.",
                self.name,
                hole.table.value,
                hole.start,
                hole.end,
                hole.unit,
                code,
            )
            self._barriers.add(hole)
            self._replan()

    def _learn(self, hole: Hole) -> None:
        if hole not in self._learned:
            self._learned.add(hole)
            self._tell()

    def _forget(self, hole: Hole) -> None:
        if hole in self._learned:
            self._learned.discard(hole)
            self._tell()

    def _tell(self) -> None:
        if self._on_split is not None:
            self._on_split(
                tuple(sorted(self._learned, key=lambda h: (h.unit, h.table.value, h.start, h.end)))
            )

    def _replan(self) -> None:
        for interval in self._groups:
            self._plans[interval] = self._plan(interval)

    # --- polling --------------------------------------------------------------------------

    async def _poll_forever(self, samples: SampleSink, backoff: Backoff) -> None:
        # The first poll of every group happens at once, so data flows right after a
        # (re)connect; later polls fall on wall-clock multiples of the interval.
        next_due = dict.fromkeys(self._groups, 0.0)
        while True:
            now = self._clock()
            due = [interval for interval, at in next_due.items() if at <= now]
            if not due:
                await asyncio.sleep(min(next_due.values()) - now)
                continue
            for interval in due:
                due_at = next_due[interval]
                batch = await self._poll(interval)
                backoff.reset()
                await samples(batch)
                after = self._clock()
                if due_at:
                    self.stats.missed_ticks += max(0, math.floor((after - due_at) / interval))
                next_due[interval] = (math.floor(after / interval) + 1) * interval

    async def _poll(self, interval: float) -> list[Sample]:
        out: dict[int, Sample] = {}
        for block in list(self._plans[interval]):
            await self._read_into(block, out)
        return [out[key] for key in self._groups[interval] if key in out]

    async def _read_into(self, block: ReadBlock, out: dict[int, Sample]) -> bool:
        """Read `block` into `out`; False if some part got an exception response."""
        try:
            data = await self._request(block)
        except _ExceptionReply as exc:
            if exc.code in _BISECT_CODES and len(block.members) > 1:
                left, right = split_block(block)
                left_ok = await self._read_into(left, out)
                right_ok = await self._read_into(right, out)
                if left_ok and right_ok:
                    # Both halves read fine, so what fails is reading across the seam:
                    # an invalid gap address, or a device limit on the request size.
                    self._add_barrier(
                        Hole(block.unit, block.table, left.start + left.count, right.start),
                        exc.code,
                    )
                return False
            if exc.code in _BISECT_CODES:
                self._mark(block.members[0].key, bad=True, code=exc.code)
            now = self._clock()
            for span in block.members:
                out[span.key] = self._sample(span.key, None, Quality.BAD, now, exc.code)
            return False
        now = self._clock()
        for span in block.members:
            if len(block.members) == 1:
                self._mark(span.key, bad=False)
            try:
                value = decode_value(self._addresses[span.key], slice_for(block, span, data))
            except DecodeError as exc:
                log.debug("Modbus value of %s undecodable: %s", self._where(span.key), exc)
                out[span.key] = self._sample(span.key, None, Quality.BAD, now, STATUS_DECODE_ERROR)
                continue
            out[span.key] = self._sample(span.key, value, Quality.GOOD, now, 0)
        return True

    def _sample(self, key: int, value: Any, quality: Quality, now: float, status: int) -> Sample:
        binding = self._bindings[key]
        # Positional: this runs for every register of every poll.
        return Sample(binding.device_id, binding.signal_id, value, quality, now, now, status,
                      TimestampOrigin.RECEIVED)

    def _where(self, key: int) -> str:
        binding = self._bindings[key]
        return f"{binding.device_id}/{binding.signal_id}"

    # --- requests -------------------------------------------------------------------------

    async def _request(self, block: ReadBlock) -> list[int]:
        """Registers (or bits as 0/1) of `block`; retries on a fresh connection each time.

        Raises _ExceptionReply for an exception response and _LinkLost once the retries
        are spent (or ConnectorUnavailable when a new connection cannot be opened).
        """
        failure = ""
        for _attempt in range(self._conn.retries + 1):
            if self._link is None or self._link.guard.lost:
                await self._reopen()
            assert self._link is not None
            try:
                return await self._request_once(self._link, block)
            except _NoReply as exc:
                failure = str(exc)
                # Never send another request on a socket that may still deliver the
                # late reply to this one.
                self._close()
        raise _LinkLost(failure)

    async def _request_once(self, link: _Link, block: ReadBlock) -> list[int]:
        client = link.client
        read = {
            ModbusTable.COIL: client.read_coils,
            ModbusTable.DISCRETE_INPUT: client.read_discrete_inputs,
            ModbusTable.HOLDING: client.read_holding_registers,
            ModbusTable.INPUT: client.read_input_registers,
        }[block.table]
        what = f"{block.table.value} {block.start}+{block.count} of unit {block.unit}"
        link.guard.sent_tid = None
        self.stats.requests += 1
        try:
            response = await asyncio.wait_for(
                read(block.start, count=block.count, device_id=block.unit), self._conn.timeout_s
            )
        except TimeoutError:
            self.stats.timeouts += 1
            raise _NoReply(
                f"no reply within {self._conn.timeout_s} s to a read of {what}"
            ) from None
        except ModbusException as exc:
            self.stats.timeouts += 1
            raise _NoReply(f"read of {what} failed: {exc}") from None
        if response.transaction_id != link.guard.sent_tid or response.dev_id != block.unit:
            self.stats.mismatched_replies += 1
            raise _NoReply(
                f"reply (transaction {response.transaction_id}, unit {response.dev_id}) does not "
                f"answer the read of {what} (transaction {link.guard.sent_tid})"
            )
        if response.isError():
            self.stats.exception_replies += 1
            raise _ExceptionReply(int(getattr(response, "exception_code", 0)))
        if response.function_code != block.function_code:
            self.stats.mismatched_replies += 1
            raise _NoReply(f"reply function {response.function_code} does not answer {what}")
        data = response.bits if block.table in BIT_TABLES else response.registers
        short = len(data) < block.count if block.table in BIT_TABLES else len(data) != block.count
        if short:
            self.stats.mismatched_replies += 1
            raise _NoReply(f"reply holds {len(data)} values for the read of {what}")
        return [int(value) for value in data[: block.count]]

    # --- connection -----------------------------------------------------------------------

    async def _reopen(self) -> None:
        self._close()
        guard = _TransactionGuard()
        client = AsyncModbusTcpClient(
            self._conn.host,
            port=self._conn.port,
            timeout=self._conn.timeout_s,
            retries=0,
            # pymodbus' own reconnect never gets to run: the link is closed on any failure
            # and reopened here. A zero delay would make it busy-loop (pymodbus #1794).
            reconnect_delay=self._conn.reconnect_min_s,
            reconnect_delay_max=self._conn.reconnect_max_s,
            trace_pdu=guard.trace_pdu,
            trace_connect=guard.trace_connect,
        )
        guard.client = client
        self.stats.connects += 1
        try:
            connected = await asyncio.wait_for(client.connect(), self._conn.timeout_s + 1.0)
        except (TimeoutError, OSError, ModbusException):
            connected = False
        if not connected or not client.connected:
            client.close()
            raise ConnectorUnavailable(
                f"Cannot connect to the Modbus server at {self._conn.host}:{self._conn.port}."
            )
        self._link = _Link(client, guard)

    def _close(self) -> None:
        if self._link is not None:
            self._link.client.close()
            self._link = None

    def _emit(self, links: LinkSink, state: LinkState, reason: str = "") -> None:
        """Report changes only: retries with the same failure stay silent."""
        if state == LinkState.CONNECTING and self._state is not None:
            return
        if (state, reason) == (self._state, self._reason):
            return
        self._state, self._reason = state, reason
        links(LinkEvent(state=state, ts=self._clock(), reason=reason))
