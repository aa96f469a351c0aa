"""Wall-clock sanity for a long-running agent (docs/reliability.md §c rows C1 and C2).

Timers, timeouts and backoff use `time.monotonic()`; sample and report times use the wall
clock. Two things can go wrong with them on a gateway:

- C2: under libfaketime without `FAKETIME_DONT_FAKE_MONOTONIC=1`, the monotonic clock is
  faked too and reads like a wall-clock epoch (≈ 1.9e9 s, where a real one counts seconds
  since boot). Nothing breaks at once, but a later fake jump would move the timers as well.
  `faked_monotonic` names that at start.
- C1: NTP stepping the clock, an operator's `date -s`, a VM resumed after days. A step shows
  as a change of `wall - monotonic`, which is constant while both clocks run. `ClockWatch`
  compares it at every check (twice a second in `run`), so a jump is logged and counted
  within a second; slews below `threshold_s` are normal NTP work and stay silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

log = logging.getLogger("tieragent.clock")

# No real machine has been up for 30 years, and a monotonic clock within a day of the wall
# clock's epoch seconds is the libfaketime signature.
MAX_PLAUSIBLE_UPTIME_S = 30 * 365 * 86400.0
JUMP_THRESHOLD_S = 2.0


def faked_monotonic(wall_s: float, monotonic_s: float) -> str | None:
    """Why the monotonic clock looks faked, or None when it looks like time since boot."""
    if monotonic_s > MAX_PLAUSIBLE_UPTIME_S or abs(wall_s - monotonic_s) < 86400.0:
        return (f"the monotonic clock reads {monotonic_s:.0f} s, like a wall-clock epoch, not "
                "time since boot: it is faked (libfaketime without "
                "FAKETIME_DONT_FAKE_MONOTONIC=1?). Timers and backoff then move with every "
                "faked time change; do not run the agent like this in production")
    return None


class ClockWatch:
    """Detects steps of the wall clock against the monotonic clock."""

    def __init__(self, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 threshold_s: float = JUMP_THRESHOLD_S) -> None:
        self._wall = wall
        self._monotonic = monotonic
        self.threshold_s = threshold_s
        self._offset = wall() - monotonic()
        self.jumps = 0
        self.last_jump_s = 0.0

    def check(self) -> float | None:
        """The size of a wall-clock step since the last check (seconds, signed), or None."""
        offset = self._wall() - self._monotonic()
        step = offset - self._offset
        if abs(step) < self.threshold_s:
            return None
        self._offset = offset
        self.jumps += 1
        self.last_jump_s = step
        direction = "forward" if step > 0 else "backward"
        log.warning("The wall clock jumped %s by %.1f s; timers are unaffected (monotonic), "
                    "sample times after this point follow the new clock.", direction,
                    abs(step), extra={"fields": {"clock_jump_s": round(step, 3)}})
        return step


async def watch_clock(clock_watch: ClockWatch, stop: asyncio.Event,
                      on_jump: Callable[[float], None], interval_s: float = 0.5) -> None:
    """Check the clock every `interval_s` until `stop` is set; `on_jump` gets each step."""
    while not stop.is_set():
        step = clock_watch.check()
        if step is not None:
            on_jump(step)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
