"""ISO 22400-2 time model: state intervals, counter deltas, sample counts -> hourly base measures.

Pure and vectorised: intervals are split at hour boundaries with numpy (no per-interval Python
loop) and summed with `np.bincount` in a fixed order, so the same input gives the same output bit
for bit. Hours are UTC (`hour_start` is a multiple of 3600). See docs/indicators.md §1.

State -> element (default policy, docs/indicators.md §6.1):
    running -> APT, setup -> ASUT, unplanned_stop -> ADET, idle -> ADOT, planned_stop -> PDT,
    unknown -> UNK, offline -> ADET when the last known state was producing
    (running / setup / unplanned_stop), otherwise ADOT.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from indicators.columns import (
    BASE_MEASURE_COLUMNS,
    COUNT_COLUMNS,
    DELTA_COLUMNS,
    HOUR_S,
    INTERVAL_COLUMNS,
    TIME_COLUMNS,
)
from indicators.vocabulary import (
    DELTA_ROLES,
    IDEAL_TIME,
    INTERVAL_STATES,
    REWORK_COUNT,
    UNKNOWN_STATE,
    Role,
    State,
)

# Element columns that state intervals fill, in the order of their codes below.
_ELEMENTS: tuple[str, ...] = ("pdt_s", "apt_s", "asut_s", "adet_s", "adot_s", "unk_s")
_PDT, _APT, _ASUT, _ADET, _ADOT, _UNK = range(len(_ELEMENTS))
_STATE_ELEMENT: dict[str, int] = {
    State.PLANNED_STOP.value: _PDT,
    State.RUNNING.value: _APT,
    State.SETUP.value: _ASUT,
    State.UNPLANNED_STOP.value: _ADET,
    State.IDLE.value: _ADOT,
    UNKNOWN_STATE: _UNK,
}
_PRODUCING = frozenset({State.RUNNING.value, State.SETUP.value, State.UNPLANNED_STOP.value})
KNOWN_STATES = frozenset(INTERVAL_STATES)
SAMPLE_COUNT_COLUMNS: tuple[str, ...] = (
    "samples_expected",
    "samples_received",
    "samples_on_time",
    "samples_with_source_ts",
    "samples_bad",
)

Column = npt.NDArray[Any]
FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def base_measures(
    intervals: pd.DataFrame,
    deltas: pd.DataFrame,
    sample_counts: pd.DataFrame,
    ideal_cycle_time_s: Mapping[str, float],
    *,
    min_failure_s: float = 0.0,
) -> pd.DataFrame:
    """One row of additive base measures per device and UTC hour (BASE_MEASURE_COLUMNS).

    `intervals` [start, end) in epoch seconds; overlapping intervals of one device are clipped so
    that no second is counted twice (the later interval loses the overlap). `deltas` belong to the
    hour h with h*3600 < end <= (h+1)*3600. `sample_counts` are already hourly. Ideal time is the
    sum of `ideal_time_s` deltas (measured with an ideal-cycle-time signal) in a device-hour
    that has them, else `ideal_cycle_time_s` x PQ; devices missing from it get no declared
    ideal time. Inputs are never mutated.

    Raises ValueError (one sentence naming the column) on missing columns, unknown states or
    roles, end < start, or negative deltas.
    """
    iv = _clean_intervals(intervals)
    dl = _clean_deltas(deltas)
    sc = _clean_sample_counts(sample_counts)

    device_ids = sorted(
        {*iv["device_id"].unique(), *dl["device_id"].unique(), *sc["device_id"].unique()}
    )
    if not device_ids:
        return _empty()
    codes = {device: code for code, device in enumerate(device_ids)}

    time_part = _time_elements(iv, codes, min_failure_s)
    count_part = _counts(dl, codes)
    sample_part = _sample_counts(sc, codes)

    keys = np.concatenate([time_part[0], count_part[0], sample_part[0]])
    unique_keys, inverse = np.unique(keys, return_inverse=True)
    n_rows = len(unique_keys)
    out: dict[str, Column] = {}
    offset = 0
    for part_keys, columns in (time_part, count_part, sample_part):
        rows = inverse[offset : offset + len(part_keys)]
        offset += len(part_keys)
        for name, values in columns.items():
            target = out.setdefault(name, np.zeros(n_rows, dtype=values.dtype))
            # Each part has unique keys already, so plain assignment is exact.
            target[rows] = values

    device_code = unique_keys // _HOURS_SPAN
    hour = unique_keys % _HOURS_SPAN
    frame: dict[str, object] = {
        "device_id": np.asarray(device_ids, dtype=object)[device_code],
        "hour_start": (hour * HOUR_S).astype(np.int64),
    }
    for name in BASE_MEASURE_COLUMNS[2:]:
        default_dtype = np.int64 if name in COUNT_COLUMNS else np.float64
        frame[name] = out.get(name, np.zeros(n_rows, dtype=default_dtype))
    result = pd.DataFrame(frame)
    ict = np.array([float(ideal_cycle_time_s.get(d, 0.0)) for d in device_ids], dtype=np.float64)
    # Ideal time from `ideal_time_s` deltas (an ideal-cycle-time signal, per piece) where the
    # device-hour has them, else the declared ideal cycle time x PQ.
    declared = ict[device_code] * result["produced"].to_numpy(np.float64)
    measured = out.get("ideal_measured", np.zeros(n_rows, dtype=bool))
    result["ideal_time_s"] = np.where(measured, result["ideal_time_s"].to_numpy(), declared)
    # POT is the sum of its parts, so the identities hold for every row by construction.
    result["pot_s"] = (
        result["pdt_s"]
        + result["apt_s"]
        + result["asut_s"]
        + result["adet_s"]
        + result["adot_s"]
        + result["unk_s"]
    )
    return result[list(BASE_MEASURE_COLUMNS)]


# Hours since the epoch stay far below this until the year 30000, so (device, hour) packs into
# one int64 key whose order is (device_id, hour_start).
_HOURS_SPAN = 10**8

_Part = tuple[IntArray, dict[str, Column]]


def _time_elements(iv: pd.DataFrame, codes: Mapping[str, int], min_failure_s: float) -> _Part:
    if iv.empty:
        return np.zeros(0, dtype=np.int64), {}
    device: IntArray = np.asarray(iv["device_id"].map(codes), dtype=np.int64)
    start = iv["start"].to_numpy(np.float64)
    end = iv["end"].to_numpy(np.float64)
    state = iv["state"].to_numpy(object)
    auto = iv["auto"].to_numpy(bool)
    same_device_as_prev = np.concatenate([[False], device[1:] == device[:-1]])

    element = _elements(iv, state)
    events = _unplanned_events(iv, device, start, end, state, same_device_as_prev, min_failure_s)

    first_hour = np.floor(start / HOUR_S).astype(np.int64)
    last_hour = np.ceil(end / HOUR_S).astype(np.int64) - 1
    pieces = last_hour - first_hour + 1
    source = np.repeat(np.arange(len(start)), pieces)
    step = np.arange(len(source)) - np.repeat(np.cumsum(pieces) - pieces, pieces)
    hour = first_hour[source] + step
    seconds = np.minimum(end[source], (hour + 1) * HOUR_S) - np.maximum(
        start[source], hour * HOUR_S
    )
    piece_key = device[source] * _HOURS_SPAN + hour

    keys, inverse = np.unique(np.concatenate([piece_key, events[0]]), return_inverse=True)
    piece_rows = inverse[: len(piece_key)]
    event_rows = inverse[len(piece_key) :]
    n = len(keys)
    piece_element = element[source]
    columns: dict[str, Column] = {}
    for code, name in enumerate(_ELEMENTS):
        mask = piece_element == code
        # bincount returns int64 when nothing matches, so fix the dtype.
        columns[name] = np.bincount(piece_rows[mask], weights=seconds[mask], minlength=n).astype(
            np.float64
        )
    auto_running = (piece_element == _APT) & auto[source]
    columns["auto_apt_s"] = np.bincount(
        piece_rows[auto_running], weights=seconds[auto_running], minlength=n
    ).astype(np.float64)
    columns["unplanned_stops"] = np.bincount(event_rows, minlength=n).astype(np.int64)
    columns["failures"] = np.bincount(event_rows[events[1]], minlength=n).astype(np.int64)
    return keys, columns


def _elements(iv: pd.DataFrame, state: npt.NDArray[np.object_]) -> IntArray:
    element = pd.Series(state).map(_STATE_ELEMENT).to_numpy()
    offline = state == State.OFFLINE.value
    if offline.any():
        # The last known (neither offline nor unknown) state before each row, per device.
        known = pd.Series(state).where(~np.isin(state, [State.OFFLINE.value, UNKNOWN_STATE]))
        previous = known.groupby(iv["device_id"].to_numpy()).shift(1)
        previous = previous.groupby(iv["device_id"].to_numpy()).ffill()
        producing = previous.isin(list(_PRODUCING)).to_numpy()
        element = np.where(offline, np.where(producing, _ADET, _ADOT), element)
    return element.astype(np.int64)


def _unplanned_events(
    iv: pd.DataFrame,
    device: IntArray,
    start: FloatArray,
    end: FloatArray,
    state: npt.NDArray[np.object_],
    same_device_as_prev: npt.NDArray[np.bool_],
    min_failure_s: float,
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """Unplanned stops as events: keys of their start hours and whether each is a failure.

    Adjacent unplanned_stop rows of one device are one stop (an hour split in the store must
    not double the stop count); its duration is the sum of its rows. A stop is a new event
    only when it was seen to begin: the last known state before it (neither unknown nor
    offline) is another state. A stop that is already there when the rows begin, or that
    follows unknown time after a known unplanned_stop (an agent restart, a link loss), began
    before: it is not counted again, while its time still counts as ADET.
    """
    stopped = state == State.UNPLANNED_STOP.value
    continues = np.concatenate([[False], stopped[:-1]]) & same_device_as_prev & stopped
    first = stopped & ~continues
    event_of_row = np.cumsum(first) - 1
    rows = np.flatnonzero(stopped)
    duration = np.bincount(event_of_row[rows], weights=(end - start)[rows])
    firsts = np.flatnonzero(first)
    groups = iv["device_id"].to_numpy()
    known = pd.Series(state).where(~np.isin(state, [State.OFFLINE.value, UNKNOWN_STATE]))
    before = known.groupby(groups).shift(1).groupby(groups).ffill().iloc[firsts]
    seen_begin = (before.notna() & (before != State.UNPLANNED_STOP.value)).to_numpy(bool)
    failure = duration[: len(firsts)] >= min_failure_s
    firsts = firsts[seen_begin]
    key = device[firsts] * _HOURS_SPAN + np.floor(start[firsts] / HOUR_S).astype(np.int64)
    return key, failure[seen_begin]


def _counts(dl: pd.DataFrame, codes: Mapping[str, int]) -> _Part:
    if dl.empty:
        return np.zeros(0, dtype=np.int64), {}
    device = dl["device_id"].map(codes).to_numpy(np.int64)
    hour = np.ceil(dl["end"].to_numpy(np.float64) / HOUR_S).astype(np.int64) - 1
    keys, rows = np.unique(device * _HOURS_SPAN + hour, return_inverse=True)
    role = dl["role"].to_numpy(object)
    delta = dl["delta"].to_numpy(np.float64)
    n = len(keys)

    def total(role_name: str) -> FloatArray:
        mask = role == role_name
        return np.bincount(rows[mask], weights=delta[mask], minlength=n).astype(np.float64)

    good = np.rint(total(Role.GOOD_COUNT.value)).astype(np.int64)
    scrap = np.rint(total(Role.REJECT_COUNT.value)).astype(np.int64)
    rework = np.rint(total(REWORK_COUNT)).astype(np.int64)
    counted = np.rint(total(Role.TOTAL_COUNT.value)).astype(np.int64)
    def has(role_name: str) -> npt.NDArray[np.bool_]:
        devices_with_role = np.zeros(len(codes), dtype=bool)
        devices_with_role[np.unique(device[role == role_name])] = True
        return devices_with_role[keys // _HOURS_SPAN]

    with_total = has(Role.TOTAL_COUNT.value)
    with_good, with_reject = has(Role.GOOD_COUNT.value), has(Role.REJECT_COUNT.value)
    produced = np.where(with_total, counted, good + scrap)
    # A machine counting total and rejects (or total and good) implies the third count.
    good = np.where(with_total & ~with_good & with_reject, produced - scrap, good)
    scrap = np.where(with_total & with_good & ~with_reject, produced - good, scrap)
    columns: dict[str, Column] = {
        "produced": produced,
        "good": good,
        "scrap": scrap,
        "rework": rework,
        "energy_kwh": total(Role.ENERGY_KWH.value),
        # Σ PRI x PQ where an ideal-cycle-time signal measured it (see base_measures).
        "ideal_time_s": total(IDEAL_TIME),
        "ideal_measured": np.bincount(rows[role == IDEAL_TIME], minlength=n) > 0,
    }
    return keys, columns


def _sample_counts(sc: pd.DataFrame, codes: Mapping[str, int]) -> _Part:
    if sc.empty:
        return np.zeros(0, dtype=np.int64), {}
    device = sc["device_id"].map(codes).to_numpy(np.int64)
    hour = sc["hour_start"].to_numpy(np.int64) // HOUR_S
    keys, rows = np.unique(device * _HOURS_SPAN + hour, return_inverse=True)
    columns: dict[str, Column] = {}
    for name in SAMPLE_COUNT_COLUMNS:
        values = sc[name].to_numpy(np.int64)
        columns[name] = np.bincount(rows, weights=values, minlength=len(keys)).astype(np.int64)
    return keys, columns


# --- input checks ---------------------------------------------------------------------------


def _require(frame: pd.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what}: missing column(s) {', '.join(missing)}")


def _clean_intervals(intervals: pd.DataFrame) -> pd.DataFrame:
    _require(intervals, INTERVAL_COLUMNS, "intervals")
    iv = intervals.loc[:, list(INTERVAL_COLUMNS)].copy()
    if iv.empty:
        return iv
    iv["device_id"] = iv["device_id"].astype(str)
    iv["state"] = iv["state"].astype(str)
    iv["start"] = iv["start"].astype(np.float64)
    iv["end"] = iv["end"].astype(np.float64)
    iv["auto"] = iv["auto"].fillna(False).astype(bool)
    unknown = sorted(set(iv["state"].unique()) - KNOWN_STATES)
    if unknown:
        raise ValueError(f"intervals.state: unknown state(s) {unknown}; use {sorted(KNOWN_STATES)}")
    if not (np.isfinite(iv["start"]).all() and np.isfinite(iv["end"]).all()):
        raise ValueError("intervals: start and end must be finite epoch seconds")
    if (iv["end"] < iv["start"]).any():
        raise ValueError("intervals: an interval ends before it starts (end < start)")
    iv = iv.sort_values(["device_id", "start", "end", "state"], kind="mergesort", ignore_index=True)
    # Clip overlaps so that every second of a device is attributed at most once.
    reach = iv.groupby("device_id", sort=False)["end"].cummax()
    previous_reach = reach.groupby(iv["device_id"], sort=False).shift(1)
    iv["start"] = np.fmax(iv["start"].to_numpy(), previous_reach.to_numpy(np.float64))
    return iv[iv["end"] > iv["start"]].reset_index(drop=True)


def _clean_deltas(deltas: pd.DataFrame) -> pd.DataFrame:
    _require(deltas, DELTA_COLUMNS, "deltas")
    dl = deltas.loc[:, list(DELTA_COLUMNS)].copy()
    if dl.empty:
        return dl
    dl["device_id"] = dl["device_id"].astype(str)
    dl["role"] = dl["role"].astype(str)
    unknown = sorted(set(dl["role"].unique()) - DELTA_ROLES)
    if unknown:
        raise ValueError(f"deltas.role: unknown role(s) {unknown}; use {sorted(DELTA_ROLES)}")
    if (dl["delta"] < 0).any():
        raise ValueError("deltas.delta: a counter delta is negative; resets must be resolved first")
    order = ["device_id", "end", "role", "start"]
    return dl.sort_values(order, kind="mergesort", ignore_index=True)


def _clean_sample_counts(sample_counts: pd.DataFrame) -> pd.DataFrame:
    columns = ("device_id", "hour_start", *SAMPLE_COUNT_COLUMNS)
    if sample_counts.empty and not set(columns) <= set(sample_counts.columns):
        return pd.DataFrame({c: [] for c in columns})
    _require(sample_counts, columns, "sample_counts")
    sc = sample_counts.loc[:, list(columns)].copy()
    sc["device_id"] = sc["device_id"].astype(str)
    if (sc["hour_start"].to_numpy(np.int64) % HOUR_S != 0).any():
        raise ValueError("sample_counts.hour_start: must be a multiple of 3600 (UTC hour start)")
    return sc.sort_values(["device_id", "hour_start"], kind="mergesort", ignore_index=True)


def _empty() -> pd.DataFrame:
    frame: dict[str, pd.Series] = {
        "device_id": pd.Series([], dtype=object),
        "hour_start": pd.Series([], dtype=np.int64),
    }
    for name in BASE_MEASURE_COLUMNS[2:]:
        dtype = np.int64 if name in COUNT_COLUMNS else np.float64
        frame[name] = pd.Series([], dtype=dtype)
    return pd.DataFrame(frame)


__all__ = ["HOUR_S", "KNOWN_STATES", "TIME_COLUMNS", "base_measures"]
