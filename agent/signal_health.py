"""Signal health after each commit: counters in /metrics, and log lines a person can act on.

The derivation counts what a healthy source and a correct configuration would not produce
(agent.derive.issues). Here each (device, signal, cause) gets one WARNING when it starts,
naming the device, the signal, the cause and its detail, and one INFO when the signal's
samples are fine again; a counter reset (an event, often a legitimate shift reset) is
logged at most once an hour per signal, with the count since the last line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

from agent.derive.issues import CAUSES, IssueEvent, IssueKey

log = logging.getLogger("tieragent.signals")
EVENT_CAUSES = frozenset({"counter_reset"})
EVENT_LOG_EVERY_S = 3600.0


class SignalHealth:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.problems = Counter(
            "tieragent_signal_problems",
            "Samples with a signal-health problem, by cause: " + "; ".join(
                f"{cause}: {meaning}" for cause, meaning in CAUSES.items()),
            ["device", "signal", "cause"], registry=registry)
        self.active = Gauge(
            "tieragent_signal_problem_active",
            "1 while the signal's latest sample has the problem (not for counter_reset).",
            ["device", "signal", "cause"], registry=registry)
        self._active: dict[IssueKey, str] = {}  # key -> detail, while active
        self._event_logged: dict[IssueKey, tuple[float, int]] = {}  # last line, count since

    def update(self, batch: Iterable[IssueEvent]) -> None:
        for event in batch:
            key = event.key
            labels = (key.device_id, key.signal_id, key.cause)
            if event.count:
                self.problems.labels(*labels).inc(event.count)
            if key.cause in EVENT_CAUSES:
                if event.count:
                    self._log_event(key, event.count)
                continue
            if event.active and key not in self._active:
                self._active[key] = event.detail
                self.active.labels(*labels).set(1)
                log.warning(
                    "Device %s signal %s: %s (%s).", key.device_id, key.signal_id,
                    CAUSES[key.cause], event.detail or "no detail",
                    extra={"fields": {"device": key.device_id, "signal": key.signal_id,
                                      "cause": key.cause, "detail": event.detail}})
            elif not event.active and key in self._active:
                del self._active[key]
                self.active.labels(*labels).set(0)
                log.info("Device %s signal %s: recovered from %s.", key.device_id,
                         key.signal_id, key.cause,
                         extra={"fields": {"device": key.device_id, "signal": key.signal_id,
                                           "cause": key.cause}})

    def _log_event(self, key: IssueKey, count: int) -> None:
        now = time.monotonic()
        last, pending = self._event_logged.get(key, (-EVENT_LOG_EVERY_S, 0))
        pending += count
        if now - last < EVENT_LOG_EVERY_S:
            self._event_logged[key] = (last, pending)
            return
        self._event_logged[key] = (now, 0)
        log.warning("Device %s signal %s: %s (%d time(s) since the last such line).",
                    key.device_id, key.signal_id, CAUSES[key.cause], pending,
                    extra={"fields": {"device": key.device_id, "signal": key.signal_id,
                                      "cause": key.cause, "count": pending}})

    def active_problems(self) -> list[tuple[IssueKey, str]]:
        """The problems active now (for /healthz's body and `status`)."""
        return sorted(self._active.items(), key=lambda item: (
            item[0].device_id, item[0].signal_id, item[0].cause))
