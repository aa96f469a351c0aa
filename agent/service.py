"""The unattended part of `tieragent run`: report every period that is over, deliver, act.

Two threads beside the collecting event loop, each with its own SQLite connections:

- `ReportScheduler` looks every `reporting.check_every_s` for periods (day, month, year in
  the factory's time zone) that have ended plus `reporting.grace_s`, from `reporting.since`
  (or the first hour the store measured) on, and builds, signs and queues the report of each
  one that has no report yet, oldest first: after downtime every missed period is built on
  restart, in order. The building runs in a short-lived child process (agent.report_pass),
  so the collecting process never holds the report code and pandas in its memory. A
  period already queued is never rebuilt here (a restart, a kill in the middle of a build:
  the outbox commit is atomic, so a period has one report or none).
  Late data for a reported period is kept in the store and shown by `tieragent report
  --period P` (exit 2, "changed since"); the correction is an operator's signed revision
  with its reason (docs/operations.md), never a silent rebuild.
- `DeliveryLoop` drains the outbox to the bureau (`agent.publisher`): accepted or duplicate
  receipts close a report; a rejection quarantines it with its reason until `tieragent
  report release`.

`ServiceHealth` adds what these threads know to /healthz (reports that cannot be built, an
outbox stuck past `delivery.stuck_after_s`) and exports their counts as metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from agent.config import FactoryConfig
from agent.outbox import Outbox
from agent.protocol.envelope import strict_loads
from agent.protocol.period import Period, PeriodKind
from agent.publisher import Publisher, PublisherSettings
from agent.report_pass import BuiltReport, PassRequest, build_in_child
from agent.service_config import Delivery, Reporting
from agent.store.store import Store
from indicators.policy import DEFAULT_POLICY, PolicyFiles

log = logging.getLogger("tieragent.service")
OUTBOX_NAME = "outbox.db"
_KIND_ORDER: dict[str, int] = {"day": 0, "month": 1, "year": 2}


# --- which periods are due (pure) -------------------------------------------------------


def period_key(kind: PeriodKind, day: date) -> str:
    """The key of the `kind` period that contains local `day`."""
    if kind == "day":
        return day.isoformat()
    if kind == "month":
        return f"{day.year:04d}-{day.month:02d}"
    return f"{day.year:04d}"


def due_periods(
    kinds: Iterable[PeriodKind], first_day: date, now: float, time_zone: str, grace_s: float
) -> list[Period]:
    """Every period of `kinds` from the one containing `first_day` that has ended plus
    `grace_s` by `now`, in chain order: by end, and a day before the month it closes."""
    today = datetime.fromtimestamp(now, ZoneInfo(time_zone)).date()
    found: dict[str, Period] = {}
    day = first_day
    while day <= today:
        for kind in kinds:
            key = period_key(kind, day)
            if key not in found:
                found[key] = Period(kind, key, time_zone)
        day += timedelta(days=1)
    due = [p for p in found.values() if p.buildable_from(grace_s) <= now]
    return sorted(due, key=lambda p: (p.bounds()[1], _KIND_ORDER[p.kind]))


def first_report_day(reporting: Reporting, measured_from: float | None, time_zone: str
                     ) -> date | None:
    """`reporting.since`, else the local day of the store's first measured hour."""
    if reporting.since is not None:
        return reporting.since
    if measured_from is None:
        return None
    return datetime.fromtimestamp(measured_from, ZoneInfo(time_zone)).date()


# --- shared state the threads publish for /healthz and /metrics --------------------------


@dataclass
class ServiceState:
    """Written by the service threads, read by the metrics server (plain values only)."""

    reports_built: int = 0
    build_failures: int = 0
    build_problem: str | None = None
    last_built: str | None = None
    outbox_counts: dict[str, int] = field(default_factory=dict)
    oldest_unacked_at: float | None = None
    delivery: dict[str, float] = field(default_factory=dict)
    broker_ready: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)


class RepeatedError:
    """First occurrence logged in full, then one line per `every_s` with the count."""

    def __init__(self, every_s: float = 300.0) -> None:
        self.every_s = every_s
        self.count = 0
        self._last_logged = 0.0

    def failed(self, message: str, exc: BaseException) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count == 1:
            log.error("%s: %s", message, exc)
            self._last_logged = now
        elif now - self._last_logged >= self.every_s:
            log.error("%s (failed %d times so far): %s", message, self.count, exc)
            self._last_logged = now

    def recovered(self, message: str) -> None:
        if self.count:
            log.info("%s (after %d failed attempts).", message, self.count)
        self.count = 0


# --- reports ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ServicePaths:
    config: Path
    data_dir: Path

    @property
    def store(self) -> Path:
        return self.data_dir / "agent.db"

    @property
    def outbox(self) -> Path:
        return self.data_dir / OUTBOX_NAME

    def key_dir(self, reporting: Reporting) -> Path:
        return reporting.key_dir or self.data_dir / "keys"


def policy_files(reporting: Reporting) -> PolicyFiles:
    """The factory's own policy inputs; declarations and benchmarks only if configured."""
    return PolicyFiles(reporting.policy or DEFAULT_POLICY, reporting.benchmarks,
                       reporting.declarations)


class ReportScheduler:
    """Builds, signs and queues every period's report once it is over (own thread)."""

    def __init__(self, config: FactoryConfig, paths: ServicePaths, state: ServiceState,
                 clock: Callable[[], float] = time.time) -> None:
        assert config.reporting is not None
        self.config = config
        self.reporting: Reporting = config.reporting
        self.paths = paths
        self.state = state
        self.clock = clock
        self._errors = RepeatedError()

    def run(self, stop: threading.Event) -> None:
        store = Store.open(self.paths.store, self.config)
        outbox = Outbox(self.paths.outbox)
        try:
            while not stop.is_set():
                self.run_once(store, outbox, stop)
                stop.wait(self.reporting.check_every_s)
        finally:
            outbox.close()
            store.close()

    def missing(self, store: Store, outbox: Outbox) -> list[Period]:
        """The due periods that have no report yet, oldest first."""
        first = first_report_day(self.reporting, store.measured_since(),
                                 self.config.factory.time_zone)
        if first is None:
            return []
        factory_id = self.config.factory.factory_id
        due = due_periods(self.reporting.periods, first, self.clock(),
                          self.config.factory.time_zone, self.reporting.grace_s)
        missing = [p for p in due if outbox.find(factory_id, p.slot(0)) is None]
        # Only what the store has derived through the period's end: after a restart the
        # collector first closes the downtime (Store.resume), and a report built before
        # that would sign an incomplete period.
        derived = store.derived_through()
        return [p for p in missing if derived is not None and p.bounds()[1] <= derived]

    def request(self, periods: list[Period]) -> PassRequest:
        passphrase = self.reporting.passphrase
        return PassRequest(
            config=self.config, config_path=self.paths.config, store=self.paths.store,
            outbox=self.paths.outbox, key_dir=self.paths.key_dir(self.reporting),
            policy_files=policy_files(self.reporting), bureau_id=self.reporting.bureau_id,
            passphrase=passphrase.resolve().encode() if passphrase is not None else None,
            clock_offset_s=self.clock() - time.time(), keys=tuple(p.key for p in periods),
        )

    def run_once(self, store: Store, outbox: Outbox, stop: threading.Event) -> int:
        """Build every missing report, oldest first (in a child process); the number built."""

        def built(report: BuiltReport) -> None:
            with self.state.lock:
                self.state.reports_built += 1
                self.state.last_built = report.period
                self.state.build_problem = None
            log.info("Report built, signed and queued.", extra={"fields": {
                "period": report.period, "kind": report.kind, "seq": report.seq,
                "report_id": report.report_id, "has_data": report.has_data}})

        try:
            missing = self.missing(store, outbox)
            if len(missing) > 1:
                log.info("Building %d reports that are due, oldest first (%s to %s).",
                         len(missing), missing[0].key, missing[-1].key)
            count = build_in_child(self.request(missing), stop, built) if missing else 0
        except Exception as error:  # a bad key file, a full disk: say so, try again later
            with self.state.lock:
                self.state.build_failures += 1
                self.state.build_problem = str(error)
            self._errors.failed("Cannot build the reports that are due", error)
            return 0
        self._errors.recovered("Reports are being built again")
        return count


# --- delivery ---------------------------------------------------------------------------


def read_bureau_keys(path: Path) -> tuple[dict[str, str], ...]:
    """The pinned bureau receipt key(s): one public JWK or a list of them (OSError,
    EnvelopeError, KeyError on a file that is not that)."""
    value = strict_loads(path.read_bytes())
    items = value if isinstance(value, list) else [value]
    return tuple({"kty": k["kty"], "crv": k["crv"], "x": k["x"]} for k in items)


def publisher_settings(delivery: Delivery, factory_id: str) -> PublisherSettings:
    """The publisher's settings from the `delivery:` section (reads the bureau key file)."""
    password = delivery.password
    settings = PublisherSettings(
        broker_url=delivery.broker_url, factory_id=factory_id,
        bureau_keys=read_bureau_keys(delivery.bureau_key), protocol=delivery.protocol,
        client_id=delivery.client_id, window=delivery.window, keepalive_s=delivery.keepalive_s,
        receipt_timeout_s=delivery.receipt_timeout_s,
        reconnect_min_s=delivery.reconnect_min_s, reconnect_max_s=delivery.reconnect_max_s,
        ca_file=delivery.ca_file, cert_file=delivery.cert_file, key_file=delivery.key_file,
        username=delivery.username,
        password_file=password.file if password is not None else None,
    )
    if password is not None and password.env is not None:
        settings = dataclasses.replace(settings, password_env=password.env)
    return settings


class DeliveryLoop:
    """Drains the outbox over MQTT and publishes its state for /healthz (own thread)."""

    def __init__(self, settings: PublisherSettings, paths: ServicePaths,
                 state: ServiceState) -> None:
        self.settings = settings
        self.paths = paths
        self.state = state

    def run(self, stop: threading.Event) -> None:
        outbox = Outbox(self.paths.outbox)  # SQLite connections belong to their thread
        publisher = Publisher(self.settings, outbox)
        publisher.start()
        try:
            next_snapshot = 0.0
            while not stop.is_set():
                publisher.step(0.2)
                if time.monotonic() >= next_snapshot:
                    self._snapshot(outbox, publisher)
                    next_snapshot = time.monotonic() + 1.0
        finally:
            publisher.stop()
            self._snapshot(outbox, publisher)
            outbox.close()

    def _snapshot(self, outbox: Outbox, publisher: Publisher) -> None:
        counts = outbox.counts()
        oldest = outbox.oldest_unacked_at(self.settings.factory_id)
        with self.state.lock:
            self.state.outbox_counts = counts
            self.state.oldest_unacked_at = oldest
            self.state.delivery = {k: float(v) for k, v in publisher.metrics.items()}
            self.state.broker_ready = publisher.ready


# --- health and metrics -----------------------------------------------------------------


def service_reasons(state: ServiceState, delivery: Delivery | None, now: float) -> list[str]:
    """The /healthz reasons the service adds to the collector's own."""
    reasons: list[str] = []
    with state.lock:
        if state.build_problem is not None:
            reasons.append(f"reports cannot be built: {state.build_problem}")
        if state.delivery.get("log_alarm_total"):
            reasons.append("the bureau's transparency log is inconsistent; receipts no longer "
                           "acknowledge reports (tieragent status)")
        oldest = state.oldest_unacked_at
    if delivery is not None and oldest is not None:
        age = now - oldest
        if age > delivery.stuck_after_s:
            reasons.append(
                f"outbox stuck: the oldest undelivered report is {age / 3600:.1f} h old (limit "
                f"{delivery.stuck_after_s / 3600:g} h); check the broker and the bureau key")
    return reasons


def with_service_health(body: dict[str, Any], state: ServiceState, delivery: Delivery | None,
                        now: float) -> dict[str, Any]:
    """The collector's /healthz body with the service's reasons and outbox counts added."""
    reasons = [*body.get("reasons", []), *service_reasons(state, delivery, now)]
    with state.lock:
        outbox = dict(state.outbox_counts)
    return {**body, "status": "degraded" if reasons else "ok", "reasons": reasons,
            "outbox": outbox}


class ServiceCollector(Collector):
    """Prometheus view of `ServiceState` (registered on the agent's registry)."""

    def __init__(self, state: ServiceState) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        with self.state.lock:
            built, failures = self.state.reports_built, self.state.build_failures
            counts = dict(self.state.outbox_counts)
            delivery = dict(self.state.delivery)
            ready = self.state.broker_ready
        yield CounterMetricFamily("tieragent_reports_built", "Reports built, signed and queued.",
                                  value=built)
        yield CounterMetricFamily("tieragent_report_build_failures",
                                  "Passes that could not build the reports due.", value=failures)
        outbox = GaugeMetricFamily("tieragent_outbox_reports", "Reports in the outbox by state.",
                                   labels=["state"])
        for name, number in sorted(counts.items()):
            outbox.add_metric([name], number)
        yield outbox
        for name, help_text in (
            ("reports_sent_total", "Report publications (first sends and resends)."),
            ("receipts_verified_total", "Signed bureau receipts verified and applied."),
            ("reports_rejected_total", "Reports the bureau rejected (quarantined)."),
            ("receipts_forged_total", "Receipts that failed verification or matched nothing."),
        ):
            yield CounterMetricFamily(f"tieragent_{name.removesuffix('_total')}", help_text,
                                      value=delivery.get(name, 0.0))
        yield GaugeMetricFamily("tieragent_broker_ready",
                                "1 while connected to the broker and subscribed to receipts.",
                                value=1.0 if ready else 0.0)


def register_metrics(registry: CollectorRegistry, state: ServiceState) -> None:
    registry.register(ServiceCollector(state))
