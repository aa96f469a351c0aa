"""The local-day calendar returns only the days that hold rows, on both of its paths."""

from __future__ import annotations

import numpy as np
import pandas as pd

from indicators.catalog import Params
from indicators.inventory_rates import _device_days
from indicators.local_days import local_day_index

TZ = "Asia/Shanghai"
FIRST_MIDNIGHT_UTC = 16 * 3600  # 1970-01-02 00:00 in Shanghai


def test_days_without_rows_are_not_days_of_the_period() -> None:
    hours = np.array([0, 1, 10 * 24, 10 * 24 + 2], dtype=np.int64) * 3600 + FIRST_MIDNIGHT_UTC
    days, index = local_day_index(hours.copy(), TZ)
    assert days[1] - days[0] == 10
    assert len(days) == 2
    assert index.tolist() == [0, 0, 1, 1]


def test_dense_and_sparse_paths_agree() -> None:
    rng = np.random.default_rng(7)
    chosen = np.sort(rng.choice(365, size=40, replace=False))
    hours = (chosen * 24 + rng.integers(0, 24, size=40)) * 3600 + FIRST_MIDNIGHT_UTC
    dense_days, dense_index = local_day_index(hours.astype(np.int64), TZ)
    # The sparse path runs when the span is far larger than the rows: one row years away.
    far = np.append(hours, hours[-1] + 200 * 365 * 86400).astype(np.int64)
    sparse_days, sparse_index = local_day_index(far, TZ)
    assert dense_days.tolist() == sparse_days[:-1].tolist()
    assert dense_index.tolist() == sparse_index[:-1].tolist()


def test_a_missing_day_does_not_count_as_a_day_not_networked() -> None:
    """Two days with data ten days apart: the device was networked on both, so on every day
    of the period that has data (the eight days between have no report at all)."""
    rows = [
        {"device_id": "m1", "hour_start": FIRST_MIDNIGHT_UTC + day * 86400,
         "samples_expected": 3600, "samples_received": 3600, "apt_s": 3600.0,
         "auto_apt_s": 3600.0}
        for day in (0, 10)
    ]
    result = _device_days(pd.DataFrame(rows), ["m1"], Params(time_zone=TZ))
    assert result.n_days == 2
    assert result.networked.tolist() == [2]
