"""Raw-data segments of a period and their leaf hashes (agent.protocol.merkle), vectorised.

`segment_digests(raw)` hashes a `Store.raw_samples` frame; `period_digests(store, start,
end)` gives the same digests from a lighter read (agent.store.report_reads) when every value
of the period is a plain number (the usual case), and otherwise falls back to the frame.
Both share `_leaf_digests`, so they cannot drift apart; tests hold them to
`agent.protocol.merkle.segment_digest` of each segment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import pandas as pd

from agent.protocol.envelope import canonical_bytes
from agent.protocol.merkle import RECORD, Segment
from agent.store.report_reads import RawColumns
from indicators.vocabulary import Q_BAD, Q_GOOD, QUALITY_NAMES

# Plain numbers read back as they were stored only within +-2^53 (beyond, a float64 column
# would round an integer, and the frame path keeps Python ints instead).
_EXACT = float(2**53)


def segments(raw: pd.DataFrame) -> Iterator[Segment]:
    """Raw samples grouped into (device, signal, UTC hour) segments (agent.protocol.merkle)."""
    if raw.empty:
        return
    hour = (raw["source_ts"].to_numpy(np.float64) // 3600).astype(np.int64) * 3600
    frame = raw.assign(hour_start=hour)
    for keys, group in frame.groupby(["device_id", "signal_id", "hour_start"], sort=True):
        device_id, signal_id, hour_start = cast(tuple[str, str, int], keys)
        rows = tuple(
            (
                float(s), float(r), str(signal_id), _plain(v),
                QUALITY_NAMES.get(int(q), QUALITY_NAMES[Q_BAD]),
            )
            for s, r, v, q in zip(
                group["source_ts"], group["received_ts"], group["value"], group["quality"],
                strict=True,
            )
        )
        yield Segment(str(device_id), str(signal_id), int(hour_start), rows)


def _plain(value: Any) -> Any:
    """Numpy scalars to plain Python values for canonical JSON."""
    if isinstance(value, np.generic):
        return value.item()
    return value


def segment_digests(raw: pd.DataFrame) -> list[bytes]:
    """Leaf hashes of every segment of `raw`, in leaf order; vectorised.

    Produces exactly `segment_digest(segment)` for each segment of `segments(raw)` (a test
    holds the two to the same bytes) at a fraction of the cost.
    """
    if raw.empty:
        return []
    devices = pd.Categorical(raw["device_id"].astype(str))
    signals = pd.Categorical(raw["signal_id"].astype(str))
    values = pd.to_numeric(raw["value"], errors="coerce").to_numpy(np.float64)
    non_numeric = np.asarray(raw["value"].map(lambda v: not isinstance(v, int | float | np.number)))
    return _leaf_digests(
        np.asarray(devices.codes), np.asarray(devices.categories, dtype=object),
        np.asarray(signals.codes), np.asarray(signals.categories, dtype=object),
        raw["source_ts"].to_numpy(np.float64), raw["received_ts"].to_numpy(np.float64),
        np.where(non_numeric, np.nan, values), raw["quality"].to_numpy(np.int64),
        non_numeric, raw["value"].to_numpy(object),
    )


def column_digests(cols: RawColumns) -> list[bytes] | None:
    """The digests of `cols`, or None when a value is not a plain number.

    The frame path's value column is pandas' inference over the whole period; when every
    value is an int or float within +-2^53 or None (and not all None), that inference is a
    float64 column with NaN for None, and every value counts as numeric. Anything else (a
    string, a tagged BLOB, a huge integer) is left to the frame path.
    """
    if len(cols) == 0:
        return []
    kinds = set(map(type, cols.value))
    if not kinds <= {float, int, type(None)}:
        return None
    values = np.array(cols.value, dtype=np.float64)  # None -> NaN
    if type(None) in kinds and bool(np.isnan(values).all()):
        return None
    if int in kinds and bool((np.abs(values) >= _EXACT).any()):
        return None
    device_names = sorted(set(cols.device_names))
    rank = {name: code for code, name in enumerate(device_names)}
    device_codes = np.repeat(
        np.array([rank[name] for name in cols.device_names], dtype=np.int64),
        np.array(cols.device_rows, dtype=np.int64),
    )
    signal_codes, signal_names = pd.factorize(np.array(cols.signal_id, dtype=object), sort=True)
    return _leaf_digests(
        device_codes, np.array(device_names, dtype=object),
        signal_codes, np.asarray(signal_names, dtype=object),
        cols.source_ts, cols.received_ts, values, cols.quality,
        np.zeros(len(cols), dtype=bool), None,
    )


def _leaf_digests(
    device_codes: npt.NDArray[Any], device_names: npt.NDArray[np.object_],
    signal_codes: npt.NDArray[Any], signal_names: npt.NDArray[np.object_],
    source_ts: npt.NDArray[np.float64], received_ts: npt.NDArray[np.float64],
    values: npt.NDArray[np.float64], quality: npt.NDArray[np.int64],
    non_numeric: npt.NDArray[np.bool_], raw_values: npt.NDArray[np.object_] | None,
) -> list[bytes]:
    """Leaf hashes in leaf order (hour, device, signal); codes rank names in sorted order,
    and rows of one segment keep their input order among equal timestamps."""
    hour = (source_ts // 3600).astype(np.int64) * 3600
    order = np.lexsort((received_ts, source_ts, signal_codes, device_codes, hour))
    records = np.zeros(len(order), dtype=RECORD)
    records["source_ts"] = source_ts[order]
    records["received_ts"] = received_ts[order]
    records["value"] = values[order]
    records["q"] = quality[order].clip(Q_GOOD, Q_BAD)
    hour, device_codes, signal_codes = hour[order], device_codes[order], signal_codes[order]
    changed = (hour[1:] != hour[:-1]) | (device_codes[1:] != device_codes[:-1]) | (
        signal_codes[1:] != signal_codes[:-1]
    )
    starts = np.flatnonzero(np.r_[True, changed])
    ends = np.r_[starts[1:], len(order)]
    sorted_non_numeric = non_numeric[order]
    any_non_numeric = bool(non_numeric.any())
    sorted_values = raw_values[order] if raw_values is not None and any_non_numeric else None
    data = memoryview(records.tobytes())
    size = RECORD.itemsize
    digests: list[bytes] = []
    for first, last, hour_start, device_code, signal_code in zip(
        starts.tolist(), ends.tolist(), hour[starts].tolist(), device_codes[starts].tolist(),
        signal_codes[starts].tolist(), strict=True,
    ):
        # leaf_hash(segment_header(...) + records [+ canonical values]), without the copies
        leaf = hashlib.sha256(
            f"\x00tieragent-segment/v1\n{device_names[device_code]}\n"
            f"{signal_names[signal_code]}\n{hour_start}\n".encode()
        )
        leaf.update(data[first * size:last * size])
        if sorted_values is not None and sorted_non_numeric[first:last].any():
            leaf.update(canonical_bytes([_plain(v) for v in sorted_values[first:last]]))
        digests.append(leaf.digest())
    return digests
