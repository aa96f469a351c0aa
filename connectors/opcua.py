"""OPC UA connector: one subscription (or polling) per server, batched to its limits.

Reconnection is owned here; asyncua's `auto_reconnect` stays off. After any loss the
Client object is thrown away and a new one is created (asyncua #1660: a reused client can
hang), node ids are resolved again (namespace URIs may map to new indexes after a server
restart), the subscription and its monitored items are created again, and current values
are read once so every signal has a fresh sample. Losses are detected by asyncua's
connection watchdog (probe every second) and by our liveness check: no data nor keepalive
for `publishing_interval x keepalive_count x 2` ends the session.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from asyncua import Client, ua
from asyncua.common.subscription import (
    DataChangeEvent,
    OverflowPolicy,
    StatusChangeEvent,
    SubEvent,
    Subscription,
)
from asyncua.common.utils import ServiceError

from connectors.backoff import Backoff
from connectors.base import LinkEvent, LinkSink, LinkState, SampleSink, SignalBinding
from connectors.config import OpcUaConnection
from connectors.errors import ConnectorError, ConnectorUnavailable
from connectors.opcua_session import (
    BatchedSession,
    close_client,
    describe,
    open_client,
    read_operation_limits,
    reraise_cancellation,
)
from connectors.opcua_values import bad_sample, parse_node, resolve_node, to_sample
from connectors.sample import Sample

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
    ) -> None:
        self.name = name
        self.stats = OpcUaStats()
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

    async def run(self, samples: SampleSink, links: LinkSink) -> None:
        """Collect until cancelled; a lost or refused link backs off and starts again."""
        backoff = Backoff(self._conn.reconnect_min_s, self._conn.reconnect_max_s)
        while True:
            self._emit(links, LinkState.CONNECTING)
            try:
                await self._session(samples, links, backoff)
                reason = "The session ended."
            except ConnectorError as exc:
                reason = str(exc)
            except (OSError, TimeoutError, ua.UaError, ServiceError) as exc:
                reason = f"The OPC UA link to {self._conn.endpoint} failed: {describe(exc)}."
            reraise_cancellation()
            log.warning("OPC UA %s: %s", self.name, reason)
            self._emit(links, LinkState.DISCONNECTED, reason)
            await asyncio.sleep(backoff.next_delay())

    # --- one session ----------------------------------------------------------------------

    async def _session(self, samples: SampleSink, links: LinkSink, backoff: Backoff) -> None:
        lost: list[str] = []
        lost_event = asyncio.Event()

        async def on_lost(exc: Exception) -> None:
            lost.append(describe(exc))
            lost_event.set()

        client = await open_client(self._conn, on_lost)
        self.stats.sessions += 1
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
        backoff: Backoff,
    ) -> None:
        self.mode_in_use = "poll"
        keys = list(targets)
        interval = self._conn.poll_interval_s
        while True:
            watch.check()
            await self._read_all(session, keys, targets, samples)
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
    ) -> None:
        values = await session.read([targets[key] for key in keys])
        received = self._clock()
        await samples(
            [
                to_sample(self._bindings[key], value, received)
                for key, value in zip(keys, values, strict=True)
            ]
        )

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
        await self._read_all(session, monitored, targets, samples)
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
        self, subscription: Subscription, samples: SampleSink, watch: _LinkWatch, backoff: Backoff
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
                batch.append(to_sample(self._bindings[key], value, received))
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
