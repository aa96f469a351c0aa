"""Signal health: what the derivation saw that a correct configuration and a healthy source
would not produce. Nothing is clipped or dropped silently; each such sample is counted here,
per device, signal, cause and UTC hour, stored with the derived rows, shown in /metrics and
the log (agent.signal_health) and carried in each report's `data_quality` section.

Causes (the keys are part of the report's wire format):

- `unmapped_state`: a good state sample whose code is not in the signal's state map (its
  interval is `unknown`; the detail names the code);
- `bad_status`: a sample with bad quality from the source (the detail names the status);
- `counter_reset`: a counter that went backwards and was not a wrap (counted as a reset:
  its delta is the new value);
- `out_of_range`: a good value outside the signal's declared `valid_range`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.derive.device_plans import DevicePlan
from agent.derive.sample_columns import SampleColumns, as_float
from connectors.status import status_text
from indicators.vocabulary import Q_BAD

CAUSES: dict[str, str] = {
    "unmapped_state": "state code outside its state map",
    "bad_status": "bad status from the source",
    "counter_reset": "counter went backwards (not a wrap), counted as a reset",
    "out_of_range": "value outside the signal's valid_range",
}
HOUR_S = 3600


@dataclass(frozen=True, slots=True)
class IssueKey:
    device_id: str
    signal_id: str
    cause: str


@dataclass(slots=True)
class IssueTally:
    """Problem samples per hour since the last `take`, and each key's latest verdict
    (True: the signal's last relevant sample had the problem) for loss/recovery logging."""

    hourly: dict[tuple[IssueKey, int], int] = field(default_factory=dict)
    details: dict[IssueKey, str] = field(default_factory=dict)
    latest: dict[IssueKey, bool] = field(default_factory=dict)

    def record(
        self, key: IssueKey, problem: npt.NDArray[np.bool_], event_times: npt.NDArray[np.float64],
        detail: str | None = None,
    ) -> None:
        """`problem` marks, among samples judged for this cause (in event-time order), those
        that have it; `detail` describes the last problem sample."""
        if len(problem) == 0:
            return
        self.latest[key] = bool(problem[-1])
        if not problem.any():
            return
        hours = (np.floor(event_times[problem] / HOUR_S) * HOUR_S).astype(np.int64)
        unique, counts = np.unique(hours, return_counts=True)
        for hour, count in zip(unique.tolist(), counts.tolist(), strict=True):
            self.hourly[(key, hour)] = self.hourly.get((key, hour), 0) + count
        if detail is not None:
            self.details[key] = detail

    def rows(self) -> list[tuple[str, str, str, int, int, str]]:
        """(device_id, signal_id, cause, hour_start, count, detail) for the store."""
        return [
            (key.device_id, key.signal_id, key.cause, hour, count, self.details.get(key, ""))
            for (key, hour), count in sorted(
                self.hourly.items(), key=lambda item: (item[0][0].device_id,
                                                       item[0][0].signal_id, item[0][0].cause,
                                                       item[0][1]))
        ]

    def clear(self) -> None:
        self.hourly.clear()
        self.details.clear()
        self.latest.clear()


@dataclass(frozen=True, slots=True)
class IssueEvent:
    """What one committed batch said about one (device, signal, cause)."""

    key: IssueKey
    count: int  # problem samples in the batch
    detail: str
    active: bool  # the last relevant sample had the problem


def events(tally: IssueTally) -> list[IssueEvent]:
    """The tally as one event per key (for metrics and logging after the commit)."""
    counts: dict[IssueKey, int] = {}
    for (key, _hour), count in tally.hourly.items():
        counts[key] = counts.get(key, 0) + count
    return [
        IssueEvent(key, counts.get(key, 0), tally.details.get(key, ""), active)
        for key, active in tally.latest.items()
    ]


def unmapped_states(
    tally: IssueTally, device_id: str, signal_id: str, mapping: Mapping[int, int],
    codes: npt.NDArray[np.int64], values: npt.NDArray[Any], good: npt.NDArray[np.bool_],
    event_times: npt.NDArray[np.float64],
) -> None:
    """Record the good state samples whose code (`codes`, from `values`) is not mapped."""
    unmapped = ~np.isin(codes[good], np.fromiter(mapping, np.int64, len(mapping)))
    detail = None
    if unmapped.any():
        detail = f"code {values[good][unmapped][-1]!r} not in the state map"
    tally.record(IssueKey(device_id, signal_id, "unmapped_state"), unmapped,
                 event_times[good], detail)


class IssueJudge:
    """Judges a device's samples for bad statuses and values outside their valid_range.

    Remembers, per device and cause, the signals whose last judged sample had the problem,
    so that they are judged again when their samples come back and a recovery is seen
    (in memory only: after a restart a problem that persists is reported afresh)."""

    def __init__(self) -> None:
        self._active: dict[tuple[str, str], set[int]] = {}

    def statuses_and_ranges(
        self, tally: IssueTally, device_id: str, plan: DevicePlan,
        position: npt.NDArray[np.int64], cols: SampleColumns,
        event_times: npt.NDArray[np.float64],
    ) -> None:
        known = position >= 0
        bad = cols.quality == Q_BAD
        self._judge(tally, device_id, plan, "bad_status", position, known, bad, event_times,
                    lambda i: status_text(int(cols.status[i])))
        if plan.valid_range is None:
            return
        low, high = plan.valid_range
        ranged = known & ~bad
        ranged[ranged] = np.isfinite(low[position[ranged]])
        if not ranged.any():
            return
        values = np.full(len(position), np.nan)
        values[ranged] = as_float(cols.value[ranged])
        at = np.where(ranged, position, 0)
        inside = (values >= low[at]) & (values <= high[at])  # NaN, a string: outside
        self._judge(
            tally, device_id, plan, "out_of_range", position, ranged, ranged & ~inside,
            event_times, lambda i: f"value {cols.value[i]!r} outside "
            f"[{low[position[i]]:g}, {high[position[i]]:g}]",
        )

    def _judge(
        self, tally: IssueTally, device_id: str, plan: DevicePlan, cause: str,
        position: npt.NDArray[np.int64], judged: npt.NDArray[np.bool_],
        problem: npt.NDArray[np.bool_], event_times: npt.NDArray[np.float64],
        detail: Callable[[int], str],
    ) -> None:
        """Record `cause` for each signal with a problem sample, or whose problem was active."""
        active = self._active.setdefault((device_id, cause), set())
        flagged = judged & problem
        if not flagged.any() and not active:
            return
        for signal_position in {*np.unique(position[flagged]).tolist(), *active}:
            mask = judged & (position == signal_position)
            if not mask.any():
                continue
            last = np.flatnonzero(mask & problem)
            key = IssueKey(device_id, plan.signal_ids[signal_position], cause)
            tally.record(key, problem[mask], event_times[mask],
                         detail(int(last[-1])) if len(last) else None)
            if problem[mask][-1]:
                active.add(signal_position)
            else:
                active.discard(signal_position)
