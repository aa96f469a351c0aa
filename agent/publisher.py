"""MQTT publisher: sends outbox rows, deletes nothing until a signed bureau receipt (§b.2, §b.4).

Threads: paho's network thread (`loop_start`) only turns callbacks into events on a queue;
one driver thread (the caller of `step`/`run`/`drain`) owns the Outbox and the mid map.
So `(mid -> report_id)` is recorded before the PUBACK event can be processed (paho #482)
and SQLite is touched from one thread only.

Delivery rules:
- Send only while connected AND subscribed to the receipt topic (re-subscribed after every
  CONNACK; no reliance on the broker keeping our session).
- Send window: the first `window` unacknowledged rows in seq order, each resent when its
  receipt is overdue (timeout doubling per attempt, capped). A PUBACK never acks a row; a
  PUBACK with a failure reason code (v5) postpones it and counts an alarm.
- Never publish() while disconnected: paho keeps QoS 1 messages across reconnects itself,
  so a second resend path would double duplicates (paho pitfall 4).
- Receipts are verified with the pinned bureau keys and `typ=tieragent-receipt+jws`, and
  must name a local row by report_id AND report_sha256; everything else is counted as forged.
  Their transparency-log proofs must hold (agent/log_monitor.py), or they ack nothing.
- Reconnect: exponential backoff with full jitter between reconnect_min_s and
  reconnect_max_s, reset after `stable_s` of connection; the first delay after a lost
  connection is drawn over the whole window, so that agents dropped together by a broker
  restart come back spread out (T10). A watchdog recreates the client
  if paho's network thread dies (paho #894).
Works on MQTT 5 and on 3.1.1; `protocol="auto"` (the default) starts with 5 and falls back to
3.1.1 once when the broker refuses 5; v5 adds session expiry and reason codes.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from agent.errors import AgentError
from agent.key_rotation import complete_rotation, pending_rotations
from agent.log_monitor import LogMonitor, Verdict
from agent.outbox import Outbox
from agent.protocol.crashpoint import crash_point
from agent.protocol.envelope import (
    EnvelopeError,
    Kind,
    canonical_bytes,
    peek_compact,
    thumbprint,
    verify_compact,
)
from agent.protocol.mqtt import (
    BrokerSettings,
    ConnectFailures,
    ProtocolChoice,
    connect_error,
    make_client,
    receipt_topic,
    report_topic,
    rotation_topic,
    status_topic,
)

log = logging.getLogger("tieragent.publish")
RECEIPT_STATUSES = frozenset({"accepted", "duplicate", "pending", "rejected"})


class PublishError(AgentError):
    """The publisher cannot be configured or started; str() is one sentence."""


@dataclass(frozen=True, kw_only=True)
class PublisherSettings(BrokerSettings):
    """MQTT delivery settings (production defaults; tests shrink the timers)."""

    factory_id: str
    bureau_keys: tuple[dict[str, str], ...]  # pinned receipt-signing public JWKs
    client_id: str | None = None
    stable_s: float = 60.0
    receipt_timeout_s: float = 30.0
    resend_cap_s: float = 300.0
    window: int = 16  # reports in flight: 4 capped delivery at 139 reports/s (BENCHMARKS.md)
    key_dir: Path | None = None  # for key rotations: statements to deliver, keys to forget
    extra: dict[str, Any] = field(default_factory=dict)


class Publisher:
    """Drains one factory's outbox to the broker; see the module docstring for the rules."""

    def __init__(self, settings: PublisherSettings, outbox: Outbox) -> None:
        if not settings.bureau_keys:
            raise PublishError("No bureau receipt key is pinned; receipts could not be verified.")
        self.settings = settings
        self.outbox = outbox
        self.metrics: Counter[str] = Counter()
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._keys = {thumbprint(jwk): jwk for jwk in settings.bureau_keys}
        self._mids: dict[int, str] = {}
        self._connected = False
        self._subscribed = False
        self._sub_mid: int | None = None
        self._attempt = 0
        self._connected_at = 0.0
        self._stopping = False
        self._client: mqtt.Client | None = None
        self.protocol = ProtocolChoice(settings.protocol, log)
        self.failures = ConnectFailures(
            self.metrics, log, "Cannot connect to the MQTT broker: %s", settings.protocol
        )
        self._rotations = pending_rotations(settings.key_dir) if settings.key_dir else []
        self._waiting_link: dict[int, str] = {}  # predecessor seq -> report held by the bureau
        self._log = LogMonitor(outbox.connection, self._keys)  # the bureau's log (§b.9)

    # ---- lifecycle -------------------------------------------------------------------

    def start(self) -> None:
        self._stopping = False
        self._new_client()

    def stop(self) -> None:
        self._stopping = True
        client = self._client
        if client is not None:
            if self._connected:
                info = client.publish(
                    status_topic(self.settings.factory_id), self._status(False), qos=1, retain=True
                )
                info.wait_for_publish(timeout=1.0)
            client.disconnect()
            client.loop_stop()
        self._client = None
        self._connected = self._subscribed = False

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _status(self, online: bool) -> bytes:
        return canonical_bytes({"factory_id": self.settings.factory_id, "online": online})

    def _new_client(self) -> None:
        factory = self.settings.factory_id
        client_id = self.settings.client_id or f"tieragent-{factory}"
        client, connect = make_client(
            dataclasses.replace(self.settings, protocol=self.protocol.current),
            client_id,
            inflight=self.settings.window,
            will=(status_topic(factory), self._status(False)),
        )
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_log = self.failures.on_log
        self._client = client
        self._mids.clear()
        connect()
        client.loop_start()

    # ---- paho callbacks (network thread): never raise, only enqueue --------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        try:
            if rc.is_failure:
                self._events.put(("connect_refused", str(rc), client))
                self._schedule_reconnect(client)
                return
            _, mid = client.subscribe(receipt_topic(self.settings.factory_id), qos=1)
            client.publish(
                status_topic(self.settings.factory_id), self._status(True), qos=1, retain=True
            )
            self._events.put(("connected", mid))
        except Exception:  # a raising callback would end paho's loop thread
            log.exception("MQTT on_connect handler failed.")

    def _on_connect_fail(self, client: mqtt.Client, _u: Any) -> None:
        try:
            self._events.put(("connect_failed", connect_error(), client))
            self._schedule_reconnect(client)
        except Exception:
            log.exception("MQTT on_connect_fail handler failed.")

    def _on_disconnect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        try:
            self._events.put(("disconnected", self.failures.disconnect_reason(rc), client))
            self._schedule_reconnect(client)
        except Exception:
            log.exception("MQTT on_disconnect handler failed.")

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, mid: int, codes: Any, _p: Any) -> None:
        try:
            self._events.put(("subscribed", mid, any(code.is_failure for code in codes)))
        except Exception:
            log.exception("MQTT on_subscribe handler failed.")

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        try:
            self._events.put(("puback", mid, bool(rc.is_failure), str(rc)))
        except Exception:
            log.exception("MQTT on_publish handler failed.")

    def _on_message(self, _c: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            self._events.put(("message", message.topic, bytes(message.payload)))
        except Exception:
            log.exception("MQTT on_message handler failed.")

    def _schedule_reconnect(self, client: mqtt.Client) -> None:
        """Full-jitter backoff: paho waits min_delay next time, so set both bounds to our draw.

        The first delay after a lost connection spans the whole window: a broker restart drops
        every agent at the same moment, and a window starting at reconnect_min_s brought all of
        them back within 50 ms (T10, docs/reliability.md §c). Failed attempts then back off
        exponentially from reconnect_min_s."""
        lost = bool(self._connected_at)
        if lost and time.monotonic() - self._connected_at >= self.settings.stable_s:
            self._attempt = 0
        self._connected_at = 0.0
        ceiling = self.settings.reconnect_max_s if lost else min(
            self.settings.reconnect_max_s,
            self.settings.reconnect_min_s * 2 ** min(self._attempt, 20),
        )
        delay = random.uniform(
            self.settings.reconnect_min_s, max(ceiling, self.settings.reconnect_min_s)
        )
        self._attempt += 1
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]  # floats work

    # ---- driver (owner thread) ---------------------------------------------------------

    def step(self, timeout: float = 0.1) -> None:
        """Handle queued events (waiting up to `timeout` for the first) and send what is due."""
        # Wait for the first event only: a receipt frees a window slot, and the next report
        # goes out at once rather than at the end of the timeout (window / timeout would
        # otherwise cap the rate: 4 / 0.1 s = 40 reports/s).
        first = True
        while True:
            try:
                event = self._events.get(timeout=timeout) if first else self._events.get_nowait()
            except queue.Empty:
                break
            first = False
            try:
                self._handle(event)
            except sqlite3.OperationalError as error:
                # The outbox is busy (a report being committed holds the write lock past the
                # busy timeout): keep the event and try again on the next step, never die.
                log.warning("Outbox busy while handling %s: %s; retrying.", type(event).__name__,
                            error)
                self._events.put(event)
                return
        self._watchdog()
        try:
            self._send_due()
        except sqlite3.OperationalError as error:
            log.warning("Outbox busy while sending: %s; retrying.", error)

    def run(self, stop: threading.Event, tick_s: float = 0.2) -> None:
        while not stop.is_set():
            self.step(tick_s)

    def drain(self, timeout_s: float) -> bool:
        """Step until no row is unacknowledged or the deadline passes; True when drained."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.outbox.unacked() == 0:
                return True
            self.step(0.05)
        return self.outbox.unacked() == 0

    @property
    def ready(self) -> bool:
        return self._connected and self._subscribed

    @property
    def last_connect_error(self) -> str | None:
        """The cause of the latest failed connection attempt (None once connected)."""
        return self.failures.last

    def _handle(self, event: tuple[Any, ...]) -> None:
        kind = event[0]
        if kind == "connected":
            self._connected, self._subscribed, self._sub_mid = True, False, event[1]
            self._connected_at = time.monotonic()
            self.failures.last = None
            self.metrics["connects_total"] += 1
            log.info("Connected to the MQTT broker.")
        elif kind == "subscribed":
            if event[1] == self._sub_mid and not event[2]:
                self._subscribed = True
                self._publish_rotations()
            elif event[2]:
                self.metrics["subscribe_refused_total"] += 1
                log.error("The broker refused the receipt subscription.")
        elif kind in ("disconnected", "connect_failed", "connect_refused"):
            if event[2] is not self._client:
                return  # the client replaced by a protocol fallback, closing down
            if self._connected:
                self.metrics["reconnects_total"] += 1
                log.warning("Disconnected from the MQTT broker: %s.", event[1],
                            extra={"fields": {"reason": str(event[1])}})
            elif self.protocol.falls_back(str(event[1])):
                self._restart_client()
            else:  # no CONNACK yet: the attempt failed (TLS, refused port, credentials)
                self.failures.failed(f"{event[1]} (MQTT {self.protocol.current})")
            self._connected = self._subscribed = False
            self._mids.clear()
        elif kind == "puback":
            self._handle_puback(event[1], event[2], event[3])
        elif kind == "message":
            self._handle_receipt(event[1], event[2])

    def _restart_client(self) -> None:
        """A new client (another MQTT version); the old one's network thread is stopped."""
        old = self._client
        if old is not None:
            old.disconnect()
            old.loop_stop()
        self._connected = self._subscribed = False
        self._new_client()

    def _handle_puback(self, mid: int, failed: bool, reason: str) -> None:
        report_id = self._mids.pop(mid, None)
        if report_id is None:
            return
        crash_point("after_puback")
        if failed:
            self.metrics["puback_failures_total"] += 1
            log.error(
                "The broker refused a report: %s.", reason,
                extra={"fields": {"report_id": report_id, "reason": reason}},
            )
            item = self.outbox.get(report_id)
            attempts = item.attempts if item else 1
            self.outbox.postpone(
                report_id, time.monotonic() + self._backoff(attempts), f"puback {reason}"
            )

    def _handle_receipt(self, topic: str, payload: bytes) -> None:
        if topic != receipt_topic(self.settings.factory_id):
            return
        receipt = self._verify_receipt(payload)
        if receipt is None:
            self.metrics["receipts_forged_total"] += 1
            return
        crash_point("after_receipt_verify")
        verdict = self._log.check(receipt)  # any receipt: foreign ones extend the chain too
        if verdict is not Verdict.ADMIT:  # an inconsistent or not yet linked log acks nothing
            self.metrics[f"log_{verdict}_total"] += 1  # log_alarm_total, log_unlinked_total
            return
        if receipt["status"] == "pending":
            self._hold_for_predecessor(receipt)
            return
        matched = self.outbox.apply_receipt(
            receipt["report_id"],
            receipt["report_sha256"],
            receipt["status"],
            payload.decode("ascii"),
            receipt.get("reason"),
        )
        if matched:
            self.metrics["receipts_verified_total"] += 1
            if self._rotations and receipt["status"] in ("accepted", "duplicate"):
                self._note_acknowledged_kid(str(receipt["report_id"]))
            seq = receipt.get("seq")
            successor = self._waiting_link.pop(seq, None) if isinstance(seq, int) else None
            if successor is not None:  # its predecessor is in: resend it now
                self.outbox.postpone(successor, 0.0, "predecessor acknowledged; resending")
            if receipt["status"] == "rejected":
                self.metrics["reports_rejected_total"] += 1
                log.error(
                    "The bureau rejected report %s (%s); it is quarantined until `tieragent "
                    "report release`.", receipt["report_id"], receipt.get("reason"),
                    extra={"fields": {"report_id": receipt["report_id"],
                                      "reason": receipt.get("reason")}},
                )
            return
        item = self.outbox.get(str(receipt["report_id"]))
        if item is not None and item.payload_sha256 == receipt["report_sha256"]:
            self.metrics["receipts_repeat_total"] += 1  # a late duplicate for an acked row
        else:
            self.metrics["receipts_forged_total"] += 1

    def _hold_for_predecessor(self, receipt: dict[str, Any]) -> None:
        """The bureau holds the report apart until its predecessor is stored: keep it open
        (only `accepted` or `duplicate` closes a row) and resend it once the predecessor's
        receipt arrives, or after the usual backoff if that receipt never comes."""
        item = self.outbox.get(str(receipt["report_id"]))
        if item is None or item.payload_sha256 != receipt["report_sha256"] or item.state not in (
            "pending", "inflight"
        ):
            self.metrics["receipts_forged_total"] += 1
            return
        self.metrics["receipts_pending_total"] += 1
        self._waiting_link[item.seq - 1] = item.report_id
        self.outbox.postpone(
            item.report_id, time.monotonic() + self._backoff(item.attempts),
            f"held by the bureau until seq {item.seq - 1} arrives",
        )

    def _publish_rotations(self) -> None:
        """Send every unacknowledged rotation statement before any report (the bureau
        applies the same statement once however often it arrives)."""
        client = self._client
        for rotation in self._rotations:
            if client is not None:
                client.publish(rotation_topic(self.settings.factory_id), rotation.statement, qos=1)
                self.metrics["rotations_sent_total"] += 1

    def _note_acknowledged_kid(self, report_id: str) -> None:
        """A receipt for a report signed by a rotated-in key acknowledges the rotation."""
        item = self.outbox.get(report_id)
        if item is None:
            return
        kid = peek_compact(item.jws, Kind.REPORT)[0].get("kid")
        for rotation in [r for r in self._rotations if r.new_kid == kid]:
            complete_rotation(rotation)
            self._rotations.remove(rotation)
            self.metrics["rotations_completed_total"] += 1

    def _verify_receipt(self, payload: bytes) -> dict[str, Any] | None:
        try:
            header, _ = peek_compact(payload, Kind.RECEIPT)
            jwk = self._keys.get(header["kid"])
            if jwk is None:
                return None
            value = verify_compact(payload, Kind.RECEIPT, jwk).payload
        except EnvelopeError:
            return None
        if (
            not isinstance(value, dict)
            or value.get("factory_id") != self.settings.factory_id
            # str first: a list or object there is unhashable (found by fuzzing, Z1)
            or not isinstance(value.get("status"), str)
            or value["status"] not in RECEIPT_STATUSES
            or not isinstance(value.get("report_id"), str)
            or not isinstance(value.get("report_sha256"), str)
            or not isinstance(value.get("reason"), str | None)  # stored with the row
        ):
            return None
        return value

    def _backoff(self, attempts: int) -> float:
        return float(
            min(
                self.settings.resend_cap_s,
                self.settings.receipt_timeout_s * 2 ** max(0, min(attempts - 1, 20)),
            )
        )

    def _send_due(self) -> None:
        client = self._client
        if client is None or not self.ready:
            return
        now = time.monotonic()
        window = self.outbox.window(self.settings.factory_id, self.settings.window)
        # The window is W sequence numbers from the oldest unacknowledged report, not the
        # first W unacknowledged rows: a lagging row must not let later rows overtake it by
        # more than W (docs/reliability.md T3, "in order within the window").
        limit = window[0].seq + self.settings.window if window else 0
        for item in window:
            if item.seq >= limit:
                break
            if item.next_attempt_at_mono > now or item.report_id in self._mids.values():
                continue
            info = client.publish(
                report_topic(self.settings.factory_id),
                item.jws.encode("ascii"),
                qos=1,
                retain=False,
            )
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                self.outbox.postpone(item.report_id, now + 0.5, "client queue full")
                continue
            # MQTT_ERR_NO_CONN still queues the message in paho; it goes out on reconnect.
            self._mids[info.mid] = item.report_id
            self.outbox.mark_sent(item.report_id, now + self._backoff(item.attempts + 1))
            self.metrics["reports_sent_total"] += 1
            crash_point("after_publish")

    def _watchdog(self) -> None:
        client = self._client
        if client is None or self._stopping:
            return
        thread = getattr(client, "_thread", None)
        if thread is not None and not thread.is_alive():
            self.metrics["client_restarts_total"] += 1
            log.error("The MQTT network thread died; recreating the client.")
            self._connected = self._subscribed = False
            self._new_client()
