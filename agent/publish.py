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
- Reconnect: exponential backoff with full jitter between reconnect_min_s and
  reconnect_max_s, reset after `stable_s` of connection. A watchdog recreates the client
  if paho's network thread dies (paho #894).
Works on MQTT 5 and on 3.1.1 (`protocol="3.1.1"`); v5 adds session expiry and reason codes.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import sqlite3
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.crashpoint import crash_point
from agent.envelope import (
    EnvelopeError,
    Kind,
    canonical_bytes,
    peek_compact,
    thumbprint,
    verify_compact,
)
from agent.outbox import Outbox

log = logging.getLogger("tieragent.publish")
RECEIPT_STATUSES = frozenset({"accepted", "duplicate", "rejected"})


def report_topic(factory_id: str) -> str:
    return f"tieragent/v1/{factory_id}/report"


def receipt_topic(factory_id: str) -> str:
    return f"tieragent/v1/{factory_id}/receipt"


def status_topic(factory_id: str) -> str:
    return f"tieragent/v1/{factory_id}/status"


class PublishError(Exception):
    """The publisher cannot be configured or started; str() is one sentence."""


@dataclass(frozen=True)
class PublisherSettings:
    """MQTT delivery settings (production defaults; tests shrink the timers)."""

    broker_url: str  # mqtt://host:port or mqtts://host:port
    factory_id: str
    bureau_keys: tuple[dict[str, str], ...]  # pinned receipt-signing public JWKs
    client_id: str | None = None
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    stable_s: float = 60.0
    receipt_timeout_s: float = 30.0
    resend_cap_s: float = 300.0
    window: int = 4
    session_expiry_s: int = 86_400
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    password_env: str = "TIERAGENT_MQTT_PASSWORD"
    extra: dict[str, Any] = field(default_factory=dict)


def parse_broker_url(url: str) -> tuple[str, int, bool]:
    """(host, port, tls) from mqtt://host[:1883] or mqtts://host[:8883]."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise PublishError(f"Broker URL {url!r} is not mqtt://host:port or mqtts://host:port.")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise PublishError(f"Broker URL {url!r} has an invalid port.") from None
    return parts.hostname, port, tls


def make_client(
    settings: PublisherSettings,
    client_id: str,
    *,
    will: tuple[str, bytes] | None = None,
) -> tuple[mqtt.Client, Callable[[], None]]:
    """A configured paho client (TLS, credentials, will) and a function that connects it async.

    Shared with the bureau receiver so both ends configure transport the same way.
    """
    host, port, tls = parse_broker_url(settings.broker_url)
    tls_files = [f for f in (settings.ca_file, settings.cert_file, settings.key_file) if f]
    if tls_files and not tls:
        # TLS files with an mqtt:// URL would silently connect in plaintext.
        raise PublishError(
            f"TLS files are set but the broker URL {settings.broker_url!r} is not mqtts://; "
            "use mqtts://host:port."
        )
    v5 = settings.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
        clean_session=None if v5 else False,
    )
    if tls:
        try:
            client.tls_set(
                ca_certs=str(settings.ca_file) if settings.ca_file else None,
                certfile=str(settings.cert_file) if settings.cert_file else None,
                keyfile=str(settings.key_file) if settings.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except OSError as error:  # missing/unreadable file, or a key that is not the cert's
            files = ", ".join(str(f) for f in tls_files)
            raise PublishError(f"Cannot load the MQTT TLS files ({files}): {error}.") from None
        client.tls_insecure_set(False)
    password = _password(settings)
    if settings.username or password:
        client.username_pw_set(settings.username, password)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.max_inflight_messages_set(max(1, settings.window))
    client.max_queued_messages_set(max(2, settings.window * 2))
    client.reconnect_delay_set(
        max(1, int(settings.reconnect_min_s)), max(1, int(settings.reconnect_max_s))
    )

    def connect() -> None:
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = settings.session_expiry_s
            client.connect_async(
                host, port, settings.keepalive_s, clean_start=False, properties=props
            )
        else:
            client.connect_async(host, port, settings.keepalive_s)

    return client, connect


def connect_error() -> str:
    """The cause of a failed connection attempt; call it only inside `on_connect_fail`.

    paho calls `on_connect_fail` from its `except OSError` block without passing the
    exception, so the exception being handled is the cause (a refused port, a broker
    certificate that does not verify, ...). Without it an operator sees no reason at all.
    """
    error = sys.exc_info()[1]
    return f"{type(error).__name__}: {error}" if error is not None else "unknown cause"


class ConnectFailures:
    """Why connection attempts fail, kept the same way by the publisher and the bureau
    receiver: the cause is remembered (`last`), counted, and logged once per cause, not on
    every retry. paho reports why a socket died (a TLS alert such as "certificate
    required", a reset) only as an error log line, so `on_log` keeps that line for the
    disconnect that follows; on_disconnect itself just gets "Unspecified error"."""

    def __init__(self, metrics: Counter[str], logger: logging.Logger, message: str) -> None:
        self.last: str | None = None
        self._socket_error: str | None = None  # paho's last error line (network thread)
        self._metrics, self._logger, self._message = metrics, logger, message

    def on_log(self, _c: mqtt.Client, _u: Any, level: int, buf: str) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._socket_error = buf

    def disconnect_reason(self, rc: Any) -> str:
        """The reason code, with paho's error line if one came just before."""
        cause, self._socket_error = self._socket_error, None
        return str(rc) if cause is None else f"{rc}: {cause}"

    def failed(self, cause: str) -> None:
        self._metrics["connect_failures_total"] += 1
        if cause != self.last:
            self._logger.error(self._message, cause)
        self.last = cause


def _password(settings: PublisherSettings) -> str | None:
    if settings.password_file is not None:
        try:
            return settings.password_file.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as error:
            raise PublishError(
                f"{settings.password_file}: cannot read the MQTT password ({error.strerror})."
            ) from None
    return os.environ.get(settings.password_env) or None


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
        self.failures = ConnectFailures(
            self.metrics, log, "Cannot connect to the MQTT broker: %s"
        )

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
            self.settings, client_id, will=(status_topic(factory), self._status(False))
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
                self._events.put(("connect_refused", str(rc)))
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
            self._events.put(("connect_failed", connect_error()))
            self._schedule_reconnect(client)
        except Exception:
            log.exception("MQTT on_connect_fail handler failed.")

    def _on_disconnect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        try:
            self._events.put(("disconnected", self.failures.disconnect_reason(rc)))
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
        """Full-jitter backoff: paho waits min_delay next time, so set both bounds to our draw."""
        if self._connected_at and time.monotonic() - self._connected_at >= self.settings.stable_s:
            self._attempt = 0
        self._connected_at = 0.0
        ceiling = min(
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
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = (
                    self._events.get(timeout=max(0.0, remaining))
                    if remaining > 0
                    else self._events.get_nowait()
                )
            except queue.Empty:
                break
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
            elif event[2]:
                self.metrics["subscribe_refused_total"] += 1
                log.error("The broker refused the receipt subscription.")
        elif kind in ("disconnected", "connect_failed", "connect_refused"):
            if self._connected:
                self.metrics["reconnects_total"] += 1
                log.warning("Disconnected from the MQTT broker.", extra={"reason": event[1:]})
            else:  # no CONNACK yet: the attempt failed (TLS, refused port, credentials)
                self.failures.failed(event[1])
            self._connected = self._subscribed = False
            self._mids.clear()
        elif kind == "puback":
            self._handle_puback(event[1], event[2], event[3])
        elif kind == "message":
            self._handle_receipt(event[1], event[2])

    def _handle_puback(self, mid: int, failed: bool, reason: str) -> None:
        report_id = self._mids.pop(mid, None)
        if report_id is None:
            return
        crash_point("after_puback")
        if failed:
            self.metrics["puback_failures_total"] += 1
            log.error(
                "The broker refused a report.", extra={"report_id": report_id, "reason": reason}
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
        matched = self.outbox.apply_receipt(
            receipt["report_id"],
            receipt["report_sha256"],
            receipt["status"],
            payload.decode("ascii"),
            receipt.get("reason"),
        )
        if matched:
            self.metrics["receipts_verified_total"] += 1
            if receipt["status"] == "rejected":
                self.metrics["reports_rejected_total"] += 1
                log.error(
                    "The bureau rejected a report; it is quarantined.",
                    extra={"report_id": receipt["report_id"], "reason": receipt.get("reason")},
                )
            return
        item = self.outbox.get(str(receipt["report_id"]))
        if item is not None and item.payload_sha256 == receipt["report_sha256"]:
            self.metrics["receipts_repeat_total"] += 1  # a late duplicate for an acked row
        else:
            self.metrics["receipts_forged_total"] += 1

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
            or value.get("status") not in RECEIPT_STATUSES
            or not isinstance(value.get("report_id"), str)
            or not isinstance(value.get("report_sha256"), str)
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
        # more than W (RELIABILITY T3, "in order within the window").
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
