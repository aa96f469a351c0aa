"""OPC UA connector: one subscription (or polling) per server, batched to its limits.

Reconnection is owned here; asyncua's `auto_reconnect` stays off. After any loss the
Client object is thrown away and a new one is created (asyncua #1660: a reused client can
hang), node ids are resolved again (namespace URIs may map to new indexes after a server
restart), the subscription and its monitored items are created again, and current values
are read once so every signal has a fresh sample (marked `held`: its source timestamp is when
the value last changed, which may be long ago); the subscription's first notification of a
monitored item repeats that value and is dropped when it is the very same DataValue, so each
value is stored once. Losses are detected by asyncua's
connection watchdog (probe every second) and by our liveness check: no data nor keepalive
for `publishing_interval x keepalive_count x 2` ends the session. What happens between
sessions (the reason, the delay, what is logged, the wait after a refusal) is decided by
`connectors.opcua_reconnect`.

The subscription's notifications only enter a bounded inbox (drops are counted, oldest
first); conversion and the awaited sink run in the connector's own loop, never in a
notification handler (asyncua #1252).

`mode: poll`, or a server that refuses subscriptions, reads all nodes every
`poll_interval_s` at wall-clock multiples instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace

from asyncua import Client, ua
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    SubEvent,
    Subscription,
)

from connectors.backoff import ReconnectSchedule
from connectors.base import LinkEvent, LinkSink, LinkState, SampleSink, SignalBinding
from connectors.config import OpcUaConnection
from connectors.errors import ConnectorUnavailable
from connectors.opcua_reconnect import ReconnectPolicy
from connectors.opcua_session import (
    BatchedSession,
    close_client,
    describe,
    open_client,
    read_operation_limits,
    refusal_inputs,
    reraise_cancellation,
)
from connectors.opcua_values import bad_sample, parse_node, resolve_node, to_sample
from connectors.sample import Quality, Sample

log = logging.getLogger(__name__)

# CreateSubscription answers that mean "this server does not do subscriptions": poll.
_NO_SUBSCRIPTIONS = frozenset(
    {
        ua.StatusCodes.BadServiceUnsupported,
        ua.StatusCodes.BadTooManySubscriptions,
        ua.StatusCodes.BadNotSupported,
        ua.StatusCodes.BadNotImplemented,
    }
)
# Monitored-item answers that mean "no deadband on this node": subscribe it without filter.
_FILTER_REFUSED = frozenset(
    {
        ua.StatusCodes.BadFilterNotAllowed,
        ua.StatusCodes.BadMonitoredItemFilterUnsupported,
        ua.StatusCodes.BadMonitoredItemFilterInvalid,
        ua.StatusCodes.BadDeadbandFilterInvalid,
    }
)
_INBOX_MIN = 10_000
_WAIT_STEP_S = 0.25


@dataclass
class OpcUaStats:
    """Counters for self-monitoring; they only grow during the connector's life."""

    sessions: int = 0
    notifications: int = 0
    dropped_notifications: int = 0
    polls: int = 0
    subscription_refusals: int = 0
    failed_attempts: int = 0  # lost sessions and failed connection attempts
    refusals: int = 0  # attempts refused for a cause only an operator can fix


class _Inbox:
    """Bounded buffer between the subscription and the connector loop; drops oldest."""

    def __init__(self, capacity: int, stats: OpcUaStats) -> None:
        self._items: deque[SubEvent] = deque()
        self._capacity = capacity
        self._ready = asyncio.Event()
        self._stats = stats

    def put(self, event: SubEvent) -> None:
        if len(self._items) >= self._capacity:
            self._items.popleft()
            self._stats.dropped_notifications += 1
        self._items.append(event)
        self._ready.set()

    async def take(self, timeout: float) -> list[SubEvent]:
        if not self._items:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), timeout)
        items = list(self._items)
        self._items.clear()
        self._ready.clear()
        return items


class OpcUaConnector:
    """Collects the signals of one OPC UA server and emits `Sample` batches.

    Construction parses every node id and raises ValueError for a malformed one; it does
    no I/O. `mode_in_use` tells whether the current session subscribes or polls.
    """

    def __init__(
        self,
        name: str,
        connection: OpcUaConnection,
        bindings: Sequence[SignalBinding],
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """`monotonic` and `sleep` drive the reconnect schedule (injectable for tests)."""
        self.name = name
        self.stats = OpcUaStats()
        # The reconnect policy (docs/reliability.md b.4): `reconnect` is its schedule,
        # `retry_delays` keeps the latest delays.
        self._policy = ReconnectPolicy(name, connection, monotonic=monotonic, sleep=sleep)
        self.reconnect = self._policy.schedule
        self.retry_delays = self._policy.delays
        self.mode_in_use: str | None = None
        self._conn = connection
        self._clock = clock
        self._bindings = tuple(bindings)
        self._nodes: list[ua.NodeId] = []
        for binding in self._bindings:
            if binding.opcua is None:
                raise ValueError(f"signal {binding.device_id}/{binding.signal_id} has no node")
            self._nodes.append(parse_node(binding.opcua.node))
        self._state: LinkState | None = None
        self._reason = ""
        # Per session: what the read after subscribing gave (value, status, timestamp,
        # origin) until the item's first notification, and each polled node's last timestamp.
        self._first_read: dict[int, tuple[object, ...]] = {}
        self._polled_ts: dict[int, float] = {}

    async def run(self, samples: SampleSink, links: LinkSink) -> None:
        """Collect until cancelled; a lost or refused link backs off and starts again.

        Every failure of a session, whatever asyncua raised, ends in the reconnect loop
        here: nothing but a cancellation of this task leaves it (an escaping error would
        put the connection in the runtime's slower restart backoff).
        """
        while True:
            self._emit(links, LinkState.CONNECTING)
            inputs = refusal_inputs(self._conn)
            refused = False
            try:
                await self._session(samples, links, self.reconnect)
                reason = "The session ended."
            except asyncio.CancelledError as exc:
                if _cancelling():
                    raise
                reason, refused = self._policy.reason(exc)
            except Exception as exc:
                reason, refused = self._policy.reason(exc)
            reraise_cancellation()
            delay = self._policy.failed(reason, refused)
            self.stats.failed_attempts += 1
            self.stats.refusals += refused
            self._emit(links, LinkState.DISCONNECTED, reason)
            await self._policy.pause(delay, inputs if refused else None)

    # --- one session ----------------------------------------------------------------------

    async def _session(
        self, samples: SampleSink, links: LinkSink, backoff: ReconnectSchedule
    ) -> None:
        lost: list[str] = []
        lost_event = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            lost.append(describe(exc))
            lost_event.set()

        client = await open_client(self._conn, on_lost)
        self.stats.sessions += 1
        self._first_read.clear()
        self._polled_ts.clear()
        try:
            session = BatchedSession(client, await read_operation_limits(client))
            targets, unknown = await self._resolve(client)
            self._emit(links, LinkState.CONNECTED)
            if unknown:
                await samples(unknown)
            watch = _LinkWatch(self._conn.endpoint, lost, lost_event)
            if self._conn.mode == "poll":
                await self._poll(session, targets, samples, watch, backoff)
                return
            try:
                subscription = await self._subscribe(client, session, targets, samples)
            except ua.UaStatusCodeError as exc:
                if exc.code not in _NO_SUBSCRIPTIONS:
                    raise
                self.stats.subscription_refusals += 1
                log.warning(
                    "OPC UA %s refuses subscriptions (%s); polling every %s s instead.",
                    self._conn.endpoint,
                    describe(exc),
                    self._conn.poll_interval_s,
                )
                await self._poll(session, targets, samples, watch, backoff)
                return
            reraise_cancellation()
            backoff.reset()  # subscribed and read: data flows again
            await self._stream(subscription, samples, watch, backoff)
        finally:
            self.mode_in_use = None
            await close_client(client, self._conn.request_timeout_s)

    async def _resolve(self, client: Client) -> tuple[dict[int, ua.NodeId], list[Sample]]:
        needs_uris = any(getattr(node, "NamespaceUri", None) for node in self._nodes)
        namespaces = await client.get_namespace_array() if needs_uris else []
        targets: dict[int, ua.NodeId] = {}
        unknown: list[Sample] = []
        now = self._clock()
        for key, node in enumerate(self._nodes):
            resolved = resolve_node(node, namespaces)
            if resolved is None:
                log.warning("OPC UA %s: no namespace for %s.", self.name, self._bindings[key])
                unknown.append(
                    bad_sample(self._bindings[key], ua.StatusCodes.BadNodeIdUnknown, now)
                )
            else:
                targets[key] = resolved
        return targets, unknown

    # --- polling --------------------------------------------------------------------------

    async def _poll(
        self,
        session: BatchedSession,
        targets: dict[int, ua.NodeId],
        samples: SampleSink,
        watch: _LinkWatch,
        backoff: ReconnectSchedule,
    ) -> None:
        self.mode_in_use = "poll"
        keys = list(targets)
        interval = self._conn.poll_interval_s
        while True:
            watch.check()
            await self._read_all(session, keys, targets, samples, first=False)
            self.stats.polls += 1
            backoff.reset()
            now = self._clock()
            await watch.sleep((math.floor(now / interval) + 1) * interval - now)

    async def _read_all(
        self,
        session: BatchedSession,
        keys: list[int],
        targets: dict[int, ua.NodeId],
        samples: SampleSink,
        *,
        first: bool,
    ) -> None:
        """Read the current values. `first`: the read after subscribing, whose samples are
        all held values; a poll's sample is held when it is the node's first in this session
        or its timestamp has not moved since the previous poll (the value did not change)."""
        values = await session.read([targets[key] for key in keys])
        received = self._clock()
        if first:
            batch = [
                to_sample(self._bindings[key], value, received, held=True)
                for key, value in zip(keys, values, strict=True)
            ]
            self._first_read = {
                key: (s.value, s.status, s.source_ts, s.ts_origin)
                for key, s in zip(keys, batch, strict=True)
            }
        else:
            batch = []
            polled = self._polled_ts
            for key, value in zip(keys, values, strict=True):
                sample = to_sample(self._bindings[key], value, received)
                if sample.quality is not Quality.BAD:
                    if polled.get(key, sample.source_ts) == sample.source_ts:
                        sample = replace(sample, held=True)
                    polled[key] = sample.source_ts
                batch.append(sample)
        await samples(batch)

    # --- subscription ---------------------------------------------------------------------

    async def _subscribe(
        self,
        client: Client,
        session: BatchedSession,
        targets: dict[int, ua.NodeId],
        samples: SampleSink,
    ) -> Subscription:
        settings = self._conn.subscription
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = settings.publishing_interval_ms
        params.RequestedMaxKeepAliveCount = settings.keepalive_count
        params.RequestedLifetimeCount = settings.keepalive_count * 6
        params.MaxNotificationsPerPublish = 0
        params.PublishingEnabled = True
        params.Priority = 0
        subscription = await client.create_subscription(
            params,
            None,
            queue_maxsize=max(_INBOX_MIN, 4 * len(targets)),
            overflow=OverflowPolicy.DROP_OLDEST,
        )
        use_filter = settings.deadband_abs > 0
        failed = await self._monitor(session, subscription, list(targets), targets, use_filter)
        if use_filter:
            retry = [key for key, status in failed.items() if status in _FILTER_REFUSED]
            failed = {k: s for k, s in failed.items() if k not in retry}
            failed.update(await self._monitor(session, subscription, retry, targets, False))
        now = self._clock()
        if failed:
            await samples([bad_sample(self._bindings[k], s, now) for k, s in failed.items()])
        self.mode_in_use = "subscribe"
        # A fresh sample for every signal, whatever the server sends first.
        monitored = [key for key in targets if key not in failed]
        await self._read_all(session, monitored, targets, samples, first=True)
        return subscription

    async def _monitor(
        self,
        session: BatchedSession,
        subscription: Subscription,
        keys: list[int],
        targets: dict[int, ua.NodeId],
        use_filter: bool,
    ) -> dict[int, int]:
        """Create monitored items (client handle = key + 1); return failures by key."""
        settings = self._conn.subscription
        requests = []
        for key in keys:
            item = ua.MonitoredItemCreateRequest()
            item.ItemToMonitor = ua.ReadValueId()
            item.ItemToMonitor.NodeId = targets[key]
            item.ItemToMonitor.AttributeId = ua.AttributeIds.Value
            item.MonitoringMode = ua.MonitoringMode.Reporting
            parameters = ua.MonitoringParameters()
            parameters.ClientHandle = key + 1
            parameters.SamplingInterval = settings.sampling_interval_ms
            parameters.QueueSize = settings.queue_size
            parameters.DiscardOldest = True
            if use_filter:
                deadband = ua.DataChangeFilter()
                deadband.Trigger = ua.DataChangeTrigger.StatusValue
                deadband.DeadbandType = ua.DeadbandType.Absolute
                deadband.DeadbandValue = settings.deadband_abs
                parameters.Filter = deadband
            item.RequestedParameters = parameters
            requests.append(item)
        results = await session.monitored.run(requests, subscription.create_monitored_items)
        return {
            key: result.value
            for key, result in zip(keys, results, strict=True)
            if isinstance(result, ua.StatusCode)
        }

    async def _stream(
        self,
        subscription: Subscription,
        samples: SampleSink,
        watch: _LinkWatch,
        backoff: ReconnectSchedule,
    ) -> None:
        settings = self._conn.subscription
        silence_limit = max(
            settings.publishing_interval_ms / 1000 * settings.keepalive_count * 2, 1.0
        )
        inbox = _Inbox(max(_INBOX_MIN, 4 * len(self._bindings)), self.stats)
        reader = asyncio.create_task(self._drain(subscription, inbox))
        started = time.monotonic()
        try:
            while True:
                # asyncua can swallow a CancelledError while it creates monitored items or
                # tears down; the request to stop is still pending on this task.
                reraise_cancellation()
                watch.check()
                if reader.done():
                    raise ConnectorUnavailable(
                        f"The subscription on {self._conn.endpoint} was closed."
                    )
                last = subscription.last_publish_at or started
                silent = time.monotonic() - max(last, started)
                if silent > silence_limit:
                    raise ConnectorUnavailable(
                        f"No data nor keepalive from {self._conn.endpoint} for {silent:.1f} s."
                    )
                batch = self._convert(await inbox.take(_WAIT_STEP_S))
                if batch:
                    await samples(batch)
                    backoff.reset()
        finally:
            reader.cancel()
            # Bounded: asyncua's notification iterator can swallow the cancellation, and an
            # unbounded await here would keep the whole connector from stopping.
            await asyncio.wait([reader], timeout=2.0)

    @staticmethod
    async def _drain(subscription: Subscription, inbox: _Inbox) -> None:
        async for event in subscription:
            inbox.put(event)

    def _convert(self, events: list[SubEvent]) -> list[Sample]:
        batch: list[Sample] = []
        received = self._clock()
        for event in events:
            if isinstance(event, StatusChangeEvent):
                status = event.notification.Status
                if not status.is_good():
                    raise ConnectorUnavailable(
                        f"The subscription on {self._conn.endpoint} ended: {status.name}."
                    )
                continue
            if not isinstance(event, DataChangeEvent):
                continue
            key = (event.data.subscription_data.client_handle or 0) - 1
            value = event.data.monitored_item.Value
            if 0 <= key < len(self._bindings) and value is not None:
                self.stats.notifications += 1
                sample = to_sample(self._bindings[key], value, received)
                read = self._first_read.pop(key, None) if self._first_read else None
                if read == (sample.value, sample.status, sample.source_ts, sample.ts_origin):
                    continue  # the item's initial notification: the value already read
                batch.append(sample)
        return batch

    # --- link state -----------------------------------------------------------------------

    def _emit(self, links: LinkSink, state: LinkState, reason: str = "") -> None:
        """Report changes only: retries failing the same way stay silent."""
        if state == LinkState.CONNECTING and self._state is not None:
            return
        if (state, reason) == (self._state, self._reason):
            return
        self._state, self._reason = state, reason
        links(LinkEvent(state=state, ts=self._clock(), reason=reason))


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class _LinkWatch:
    """What asyncua's connection watchdog reported, checked between requests."""

    def __init__(self, endpoint: str, lost: list[str], event: asyncio.Event) -> None:
        self._endpoint = endpoint
        self._lost = lost
        self._event = event

    def check(self) -> None:
        if self._event.is_set():
            cause = self._lost[0] if self._lost else "unknown cause"
            raise ConnectorUnavailable(f"The connection to {self._endpoint} was lost ({cause}).")

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake up at once if the connection is lost meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), max(0.0, seconds))
        self.check()
