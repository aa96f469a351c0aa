"""Data-collection rates (docs/indicators.md §3): collection, real-time and quality rates of
samples."""

from __future__ import annotations

from collections.abc import Mapping

from indicators.catalog import INSUFFICIENT_DATA, IndicatorValue, defined, undefined


def data_rates(t: Mapping[str, float]) -> list[IndicatorValue]:
    expected, received = t["samples_expected"], t["samples_received"]
    on_time, with_ts, bad = t["samples_on_time"], t["samples_with_source_ts"], t["samples_bad"]
    out = []
    for key, numerator, denominator, inputs in (
        (
            "data_collection_rate",
            received,
            expected,
            {"samples_received": received, "samples_expected": expected},
        ),
        (
            "realtime_rate",
            on_time,
            with_ts,
            {"samples_on_time": on_time, "samples_with_source_ts": with_ts},
        ),
        (
            "data_quality_rate",
            received - bad,
            received,
            {"samples_received": received, "samples_bad": bad},
        ),
    ):
        if denominator <= 0:
            out.append(undefined(key, INSUFFICIENT_DATA, inputs))
        else:
            out.append(defined(key, numerator / denominator, inputs))
    return out
