"""The agent's asyncio runtime: supervised connectors -> bounded channel -> store writer.

* One task per connection, supervised: if a connector crashes it is restarted with capped,
  jittered exponential backoff; one failing device never stops the others. Connectors
  own their reconnection; the supervisor only catches what escapes them.
* A bounded channel between connectors and the writer. A connector's `await sink(batch)`
  returns once the batch is queued (not yet durable) and blocks while the channel is full:
  that is the backpressure. Link events are never blocked or dropped (they are rare).
* One writer task: it takes what is queued (up to `BATCH_MAX` items) and commits it with
  `Store.ingest` in a worker thread, at most once per `COMMIT_INTERVAL_S` unless a full
  batch is waiting: group commit, so each commit's fixed cost (fsync, per-device
  derivation state) is shared by more samples. A sample is acknowledged once that commit
  returns, so within about half a second of arriving. If the store falls behind, the
  queue depth and store lag metrics show it and a warning is logged (at most every 10 s).
* Between commits, at most every `agent.store.quota.CHECK_EVERY_S`, the writer checks the
  raw-sample disk quota (metrics, log, /healthz; the policy at the limit is in that module).
* Stop (SIGTERM / SIGINT / duration): connectors are cancelled, the channel is flushed
  into the store, the store is closed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.config import FactoryConfig
from agent.health import HealthInputs, LinkView, assess, writer_keeping_up
from agent.metrics import AgentMetrics
from agent.signal_health import SignalHealth
from agent.store import IngestItem, LinkItem, Store, StoreError
from agent.store.losses import DISK_FULL
from agent.store.quota import QuotaReading
from connectors.backoff import Backoff
from connectors.base import Connector, LinkEvent, LinkState, SignalBinding
from connectors.sample import Sample

log = logging.getLogger("tieragent.runtime")

BATCH_MAX = 5000
FLUSH_INTERVAL_S = 0.2
COMMIT_INTERVAL_S = 0.5
LAG_WARNING_S = 5.0
PURGE_EVERY_S = 3600.0


class Mirror(Protocol):
    def offer(self, samples: Sequence[Sample]) -> None: ...


class Channel:
    """Bounded FIFO of samples and link events; `put_samples` waits while full.

    Kept as whole batches (one entry per `put_samples`), not one entry per sample: the
    channel is on the path of every sample.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # (queued at, items, are they samples); a link event is an entry of its own.
        self._entries: collections.deque[tuple[float, list[IngestItem], bool]] = (
            collections.deque()
        )
        self._samples = 0
        self._length = 0
        self._changed = asyncio.Condition()

    def __len__(self) -> int:
        return self._length

    def full(self) -> bool:
        """True while `put_samples` would wait (connectors are blocked)."""
        return self._samples >= self.capacity

    async def put_samples(self, batch: Sequence[Sample]) -> None:
        async with self._changed:
            await self._changed.wait_for(lambda: self._samples < self.capacity)
            self._entries.append((time.monotonic(), list(batch), True))
            self._samples += len(batch)
            self._length += len(batch)
            self._changed.notify_all()

    def put_link(self, item: LinkItem) -> None:
        self._entries.append((time.monotonic(), [item], False))
        self._length += 1
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def take(self, limit: int, timeout: float) -> tuple[list[IngestItem], float]:
        """Up to `limit` items (waiting at most `timeout`) and the oldest one's queue time."""
        async with self._changed:
            if not self._entries:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(lambda: bool(self._entries)), timeout
                    )
            items: list[IngestItem] = []
            oldest = self._entries[0][0] if self._entries else time.monotonic()
            while self._entries and len(items) < limit:
                queued, chunk, samples = self._entries[0]
                room = limit - len(items)
                if len(chunk) > room:
                    self._entries[0] = (queued, chunk[room:], samples)
                    chunk = chunk[:room]
                else:
                    self._entries.popleft()
                items.extend(chunk)
                self._length -= len(chunk)
                if samples:
                    self._samples -= len(chunk)
            self._changed.notify_all()
            return items, oldest


@dataclass
class RuntimeState:
    writer_alive: bool = False
    last_commit_mono: float = field(default_factory=time.monotonic)
    lag_s: float = 0.0
    stopping: bool = False
    # For /healthz: each connection's link, and the samples the store could not commit.
    links: dict[str, LinkView] = field(default_factory=dict)
    dropped: int = 0
    last_drop_mono: float | None = None
    drop_reason: str | None = None
    raw_quota: QuotaReading | None = None  # the last raw-sample quota check


def bindings_by_connection(config: FactoryConfig) -> dict[str, list[SignalBinding]]:
    out: dict[str, list[SignalBinding]] = {}
    for device in config.devices:
        if device.connection == "none":
            continue
        for signal in device.signals:
            out.setdefault(device.connection, []).append(SignalBinding(
                device_id=device.id, signal_id=signal.id, interval_s=config.interval_of(signal),
                opcua=signal.opcua, modbus=signal.modbus, unit_id=device.unit_id,
            ))
    return out


def build_connectors(
    config: FactoryConfig, *, splits_file: Path | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Connector]:
    """One connector per used connection (imports the protocol modules lazily).

    `splits_file`: where Modbus connectors keep the read splits devices taught them
    (`agent.modbus_splits`); None keeps them in memory only.
    """
    connectors: dict[str, Connector] = {}
    splits = None
    for name, bindings in bindings_by_connection(config).items():
        connection = config.connections[name]
        factory: Any
        extra: dict[str, Any] = {}
        if connection.protocol == "opcua":
            from connectors.opcua import OpcUaConnector

            factory = OpcUaConnector
        else:
            from connectors.modbus import ModbusConnector

            factory = ModbusConnector
            if splits_file is not None:
                from agent.modbus_splits import SplitFile

                splits = splits or SplitFile(splits_file)
                extra = {"learned_splits": splits.load(name, connection),
                         "on_split": splits.recorder(name, connection)}
        connectors[name] = factory(name=name, connection=connection, bindings=bindings,
                                   clock=clock, **extra)
    return connectors


class Runtime:
    def __init__(
        self, config: FactoryConfig, store: Store, connectors: Mapping[str, Connector],
        metrics: AgentMetrics, *, mirror: Mirror | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.connectors = dict(connectors)
        self.metrics = metrics
        self.mirror = mirror
        self.clock = clock
        self.channel = Channel(config.collection.queue_size)
        self.state = RuntimeState()
        metrics.queue_capacity.set(self.channel.capacity)
        self.signal_health = SignalHealth(metrics.registry)
        self._last_lag_warning = 0.0
        started = clock()
        for name in self.connectors:  # down (never connected) until the first CONNECTED
            self.state.links[name] = LinkView(False, started, time.monotonic())

    def health(self) -> dict[str, Any]:
        """For /healthz (`agent.health.assess`): "ok", or "degraded" with its reasons; the
        signals with an active problem are listed, not a reason to restart or page."""
        body = assess(HealthInputs(
            now_mono=time.monotonic(), links=dict(self.state.links),
            down_limit_s=self.config.collection.health_connection_down_s,
            writer_alive=self.state.writer_alive, lag_s=self.state.lag_s,
            queue_depth=len(self.channel), channel_full=self.channel.full(),
            dropped_total=self.state.dropped, last_drop_mono=self.state.last_drop_mono,
            drop_reason=self.state.drop_reason, raw_quota=self.state.raw_quota,
        ))
        body["signal_problems"] = [
            {"device": key.device_id, "signal": key.signal_id, "cause": key.cause,
             "detail": detail}
            for key, detail in self.signal_health.active_problems()
        ]
        return body

    def writer_keeping_up(self) -> bool:
        """For the systemd watchdog: a down connection is no reason to restart the agent."""
        return writer_keeping_up(self.state.writer_alive, self.state.lag_s)

    def _link_changed(self, name: str, up: bool, reason: str = "") -> None:
        """The one log line per loss and per recovery of a connection."""
        link = self.state.links.get(name)
        if link is not None and link.up == up:
            return
        now_mono = time.monotonic()
        fields: dict[str, Any] = {"connection": name}
        if up:
            if link is not None and link.ever_up:
                fields["down_s"] = round(now_mono - link.since_mono, 1)
                log.info("Connection recovered.", extra={"fields": fields})
            else:
                log.info("Connection up.", extra={"fields": fields})
        else:
            fields["reason"] = reason
            log.warning("Connection lost.", extra={"fields": fields})
        ever_up = up or (link is not None and link.ever_up)
        self.state.links[name] = LinkView(up, self.clock(), now_mono, ever_up)

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then flush and return (the caller closes the store)."""
        await asyncio.to_thread(self.store.resume, self.clock())
        writer = asyncio.create_task(self._writer(stop), name="store-writer")
        supervisors = [
            asyncio.create_task(self._supervise(name, connector), name=f"connector-{name}")
            for name, connector in self.connectors.items()
        ]
        log.info("Agent running.", extra={"fields": {
            "connections": sorted(self.connectors), "db": str(self.store.path)}})
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait([stopper, writer], return_when=asyncio.FIRST_COMPLETED)
        self.state.stopping = True
        for task in supervisors:
            task.cancel()
        await asyncio.wait(supervisors, timeout=3.0)
        stop.set()
        await writer  # drains the channel, then returns
        log.info("Agent stopped; store flushed.", extra={"fields": {"db": str(self.store.path)}})

    async def _supervise(self, name: str, connector: Connector) -> None:
        connection = self.config.connections[name]
        backoff = Backoff(connection.reconnect_min_s, connection.reconnect_max_s)

        async def sink(batch: Sequence[Sample]) -> None:
            await self.channel.put_samples(batch)
            self.metrics.queue_depth.set(len(self.channel))

        def links(event: LinkEvent) -> None:
            up = event.state == LinkState.CONNECTED
            self.metrics.connection_up.labels(name).set(1 if up else 0)
            if event.state == LinkState.DISCONNECTED:
                self.metrics.reconnects.labels(name).inc()
                self._link_changed(name, False, event.reason or "")
            elif up:
                self._link_changed(name, True)
            self.channel.put_link(LinkItem(name, event))

        while True:
            started = time.monotonic()
            try:
                await connector.run(sink, links)
                log.warning("Connector returned; restarting it.",
                            extra={"fields": {"connection": name}})
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if self.state.stopping or (task is not None and task.cancelling()):
                    raise
                # A cancellation the connector let out (an asyncua future cancelled inside
                # the library) while nobody cancelled this task: re-raising it ended the
                # supervision and left the connection dead until the agent restarted.
                log.error("Connector cancelled from inside; restarting it.", exc_info=exc,
                          extra={"fields": {"connection": name}})
            except Exception as exc:  # the one broad catch: a crash must not stop others
                log.error("Connector crashed; restarting it.", exc_info=exc,
                          extra={"fields": {"connection": name, "error": repr(exc)}})
            self.metrics.connector_restarts.labels(name).inc()
            self.metrics.connection_up.labels(name).set(0)
            self._link_changed(name, False, "connector restarted")
            self.channel.put_link(LinkItem(name, LinkEvent(
                LinkState.DISCONNECTED, self.clock(), "connector restarted")))
            if time.monotonic() - started > 60.0:
                backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _writer(self, stop: asyncio.Event) -> None:
        self.state.writer_alive = True
        next_purge = time.monotonic()
        try:
            while True:
                items, oldest = await self.channel.take(BATCH_MAX, FLUSH_INTERVAL_S)
                started = time.monotonic()
                await self._commit(items, oldest)
                if self.store.quota.due():
                    await self._check_quota()
                if stop.is_set() and not len(self.channel):
                    break
                rest = COMMIT_INTERVAL_S - (time.monotonic() - started)
                if rest > 0 and len(self.channel) < BATCH_MAX and not stop.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), rest)
                if time.monotonic() >= next_purge:
                    next_purge = time.monotonic() + PURGE_EVERY_S
                    try:
                        deleted = await asyncio.to_thread(self.store.purge_raw, self.clock())
                    except StoreError as error:  # a full disk: not a reason to stop writing
                        deleted = 0
                        log.warning("Purging old raw samples failed; trying again in an hour.",
                                    extra={"fields": {"error": str(error)}})
                    if deleted:
                        log.info("Old raw samples purged.", extra={"fields": {"rows": deleted}})
        finally:
            self.state.writer_alive = False

    async def _check_quota(self) -> None:
        reading = await asyncio.to_thread(self.store.quota.check, self.clock())
        self.state.raw_quota = reading
        self.metrics.raw_bytes.set(reading.raw_bytes)
        self.metrics.raw_quota_bytes.set(reading.quota_bytes)
        self.metrics.raw_quota_level.set(reading.level)

    async def _commit(self, items: list[IngestItem], oldest: float) -> None:
        # The state advances to now minus the realtime bound, so slightly late samples
        # still land in order instead of being clamped.
        advance_to = self.clock() - self.config.collection.realtime_bound_s
        started = time.monotonic()
        result = await asyncio.to_thread(self.store.ingest, items, advance_to)
        done = time.monotonic()
        self.metrics.commit_seconds.observe(done - started)
        lag = done - oldest if items else 0.0
        self.state.lag_s = lag
        self.metrics.store_lag.set(lag)
        self.metrics.queue_depth.set(len(self.channel))
        if result.error is None:
            self.state.last_commit_mono = done
            self.metrics.last_commit.set(self.clock())
        else:
            reason = result.reason or DISK_FULL
            self.metrics.samples_dropped.labels(reason).inc(result.dropped)
            if result.dropped:
                self.state.dropped += result.dropped
                self.state.last_drop_mono = done
                self.state.drop_reason = reason
        self.signal_health.update(result.signal_issues)
        for device, count in result.stored_by_device.items():
            self.metrics.samples.labels(device).inc(count)
        for device, count in result.bad_by_device.items():
            self.metrics.samples_bad.labels(device).inc(count)
        for device, count in result.skewed_by_device.items():
            self.metrics.samples_skewed.labels(device).inc(count)
        for device, skew in result.worst_skew_by_device.items():
            self.metrics.source_skew.labels(device).set(skew)
        if lag > LAG_WARNING_S and done - self._last_lag_warning > 10.0:
            self._last_lag_warning = done
            log.warning("Store is falling behind the connectors.", extra={"fields": {
                "lag_s": round(lag, 2), "queue_depth": len(self.channel)}})
        if self.mirror is not None and result.error is None:
            self.mirror.offer([i for i in items if isinstance(i, Sample)])
