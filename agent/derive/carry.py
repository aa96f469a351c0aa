"""What the derivation remembers between feeds (`DeviceCarry`, persisted by the store in the
same transaction as the samples) and the rows it produces (`Derived`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from agent.derive.device_plans import UNKNOWN
from agent.derive.issues import IssueTally
from agent.derive.slots import NO_SLOT, SlotCarry

if TYPE_CHECKING:
    import pandas as pd

IntArray = npt.NDArray[np.int64]


@dataclass(slots=True)
class CounterCarry:
    last_value: float
    last_ts: float


@dataclass(slots=True)
class DeviceCarry:
    """Everything derivation remembers about a device between calls (persisted as JSON)."""

    start: float  # measured since
    cursor: float  # derived up to here
    open_start: float  # start of the open interval
    slots: SlotCarry
    state: int = UNKNOWN
    auto: int = 0
    counters: dict[str, CounterCarry] = field(default_factory=dict)
    dirty_hours: set[int] = field(default_factory=set)  # touched, not yet materialised
    state_seen: float | None = None  # last polled state sample, until it expires
    auto_seen: float | None = None
    # Latest event time seen per counter / state / auto signal, before clamping to the
    # cursor: a sample older than that describes the past and is skipped (see `feed`).
    latest: dict[str, float] = field(default_factory=dict)
    ideal_s: float | None = None  # the ideal cycle time signal's last good value

    def to_json(self) -> dict[str, Any]:
        return {
            "start": self.start, "cursor": self.cursor, "open_start": self.open_start,
            "state": self.state, "auto": self.auto, "dirty_hours": sorted(self.dirty_hours),
            "state_seen": self.state_seen, "auto_seen": self.auto_seen,
            "counters": {k: [c.last_value, c.last_ts] for k, c in self.counters.items()},
            "slots": self.slots.to_json(), "latest": self.latest, "ideal_s": self.ideal_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> DeviceCarry:
        if "signals" in data:  # first format: [value, ts, slot, known, source] per signal
            per_signal: dict[str, list[Any]] = data["signals"]
            rows = list(per_signal.values())
            counters = {
                k: CounterCarry(v[0], v[1]) for k, v in per_signal.items() if v[0] is not None
            }
            slots = SlotCarry(
                tuple(per_signal),
                np.array([NO_SLOT if v[2] is None else v[2] for v in rows], np.int64),
                np.array([bool(v[3]) for v in rows], bool),
                np.array([bool(v[4]) for v in rows], bool),
                np.array([bool(v[4]) for v in rows], bool),  # held slots were on time then
            )
        else:
            counters = {k: CounterCarry(*v) for k, v in data["counters"].items()}
            slots = SlotCarry.from_json(data["slots"])
        return cls(
            start=data["start"], cursor=data["cursor"], open_start=data["open_start"],
            slots=slots, state=data["state"], auto=data["auto"], counters=counters,
            dirty_hours=set(data["dirty_hours"]), state_seen=data["state_seen"],
            auto_seen=data["auto_seen"], latest=dict(data.get("latest", {})),
            ideal_s=data.get("ideal_s"),
        )

    def copy(self) -> DeviceCarry:
        return DeviceCarry(
            start=self.start, cursor=self.cursor, open_start=self.open_start,
            slots=self.slots.copy(), state=self.state, auto=self.auto,
            counters={k: CounterCarry(c.last_value, c.last_ts) for k, c in self.counters.items()},
            dirty_hours=set(self.dirty_hours), state_seen=self.state_seen,
            auto_seen=self.auto_seen, latest=dict(self.latest), ideal_s=self.ideal_s,
        )


COUNT_FIELDS = ("samples_expected", "samples_received", "samples_on_time",
                "samples_with_source_ts", "samples_bad")


@dataclass(slots=True)
class Derived:
    """Rows produced since the last `take`, ready for insertion."""

    intervals: list[tuple[str, float, float, str, int]] = field(default_factory=list)
    deltas: list[tuple[str, str, float, float, float]] = field(default_factory=list)
    # (device_id, hours, {COUNT_FIELDS index: per-row values}); summed in `counts`. Plain
    # arrays, not a DataFrame per call: live ingest adds thousands of tiny parts per commit.
    count_parts: list[tuple[str, IntArray, dict[int, npt.NDArray[Any]]]] = field(
        default_factory=list
    )
    issues: IssueTally = field(default_factory=IssueTally)  # signal health (derive.issues)

    def add_counts(
        self, device_id: str, hours: IntArray, columns: Sequence[int], values: Sequence[IntArray]
    ) -> None:
        """Add per-row `values` (one array per column index) into their hours' counts."""
        if len(hours) == 0:
            return
        hours = np.asarray(hours, np.int64)
        by_column: dict[int, npt.NDArray[Any]] = {}
        for column, value in zip(columns, values, strict=True):
            array = np.asarray(value)
            by_column[column] = (
                array if array.shape == hours.shape else np.broadcast_to(array, hours.shape)
            )
        self.count_parts.append((device_id, hours, by_column))

    def count_rows(self) -> list[tuple[Any, ...]]:
        """Summed counts per (device_id, hour_start), sorted by both: (device_id,
        hour_start, *COUNT_FIELDS) as Python ints. Numpy only: the collecting process
        writes these every commit and does not load pandas."""
        parts: dict[str, list[tuple[IntArray, dict[int, npt.NDArray[Any]]]]] = {}
        for device, hours, columns in self.count_parts:
            parts.setdefault(device, []).append((hours, columns))
        rows: list[tuple[Any, ...]] = []
        for device in sorted(parts):
            hours = np.concatenate([h for h, _ in parts[device]])
            unique_hours, inverse = np.unique(hours, return_inverse=True)
            sums = np.zeros((len(COUNT_FIELDS), len(unique_hours)), np.int64)
            for index in range(len(COUNT_FIELDS)):
                values = [
                    columns[index] if index in columns else np.zeros(len(h), np.int64)
                    for h, columns in parts[device]
                ]
                # bincount sums in float64: exact, counts stay far below 2**53
                sums[index] = np.bincount(inverse, weights=np.concatenate(values),
                                          minlength=len(unique_hours)).astype(np.int64)
            rows.extend(
                (device, hour, *sums[:, n].tolist())
                for n, hour in enumerate(unique_hours.tolist())
            )
        return rows

    def counts(self) -> pd.DataFrame:
        """`count_rows` as a frame, all COUNT_FIELDS as int64."""
        import pandas as pd

        columns = ["device_id", "hour_start", *COUNT_FIELDS]
        if not self.count_parts:
            return pd.DataFrame(columns=columns)
        frame = pd.DataFrame.from_records(self.count_rows(), columns=columns)
        return frame.astype({name: np.int64 for name in columns[1:]})
