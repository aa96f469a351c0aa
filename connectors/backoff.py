"""Capped exponential backoff with full jitter, shared by every connector's reconnect loop.

Full jitter (delay drawn uniformly from [0, ceiling]) spreads the reconnects of many
gateways after a common outage, instead of having them hammer a restarted server in step.
"""

from __future__ import annotations

import random


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
