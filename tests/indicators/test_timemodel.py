"""The ISO 22400-2 time model: intervals, deltas and sample counts -> hourly base measures."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indicators.columns import BASE_MEASURE_COLUMNS, DELTA_COLUMNS, INTERVAL_COLUMNS
from indicators.timemodel import base_measures

H = 3600.0
T0 = 1_767_196_800.0  # 2026-01-01 00:00 Asia/Shanghai, an exact UTC hour
NO_DELTAS = pd.DataFrame(columns=list(DELTA_COLUMNS))
NO_SAMPLES = pd.DataFrame()


def intervals(*rows: tuple[str, float, float, str, bool]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(INTERVAL_COLUMNS))


def deltas(*rows: tuple[str, str, float, float, float]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(DELTA_COLUMNS))


def row(frame: pd.DataFrame, device: str, hour: float) -> pd.Series:
    match = frame[(frame["device_id"] == device) & (frame["hour_start"] == int(hour))]
    assert len(match) == 1
    return match.iloc[0]


def test_interval_across_hours_is_split_by_overlap() -> None:
    """If a running interval spans three hours, then each hour gets exactly its overlap."""
    iv = intervals(("m", T0 + 1800, T0 + 2 * H + 600, "running", True))
    base = base_measures(iv, NO_DELTAS, NO_SAMPLES, {})
    assert list(base.columns) == list(BASE_MEASURE_COLUMNS)
    assert base["hour_start"].tolist() == [int(T0), int(T0 + H), int(T0 + 2 * H)]
    assert base["apt_s"].tolist() == [1800.0, 3600.0, 600.0]
    assert base["pot_s"].tolist() == [1800.0, 3600.0, 600.0]
    assert base["auto_apt_s"].tolist() == [1800.0, 3600.0, 600.0]


def test_unknown_time_is_never_running() -> None:
    """If a span has no data (state unknown), then it is UNK inside PBT, not APT."""
    iv = intervals(("m", T0, T0 + 600, "running", False), ("m", T0 + 600, T0 + H, "unknown", False))
    r = row(base_measures(iv, NO_DELTAS, NO_SAMPLES, {}), "m", T0)
    assert (r["apt_s"], r["unk_s"], r["pot_s"]) == (600.0, 3000.0, 3600.0)


@pytest.mark.parametrize(
    ("before", "element"),
    [
        ("running", "adet_s"),
        ("setup", "adet_s"),
        ("unplanned_stop", "adet_s"),
        ("idle", "adot_s"),
        ("planned_stop", "adot_s"),
    ],
)
def test_offline_is_delay_only_after_producing(before: str, element: str) -> None:
    """If a device goes offline, then it is ADET when it was producing before, else ADOT;
    unknown time in between does not count as a known state."""
    iv = intervals(
        ("m", T0, T0 + 100, before, False),
        ("m", T0 + 100, T0 + 200, "unknown", False),
        ("m", T0 + 200, T0 + 1200, "offline", False),
        ("m", T0 + 1200, T0 + 1300, "offline", False),
    )
    r = row(base_measures(iv, NO_DELTAS, NO_SAMPLES, {}), "m", T0)
    offline = 1100.0
    own = {"running": "apt_s", "setup": "asut_s", "unplanned_stop": "adet_s"}
    own |= {"idle": "adot_s", "planned_stop": "pdt_s"}
    expected = offline + (100.0 if own[before] == element else 0.0)
    assert r[element] == expected


def test_consecutive_unplanned_rows_are_one_event_counted_in_its_start_hour() -> None:
    """If an unplanned stop is stored as two adjacent rows across an hour boundary, then it is
    one stop and one failure, both in the hour it started."""
    iv = intervals(
        ("m", T0, T0 + H - 50, "running", True),
        ("m", T0 + H - 50, T0 + H, "unplanned_stop", False),
        ("m", T0 + H, T0 + H + 40, "unplanned_stop", False),
        ("m", T0 + H + 40, T0 + H + 100, "running", True),
        ("m", T0 + H + 100, T0 + H + 130, "unplanned_stop", False),
        ("m", T0 + H + 130, T0 + 2 * H, "idle", False),
    )
    base = base_measures(iv, NO_DELTAS, NO_SAMPLES, {}, min_failure_s=60.0)
    first, second = row(base, "m", T0), row(base, "m", T0 + H)
    assert (first["unplanned_stops"], first["failures"]) == (1, 1)  # 50 + 40 s = 90 s
    assert (second["unplanned_stops"], second["failures"]) == (1, 0)  # 30 s < 60 s
    assert first["adet_s"] == 50.0 and second["adet_s"] == 70.0


def test_overlapping_intervals_are_not_counted_twice() -> None:
    """If two intervals of one device overlap, then the overlap is attributed once."""
    iv = intervals(
        ("m", T0, T0 + 2000, "running", False), ("m", T0 + 1000, T0 + 3000, "idle", False)
    )
    r = row(base_measures(iv, NO_DELTAS, NO_SAMPLES, {}), "m", T0)
    assert (r["apt_s"], r["adot_s"], r["pot_s"]) == (2000.0, 1000.0, 3000.0)


def test_deltas_belong_to_the_hour_they_end_in() -> None:
    """If a delta ends exactly on an hour boundary, then it belongs to the hour before it;
    produced is total_count when the device has one, else good + reject."""
    dl = deltas(
        ("a", "good_count", T0, T0 + H, 10),
        ("a", "reject_count", T0, T0 + H, 2),
        ("a", "good_count", T0 + H, T0 + H + 1, 5),
        ("a", "energy_kwh", T0, T0 + H, 1.25),
        ("b", "total_count", T0, T0 + 100, 9),
        ("b", "good_count", T0, T0 + 100, 7),
    )
    base = base_measures(intervals(), dl, NO_SAMPLES, {"a": 30.0})
    a0, a1, b0 = row(base, "a", T0), row(base, "a", T0 + H), row(base, "b", T0)
    assert (a0["produced"], a0["good"], a0["scrap"], a0["energy_kwh"]) == (12, 10, 2, 1.25)
    assert a0["ideal_time_s"] == 360.0 and a0["pot_s"] == 0.0
    assert (a1["produced"], a1["good"]) == (5, 5)
    assert (b0["produced"], b0["good"], b0["ideal_time_s"]) == (9, 7, 0.0)


def test_sample_counts_are_carried_per_hour() -> None:
    sc = pd.DataFrame(
        {
            "device_id": ["m", "m"],
            "hour_start": [int(T0), int(T0)],
            "samples_expected": [100, 20],
            "samples_received": [90, 20],
            "samples_on_time": [80, 20],
            "samples_with_source_ts": [90, 10],
            "samples_bad": [1, 0],
        }
    )
    r = row(base_measures(intervals(), NO_DELTAS, sc, {}), "m", T0)
    assert (r["samples_expected"], r["samples_received"], r["samples_bad"]) == (120, 110, 1)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (intervals(("m", T0, T0 + 1, "dancing", False)), "unknown state"),
        (intervals(("m", T0 + 5, T0 + 1, "running", False)), "ends before it starts"),
        (pd.DataFrame({"device_id": ["m"]}), "missing column"),
    ],
)
def test_bad_intervals_raise_one_clear_sentence(frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        base_measures(frame, NO_DELTAS, NO_SAMPLES, {})


def test_negative_delta_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        base_measures(intervals(), deltas(("m", "good_count", T0, T0 + 1, -1)), NO_SAMPLES, {})


def test_empty_input_gives_empty_frame_with_the_contract_columns() -> None:
    base = base_measures(intervals(), NO_DELTAS, NO_SAMPLES, {})
    assert base.empty and list(base.columns) == list(BASE_MEASURE_COLUMNS)


STATES = ["running", "idle", "setup", "planned_stop", "unplanned_stop", "offline", "unknown"]


@st.composite
def timelines(draw: st.DrawFn) -> pd.DataFrame:
    """Contiguous random intervals for one to three devices over up to ~5 hours."""
    rows = []
    for device in draw(st.lists(st.sampled_from("abc"), min_size=1, max_size=3, unique=True)):
        t = T0 + draw(st.floats(0, 7200, allow_nan=False))
        for _ in range(draw(st.integers(1, 12))):
            length = draw(st.floats(0.5, 5000, allow_nan=False))
            rows.append((device, t, t + length, draw(st.sampled_from(STATES)), draw(st.booleans())))
            t += length
    return intervals(*rows)


@settings(max_examples=60, deadline=None)
@given(timelines(), st.data())
def test_identities_hold_and_splitting_an_interval_changes_nothing(
    iv: pd.DataFrame, data: st.DataObject
) -> None:
    """If one interval is cut into two adjacent rows of the same state, then the base measures
    are the same (events merge); in every row POT = PDT + APT + ASUT + ADET + ADOT + UNK."""
    before = iv.copy()
    base = base_measures(iv, NO_DELTAS, NO_SAMPLES, {})
    pd.testing.assert_frame_equal(iv, before)  # the input is never mutated
    parts = base[["pdt_s", "apt_s", "asut_s", "adet_s", "adot_s", "unk_s"]].sum(axis=1)
    np.testing.assert_allclose(base["pot_s"], parts, rtol=1e-12)
    assert (base["pot_s"] <= H + 1e-6).all() and (base.select_dtypes("number") >= 0).all().all()
    assert (base["auto_apt_s"] <= base["apt_s"] + 1e-9).all()

    index = data.draw(st.integers(0, len(iv) - 1))
    cut = data.draw(st.floats(0.01, 0.99))
    victim = iv.iloc[index]
    middle = victim["start"] + cut * (victim["end"] - victim["start"])
    split = pd.concat(
        [
            iv.drop(index=iv.index[index]),
            intervals(
                (victim["device_id"], victim["start"], middle, victim["state"], victim["auto"]),
                (victim["device_id"], middle, victim["end"], victim["state"], victim["auto"]),
            ),
        ],
        ignore_index=True,
    )
    again = base_measures(split, NO_DELTAS, NO_SAMPLES, {})
    assert again[["device_id", "hour_start"]].equals(base[["device_id", "hour_start"]])
    for column in BASE_MEASURE_COLUMNS[2:]:
        np.testing.assert_allclose(again[column], base[column], rtol=1e-12, atol=1e-6)


def test_row_order_does_not_change_a_single_bit() -> None:
    """If the same intervals arrive shuffled, then the output is identical bit for bit."""
    rng = np.random.default_rng(3)
    n = 2000
    starts = T0 + np.cumsum(rng.uniform(1, 900, n))
    iv = pd.DataFrame(
        {
            "device_id": rng.choice(["a", "b", "c"], n),
            "start": starts,
            "end": starts + rng.uniform(0.1, 800, n),
            "state": rng.choice(STATES, n),
            "auto": rng.random(n) < 0.5,
        }
    )
    first = base_measures(iv, NO_DELTAS, NO_SAMPLES, {"a": 1.5})
    shuffled = base_measures(iv.sample(frac=1.0, random_state=1), NO_DELTAS, NO_SAMPLES, {})
    pd.testing.assert_frame_equal(
        first.drop(columns="ideal_time_s"), shuffled.drop(columns="ideal_time_s"), check_exact=True
    )


def test_a_year_of_intervals_is_vectorised() -> None:
    """If 50 devices change state every ~10 minutes for 60 days (~430 k intervals), then the
    base measures take well under the time a per-interval loop would."""
    rng = np.random.default_rng(11)
    frames = []
    for device in range(50):
        lengths = rng.uniform(60, 1140, 8700)
        ends = T0 + np.cumsum(lengths)
        frames.append(
            pd.DataFrame(
                {
                    "device_id": f"d{device:02d}",
                    "start": np.concatenate([[T0], ends[:-1]]),
                    "end": ends,
                    "state": rng.choice(STATES[:5], len(lengths)),
                    "auto": True,
                }
            )
        )
    iv = pd.concat(frames, ignore_index=True)
    started = time.perf_counter()
    base = base_measures(iv, NO_DELTAS, NO_SAMPLES, {})
    elapsed = time.perf_counter() - started
    assert elapsed < 10.0, elapsed
    print(f"{len(iv)} intervals -> {len(base)} rows in {elapsed:.2f} s")
    total = (iv["end"] - iv["start"]).sum()
    assert base["pot_s"].sum() == pytest.approx(total, rel=1e-12)
