"""Capped exponential backoff with full jitter, shared by every connector's reconnect loop.

Full jitter (delay drawn uniformly from [0, ceiling]) spreads the reconnects of many
gateways after a common outage, instead of having them hammer a restarted server in step.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable


class Backoff:
    """Delays for successive reconnect attempts; `reset()` after a healthy connection.

    The ceiling doubles from `min_s` up to `max_s`; each delay is uniform in [0, ceiling].
    Not thread-safe; one instance per connection loop.
    """

    def __init__(self, min_s: float, max_s: float, rng: random.Random | None = None) -> None:
        if min_s <= 0 or max_s < min_s:
            raise ValueError(f"backoff needs 0 < min_s <= max_s, got {min_s!r}, {max_s!r}")
        self._min_s = min_s
        self._max_s = max_s
        self._attempt = 0
        self._rng = rng or random.Random()

    def ceiling(self) -> float:
        """The largest delay the next call to `next_delay` can return, in seconds."""
        return min(self._max_s, self._min_s * 2.0 ** min(self._attempt, 62))

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; advances the attempt counter."""
        delay = self._rng.uniform(0.0, self.ceiling())
        self._attempt += 1
        return delay

    def reset(self) -> None:
        self._attempt = 0


class ReconnectSchedule:
    """The delays of one connection's reconnect loop, across outages (issue 16 item 4).

    - **At once.** The first attempt after a working session was lost is immediate.
    - **Fast window.** During the first `fast_window_s` of an outage the delay is uniform
      in [0, ceiling] (full jitter) with the ceiling = the outage's age so far, at least
      `min_s` and at most `fast_s`: a server back after a short outage is found within
      about as long as it was away, and any within `fast_s`. After the window the
      ceiling doubles from `fast_s` up to `max_s`.
    - **Refusals** (untrusted certificate, credentials: an operator must act) back off on
      their own, slower scale: from `fast_s` doubling up to `refused_max_s`, each delay
      uniform in [ceiling / 2, ceiling], so a wrong password is never tried in quick
      succession (lockout risk). Only `succeeded()` or `changed()` resets them.
    - `succeeded()` ends an outage (data flows again); `changed()` says the settings the
      refusal depends on (trust list, certificate, password) changed: try again at once.

    The clock is injectable (monotonic seconds), so tests check the schedule without
    sleeping. Not thread-safe; one instance per connection loop.
    """

    def __init__(
        self,
        *,
        min_s: float,
        fast_s: float,
        fast_window_s: float,
        max_s: float,
        refused_max_s: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        on_recovered: Callable[[float, int, int], None] | None = None,
    ) -> None:
        """`on_recovered(outage_s, attempts, refusals)` runs when `succeeded()` ends an
        outage."""
        if min_s <= 0 or fast_s <= 0 or fast_window_s < 0:
            raise ValueError(
                f"reconnect needs 0 < min_s, 0 < fast_s and 0 <= fast_window_s, got "
                f"{min_s!r}, {fast_s!r}, {fast_window_s!r}"
            )
        if max_s < min_s or refused_max_s < min_s:
            raise ValueError(f"reconnect caps must be >= min_s {min_s!r}")
        self.min_s = min_s
        self.fast_s = min(fast_s, max_s)
        self.fast_window_s = fast_window_s
        self.max_s = max_s
        self.refused_max_s = refused_max_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._on_recovered = on_recovered
        self.outage_started: float | None = None  # clock time of the first failure
        self.attempts = 0  # failed attempts in this outage
        self.refusals = 0  # refusals since the last success or change
        self._slow_attempts = 0  # transient failures after the fast window

    @property
    def in_outage(self) -> bool:
        return self.outage_started is not None

    def outage_s(self) -> float:
        """Seconds since the outage began (0 when there is none)."""
        return 0.0 if self.outage_started is None else self._clock() - self.outage_started

    def ceiling(self, refused: bool = False) -> float:
        """The largest delay the next `failed(refused)` can return."""
        if refused:
            base = max(self.fast_s, self.min_s)
            return min(self.refused_max_s, base * 2.0 ** min(self.refusals, 62))
        if self.attempts == 0:
            return 0.0
        outage = self.outage_s()
        if outage < self.fast_window_s:
            # Grows with the outage's age, not with the attempt count: refused connections
            # fail in a millisecond, and counting them doubled a ceiling to 8-16 s within
            # the first two seconds of a restart.
            return min(self.fast_s, max(self.min_s, outage))
        return min(self.max_s, max(self.fast_s, self.min_s) * 2.0 ** min(self._slow_attempts, 62))

    def failed(self, refused: bool = False) -> float:
        """Record a failed attempt (or a lost session); return the seconds to wait."""
        if self.outage_started is None:
            self.outage_started = self._clock()
        ceiling = self.ceiling(refused)
        if refused:
            delay = self._rng.uniform(ceiling / 2.0, ceiling)
            self.refusals += 1
        else:
            delay = self._rng.uniform(0.0, ceiling)
            if self.attempts and self.outage_s() >= self.fast_window_s:
                self._slow_attempts += 1
        self.attempts += 1
        return delay

    def succeeded(self) -> None:
        """Data flows again: the outage and any refusal streak are over."""
        if self.outage_started is None and not self.refusals:
            return  # the common case: called on every batch
        if self._on_recovered is not None:
            self._on_recovered(self.outage_s(), self.attempts, self.refusals)
        self.outage_started = None
        self.attempts = 0
        self.refusals = 0
        self._slow_attempts = 0

    # The connectors' collection loops call `reset()` on every batch, as with `Backoff`.
    reset = succeeded

    def changed(self) -> None:
        """The settings behind a refusal changed: the next attempt is not a repeat."""
        self.refusals = 0
