"""The bureau's MQTT receiver: verify, store, answer every report with a signed receipt.

Subscribes to tieragent/v1/+/report (or $share/<group>/tieragent/v1/+/report so several
receivers can split the load) and tieragent/v1/+/keyrotate. Each message is handled
synchronously inside `on_message`: one DB transaction (lock the topic's factory -> verify ->
store report or quarantine + receipt) -> COMMIT -> publish receipt. Verifying inside the
transaction, after the factory lock, is what keeps chain checks right with several receivers
on one PostgreSQL: a factory's messages are decided one at a time, each seeing what the
previous one stored. paho sends the PUBACK only after
`on_message` returns, so a crash before COMMIT leaves the message to be redelivered
(persistent session) or resent by the agent. Hostile input never escapes `_handle`:
everything is a counted, logged decision.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from joserfc.jwk import OKPKey
from sqlalchemy.exc import OperationalError

from agent.protocol.crashpoint import crash_point
from agent.protocol.envelope import sha256_hex
from agent.protocol.mqtt import (
    REPORT_FILTER,
    ROTATE_FILTER,
    BrokerSettings,
    ConnectFailures,
    ProtocolChoice,
    connect_error,
    make_client,
    receipt_topic,
    report_topic_factory,
)
from agent.protocol.report import IndicatorFn
from bureau.receipts import receipt_payload, sign_receipt
from bureau.registry import KeyRegistry, RegistryError
from bureau.store import PENDING_LINK, Rejection, SqlReportStore, StoredReport
from bureau.translog import TransparencyLog
from bureau.verify import DEFAULT_MAX_BYTES, Decision, Verifier

log = logging.getLogger("tieragent.bureau")


@dataclass(frozen=True)
class ReceiverSettings:
    db: Path | str  # a SQLite file, or a postgresql:// URL (bureau.database)
    broker_url: str
    bureau_id: str
    client_id: str = "tieragent-bureau"
    share_group: str | None = None
    protocol: str = "auto"  # auto | 5 | 3.1.1 (agent.protocol.mqtt.ProtocolChoice)
    keepalive_s: int = 30
    max_bytes: int = DEFAULT_MAX_BYTES
    reorder_timeout_s: float = 86_400.0
    check_indicators: bool = True
    # TLS (mqtts:// only), configured exactly like the agent's publisher (agent/publish.py).
    ca_file: Path | None = None  # CA that signed the broker certificate (default: system CAs)
    cert_file: Path | None = None  # client certificate, when the broker requires one
    key_file: Path | None = None


class Receiver:
    def __init__(
        self, settings: ReceiverSettings, key: OKPKey, indicator_fn: IndicatorFn | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.clock = clock  # the wall clock reports are checked against ("future", keys)
        self.key = key
        self.store = SqlReportStore(settings.db)
        self.registry = KeyRegistry(self.store.db)
        self.verifier = Verifier(
            self.registry,
            self.store,
            settings.bureau_id,
            max_bytes=settings.max_bytes,
            indicator_fn=indicator_fn,
            check_indicators=settings.check_indicators,
        )
        self.metrics: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._closed = False  # the store, by `stop`
        self._pending_checked = float("-inf")  # when gap alerts were last looked for
        self._store_failures = 0  # messages not stored in a row (disk full, I/O error)
        self._store_error_logged_at = float("-inf")
        self._client: mqtt.Client | None = None
        self.connected = threading.Event()
        self.protocol = ProtocolChoice(settings.protocol, log)
        self.failures = ConnectFailures(
            self.metrics, log, "The bureau cannot connect to the MQTT broker: %s",
            settings.protocol,
        )
        self.translog = TransparencyLog(self.store.db, settings.bureau_id, key, self._log_alert)
        with self.store.transaction():
            if self.translog.backfill(self.clock()):  # reports stored before the log existed
                log.info("Reports stored before the transparency log existed were appended.")

    # ---- MQTT -------------------------------------------------------------------------

    def _filters(self) -> list[str]:
        group = self.settings.share_group
        return [f"$share/{group}/{f}" if group else f for f in (REPORT_FILTER, ROTATE_FILTER)]

    def start(self) -> None:
        mqtt_settings = BrokerSettings(
            broker_url=self.settings.broker_url,
            protocol=self.protocol.current,
            keepalive_s=self.settings.keepalive_s,
            reconnect_min_s=0.2,
            reconnect_max_s=5.0,
            ca_file=self.settings.ca_file,
            cert_file=self.settings.cert_file,
            key_file=self.settings.key_file,
        )
        client, connect = make_client(mqtt_settings, self.settings.client_id, inflight=64)
        # Receipts are never dropped for a full queue: one per message handled, and under a
        # backlog the broker's PUBACKs for them queue behind its reports on the socket; with
        # the agent's bounded queue (256) a third of them were dropped at 2,000 reports.
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_log = self.failures.on_log
        self._client = client
        connect()
        client.loop_start()

    def stop(self) -> None:
        """Disconnect, then close the store; safe to call twice. The store is closed under
        the lock that `handle` and `tick` hold: closing an SQLite connection while another
        thread is inside a call on it crashes the process (a segfault seen in the demo)."""
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
            self._client = None
        with self._lock:
            if not self._closed:
                self._closed = True
                self.store.close()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        try:
            if rc.is_failure:
                if self.protocol.falls_back(str(rc)):
                    self._fall_back(client)
                    return
                log.error("The broker refused the bureau connection (MQTT %s): %s.",
                          self.protocol.current, rc,
                          extra={"fields": {"reason": str(rc),
                                            "protocol": self.protocol.current}})
                return
            for topic in self._filters():
                client.subscribe(topic, qos=1)
            self.failures.last = None
            self.connected.set()
            log.info("Bureau receiver connected.")
        except Exception:
            log.exception("Bureau on_connect handler failed.")

    @property
    def last_connect_error(self) -> str | None:
        """The cause of the latest failed connection attempt (None once connected)."""
        return self.failures.last

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        try:
            self.failures.failed(connect_error())
        except Exception:
            log.exception("Bureau on_connect_fail handler failed.")

    def _on_disconnect(self, client: mqtt.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        try:
            reason = self.failures.disconnect_reason(rc)
            if client is not self._client:
                return  # replaced by a protocol fallback, closing down
            if self.connected.is_set():
                self.connected.clear()
            elif self.protocol.falls_back(reason):
                self._fall_back(client)
            else:  # closed before CONNACK: a failed attempt, not a lost connection
                self.failures.failed(f"{reason} (MQTT {self.protocol.current})")
        except Exception:
            log.exception("Bureau on_disconnect handler failed.")

    def _fall_back(self, old: mqtt.Client) -> None:
        """Replace the client by one on the fallen-back MQTT version; from another thread,
        since paho's network thread (this callback's) cannot stop itself."""

        def replace() -> None:
            old.disconnect()
            old.loop_stop()
            if self._client is old and not self._closed:
                self.start()

        threading.Thread(target=replace, name="mqtt-fallback", daemon=True).start()

    def _on_message(self, client: mqtt.Client, _u: Any, message: mqtt.MQTTMessage) -> None:
        try:
            reply = self.handle(message.topic, bytes(message.payload))
            if reply is not None:
                topic, receipt = reply
                info = client.publish(topic, receipt.encode("ascii"), qos=1)
                # NO_CONN: paho keeps a QoS 1 message and sends it after reconnecting.
                if info.rc in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                    self.metrics["receipts_published_total"] += 1
                else:  # the agent resends the report and gets a duplicate receipt
                    self.metrics["receipts_unsent_total"] += 1
                    log.warning("A receipt could not be queued for publishing (MQTT %s).",
                                mqtt.error_string(info.rc))
        except OperationalError as error:  # disk full, I/O error, database gone (§c P5)
            self._store_failed(error)
        except Exception:  # the last line of defence: never let a message end the loop
            self.metrics["internal_errors_total"] += 1
            log.exception("Bureau failed to handle a message.")
        else:
            if self._store_failures:
                log.info("The bureau stores reports again (after %d failed attempts).",
                         self._store_failures)
                self._store_failures = 0

    def _store_failed(self, error: OperationalError) -> None:
        """Nothing was committed and no receipt sent: the agent resends. Logged once, then
        once a minute with the count, not once per message."""
        self.metrics["store_errors_total"] += 1
        self._store_failures += 1
        now = time.monotonic()
        if self._store_failures == 1 or now - self._store_error_logged_at >= 60.0:
            cause = str(error.orig) if error.orig is not None else str(error)
            log.error("The bureau cannot store reports (%s; %d failed so far): they are not "
                      "answered, and the agents resend them. Free space or fix the database.",
                      cause, self._store_failures)
            self._store_error_logged_at = now

    # ---- message handling (also called directly by tests and benchmarks) ---------------

    def handle(
        self, topic: str, message: bytes, now: float | None = None
    ) -> tuple[str, str] | None:
        """Process one message; returns (receipt topic, receipt JWS) or None (no reply)."""
        with self._lock:
            if self._closed:
                return None  # stopping: the message stays unanswered, the agent resends
            if topic.endswith("/keyrotate"):
                self._rotate(topic, message)
                return None
            now = self.clock() if now is None else now
            # Batched (PostgreSQL): each run of writes goes to the server in one round trip.
            # Its writes and the COMMIT go together at the end.
            counted = self.metrics.copy()
            try:
                with self.store.transaction(), self.store.db.batched(commit=True):
                    factory_of_topic = report_topic_factory(topic)
                    last_leaf = None
                    if factory_of_topic is not None:
                        self.store.lock_factory(factory_of_topic)
                        # Read after the lock, sent with the verifier's first query.
                        last_leaf = self.translog.prefetch_last_leaf(factory_of_topic)
                    decision = self.verifier.check(topic, message, now)
                    receipt = self._apply(topic, message, decision, now, last_leaf)
            except BaseException:
                # Rolled back: what `_apply` counted did not happen.
                self.metrics.clear()
                self.metrics.update(counted)
                raise
            crash_point("bureau_after_commit")
            if now - self._pending_checked >= 1.0:  # `tick` checks each second anyway
                self._check_pending(now)
            factory = decision.factory_id
            if factory is None:
                return None  # no factory topic to answer on; counted and quarantined
            return receipt_topic(factory), receipt

    def _apply(
        self, topic: str, message: bytes, decision: Decision, now: float,
        last_leaf: Callable[[], int | None] | None,
    ) -> str:
        """The decision's writes and its signed receipt, in the caller's transaction."""
        bureau_id = self.settings.bureau_id
        if decision.status == "duplicate":
            original = decision.original
            assert original is not None
            self.metrics["duplicates_total"] += 1
            return sign_receipt(
                receipt_payload(
                    bureau_id=bureau_id,
                    factory_id=original.factory_id,
                    report_id=original.report_id,
                    report_sha256=original.payload_sha256,
                    seq=original.seq,
                    status="duplicate",
                    original_receipt_sha256=original.receipt_sha256,
                    log=self.translog.receipt_member(
                        original.report_id, original.payload_sha256
                    ),
                ),
                self.key,
            )
        if decision.status == "accepted":
            assert last_leaf is not None  # a factory topic, or not accepted
            return self._store_accepted(message, decision, now, last_leaf())
        if decision.status == "pending":
            return self._answer_pending(decision, now)
        self.metrics[f"rejected_total:{decision.reason}"] += 1
        # The reason, factory and report in the line itself: an operator reading the
        # log must not need SQLite to know what was refused and why.
        log.warning(
            "Report rejected: %s (%s).", decision.reason, decision.detail,
            extra={"fields": {
                "reason": decision.reason, "factory_id": decision.factory_id,
                "report_id": decision.report_id, "seq": decision.seq,
            }},
        )
        payload = decision.payload
        period = payload.get("period") if isinstance(payload, dict) else None
        self.store.quarantine(
            Rejection(
                factory_id=decision.factory_id,
                topic=topic,
                reason=str(decision.reason),
                detail=decision.detail,
                report_id=decision.report_id,
                period_kind=period.get("kind") if isinstance(period, dict) else None,
                period_key=period.get("key") if isinstance(period, dict) else None,
                message_sha256=sha256_hex(message),
                size=len(message),
                jws=message.decode("ascii") if decision.verified is not None else None,
                received_at=now,
            )
        )
        if decision.reason in ("conflict", "fork", "chain"):
            self.store.alert(decision.factory_id, decision.reason, decision.detail)
        return sign_receipt(
            receipt_payload(
                bureau_id=bureau_id,
                factory_id=decision.factory_id,
                report_id=decision.report_id,
                report_sha256=decision.report_sha256,
                seq=decision.seq,
                status="rejected",
                reason=decision.reason,
                received_at=now,
            ),
            self.key,
        )

    def _store_accepted(
        self, message: bytes, decision: Decision, now: float, previous_leaf: int | None
    ) -> str:
        self._evict_orphans(decision)
        # Its base measures in columns for the annual evaluation, in the same transaction;
        # written before the log lock, like everything that needs no leaf number: the log
        # lock is global and held to COMMIT, so the time under it bounds the throughput of
        # all receivers together. On PostgreSQL its two writes (rows of two tables) go as
        # one statement (Database.fused), sent with the log lock.
        with self.store.db.fused():
            self.store.record_measures(decision.payload, decision.day_sums)
        # Every stored report, pending-link too, gets its leaf before its receipt is signed.
        # The leaf, the log head and the report (new rows of three tables, none reading
        # another) go as one statement with the COMMIT.
        with self.store.db.fused():
            receipt = self._store_with_leaf(message, decision, now, previous_leaf)
        if decision.relink is not None:
            self.store.set_state(decision.relink, "accepted")
        self.metrics["reports_accepted_total"] += 1
        if decision.state == "pending-link":
            self.metrics["pending_link_total"] += 1
        return receipt

    def _store_with_leaf(
        self, message: bytes, decision: Decision, now: float, previous_leaf: int | None
    ) -> str:
        """The report's leaf, its signed receipt and its row; returns the receipt."""
        report = decision.payload
        verified = decision.verified
        assert verified is not None and decision.factory_id is not None
        index = self.translog.append(
            report["report_id"], decision.factory_id, decision.report_sha256, now
        )
        receipt = sign_receipt(
            receipt_payload(
                bureau_id=self.settings.bureau_id,
                factory_id=decision.factory_id,
                report_id=report["report_id"],
                report_sha256=decision.report_sha256,
                seq=report["seq"],
                # Stored but not linked to the chain: never `accepted` until it links.
                status="pending" if decision.state == PENDING_LINK else "accepted",
                state=decision.state,
                received_at=now,
                log=self.translog.appended_member(index, previous_leaf, now),
            ),
            self.key,
        )
        token = message.decode("ascii")  # verified, so ASCII; kept verbatim
        self.store.insert(
            StoredReport(
                report_id=report["report_id"],
                factory_id=decision.factory_id,
                seq=report["seq"],
                period_kind=report["period"]["kind"],
                period_key=report["period"]["key"],
                revision=report["revision"],
                kid=verified.header["kid"],
                payload_sha256=decision.report_sha256,
                prev_sha256=report["prev_sha256"],
                jws=token,
                state=str(decision.state),
                received_at=now,
                receipt_jws=receipt,
                receipt_sha256=sha256_hex(receipt.encode("ascii")),
            )
        )
        return receipt

    def _log_alert(self, detail: str) -> None:
        self.metrics["log_alerts_total"] += 1
        self.store.alert(None, "log", detail)
        log.error("The transparency log was changed behind the receiver: %s.", detail)

    def _answer_pending(self, decision: Decision, now: float) -> str:
        self.metrics["reports_held_total"] += 1
        return sign_receipt(
            receipt_payload(
                bureau_id=self.settings.bureau_id, factory_id=decision.factory_id,
                report_id=decision.report_id, report_sha256=decision.report_sha256,
                seq=decision.seq, status="pending", received_at=now,
            ),
            self.key,
        )

    def _evict_orphans(self, decision: Decision) -> None:
        for report_id in decision.evict:
            detail = f"seq {decision.seq} of the real chain contradicts this unlinked report"
            orphan = self.store.evict(report_id, "orphan", detail)
            if orphan is None:
                continue
            self.metrics["orphans_evicted_total"] += 1
            self.store.alert(orphan.factory_id, "orphan", f"seq {orphan.seq}: {detail}")
            log.warning(
                "An unlinked report was contradicted by the real chain and moved to the "
                "rejections as an orphan.",
                extra={"fields": {"reason": "orphan", "factory_id": orphan.factory_id,
                                  "report_id": orphan.report_id, "seq": orphan.seq}},
            )

    def _check_pending(self, now: float) -> None:
        self._pending_checked = now
        cutoff = now - self.settings.reorder_timeout_s
        with self.store.transaction():
            for row in self.store.pending_links_older_than(cutoff):
                self.metrics["pending_link_alerts_total"] += 1
                self.store.alert(row.factory_id, "gap", f"seq {row.seq - 1} still missing")
                log.warning(
                    "Chain gap persists past the reorder timeout.",
                    extra={"fields": {"factory_id": row.factory_id, "seq": row.seq}},
                )

    def tick(self) -> None:
        """Periodic work without traffic (gap alerts); call about once a second."""
        with self._lock:
            if not self._closed:
                self._check_pending(self.clock())

    def _rotate(self, topic: str, message: bytes) -> None:
        if len(message) > 65_536:
            self.metrics["rejected_total:size"] += 1
            return
        try:
            parts = topic.split("/")
            with self.store.transaction():
                key = self.registry.apply_rotation(message, expected_factory=parts[2])
            self.metrics["keys_rotated_total"] += 1
            log.info("Key rotation accepted.", extra={"fields": {"factory_id": key.factory_id}})
        except RegistryError as error:
            self.metrics["rotations_rejected_total"] += 1
            log.warning("Key rotation rejected: %s", error)
