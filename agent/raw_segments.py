"""Raw-data segments of the first rule (`tieragent-segment/v1`, agent.protocol.merkle), for
reports signed before raw data was sealed.

Such a report's segments were never stored: `tieragent evidence export` recomputes them
from the live samples of its period (`segments(Store.raw_samples(start, end))`), as it always
did. Reports of the current rule read their sealed segments instead (agent.store.sealed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

import numpy as np
import pandas as pd

from agent.protocol.merkle import Segment
from indicators.vocabulary import Q_BAD, QUALITY_NAMES


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
