"""The wall clock of the `tieragent` processes: `time.time()`, or shifted for rehearsals.

`TIERAGENT_CLOCK_OFFSET_S` (seconds, may be negative) shifts the wall clock of `run`,
`sim serve` and `bureau serve` alike, so a whole chain can be rehearsed across a local
midnight or after days of downtime without waiting, and without libfaketime (whose
clock_nanosleep interposition breaks Python's `time.sleep`). Monotonic timers are not
shifted. Unset in production; a process that runs shifted says so in its log once.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

CLOCK_OFFSET_ENV = "TIERAGENT_CLOCK_OFFSET_S"
log = logging.getLogger("tieragent.clock")


class ClockOffsetInvalid(ValueError):
    """TIERAGENT_CLOCK_OFFSET_S is set but not a number."""


def clock_offset_s() -> float:
    raw = os.environ.get(CLOCK_OFFSET_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        return float(raw)
    except ValueError:
        raise ClockOffsetInvalid(
            f"{CLOCK_OFFSET_ENV}={raw!r} is not a number of seconds; unset it"
        ) from None


def wall_clock() -> Callable[[], float]:
    """`time.time`, or `time.time() + offset` when TIERAGENT_CLOCK_OFFSET_S is set."""
    offset = clock_offset_s()
    if offset == 0.0:
        return time.time
    log.warning("The wall clock is shifted by %s s (%s); for rehearsals and tests only.",
                offset, CLOCK_OFFSET_ENV)

    def shifted() -> float:
        return time.time() + offset

    return shifted
