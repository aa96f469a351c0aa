"""Derivation through the real store: counters, rollover, resets, restarts, gaps, counts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from agent_testkit import T0, modbus_config, opcua_config, sample

from agent.store import LinkItem, Store
from connectors.base import LinkEvent, LinkState


def _open(tmp_path: Path, **kwargs: object) -> Store:
    store = Store.open(tmp_path / "agent.db", modbus_config(**kwargs))  # type: ignore[arg-type]
    store.resume(T0)
    return store


def _delta_sum(store: Store, role: str) -> float:
    deltas = store.deltas(T0 - 1, T0 + 10 * 86400)
    return float(deltas.loc[deltas["role"] == role, "delta"].sum())


@pytest.mark.parametrize(
    ("bits", "before", "after", "expected"),
    [
        (16, 65530, 4, 10),  # wrap at 2**16
        (32, 2**32 - 5, 3, 8),  # wrap at 2**32
        (16, 1000, 3, 3),  # a drop from the lower range is a reset: delta = new value
        (32, 2**32 - 5, 2**31, 2**31),  # a drop into the upper half is a reset too
    ],
    ids=["wrap16", "wrap32", "reset16", "reset32"],
)
def test_counter_drop_is_wrap_or_reset(
    tmp_path: Path, bits: int, before: int, after: int, expected: int
) -> None:
    """If a counter drops, then the delta is the wrapped difference or the new value."""
    store = _open(tmp_path, counter_bits=bits)
    store.ingest([sample("good", T0 + 1, before - 2), sample("good", T0 + 2, before),
                  sample("good", T0 + 3, after)])
    assert _delta_sum(store, "good_count") == 2 + expected
    assert (store.deltas(T0, T0 + 10)["delta"] > 0).all()


def test_restart_neither_loses_nor_double_counts(tmp_path: Path) -> None:
    """If the agent restarts, then the persisted last value bridges the downtime once."""
    store = _open(tmp_path)
    store.ingest([sample("good", T0 + 1, 10), sample("good", T0 + 2, 20),
                  sample("state", T0 + 1, 1), sample("state", T0 + 2, 1)])
    store.close()
    store = Store.open(tmp_path / "agent.db", modbus_config())
    store.resume(T0 + 50)
    store.ingest([sample("good", T0 + 60, 25), sample("good", T0 + 61, 25),
                  sample("state", T0 + 60, 1)])
    assert _delta_sum(store, "good_count") == 15
    intervals = store.intervals(T0, T0 + 100)
    downtime = intervals[(intervals["end"] > T0 + 2) & (intervals["start"] < T0 + 50)]
    assert set(downtime["state"]) == {"unknown"}
    assert downtime["start"].min() == T0 + 2


def test_a_late_older_sample_is_neither_a_reset_nor_a_state_flip(tmp_path: Path) -> None:
    """If a server delivers an older value after a newer one (seen after an OPC UA server
    restart: the current value, then a queued older notification), then the older counter
    value is not taken for a reset that counts the pieces again, and the older state does
    not come back for an instant; nothing is lost either."""
    store = _open(tmp_path)
    store.ingest([sample("good", T0 + 10, 1), sample("state", T0 + 10, 1)])
    store.ingest([sample("good", T0 + 30, 12), sample("state", T0 + 30, 2)])
    store.ingest([sample("good", T0 + 20, 11), sample("state", T0 + 20, 1)])  # late, older
    store.ingest([sample("good", T0 + 30, 12), sample("good", T0 + 40, 14),
                  sample("state", T0 + 40, 2)], advance_to=T0 + 50)
    assert _delta_sum(store, "good_count") == 13
    intervals = store.intervals(T0, T0 + 100)
    after = intervals[intervals["end"] > T0 + 30]
    # Idle from T0 + 30 on (unknown where the polled state went stale), never running again.
    assert "running" not in set(after["state"]) and "idle" in set(after["state"]), after


def test_energy_meter_deltas_are_exact(tmp_path: Path) -> None:
    """If the meter grows by fractions of a kWh, then the deltas add up to the growth."""
    store = _open(tmp_path)
    readings = [100.125, 100.5, 101.0, 103.75]
    store.ingest([sample("energy", T0 + i, v) for i, v in enumerate(readings, start=1)])
    assert _delta_sum(store, "energy_kwh") == pytest.approx(3.625, abs=1e-9)


def test_link_loss_is_unknown_never_running(tmp_path: Path) -> None:
    """If the connection drops while running, then the gap is unknown until a new sample."""
    store = _open(tmp_path)
    running = [sample("state", T0 + t, 1) for t in range(0, 11)]
    down = LinkItem("plc", LinkEvent(LinkState.DISCONNECTED, T0 + 10.5, "timeout"))
    up = LinkItem("plc", LinkEvent(LinkState.CONNECTED, T0 + 19.0))
    store.ingest([*running, down, up, sample("state", T0 + 20, 1)], advance_to=T0 + 21)
    frame = store.intervals(T0, T0 + 100)
    gap = frame[(frame["start"] >= T0 + 10.5) & (frame["end"] <= T0 + 20)]
    assert list(gap["state"]) == ["unknown"]
    assert gap["start"].min() == T0 + 10.5 and gap["end"].max() == T0 + 20
    running_time = (frame["end"] - frame["start"])[frame["state"] == "running"].sum()
    assert running_time == pytest.approx(10.5)  # the interval from T0+20 is still open


def test_unreachable_device_is_offline(tmp_path: Path) -> None:
    """If a state sample is bad with an unreachable status, then the device is offline."""
    store = _open(tmp_path)
    store.ingest([sample("state", T0 + 1, 1),
                  sample("state", T0 + 2, None, quality="bad", status=0x808A0000),
                  sample("state", T0 + 3, None, quality="bad", status=0x80000000),
                  sample("state", T0 + 4, 2), sample("state", T0 + 5, 1)], advance_to=T0 + 5)
    frame = store.intervals(T0, T0 + 10)
    by_start = dict(zip(frame["start"] - T0, frame["state"], strict=True))
    assert by_start[1.0] == "running"
    assert by_start[2.0] == "offline"
    assert by_start[3.0] == "unknown"
    assert by_start[4.0] == "idle"


def test_silence_of_a_polled_state_becomes_unknown(tmp_path: Path) -> None:
    """If polls stop arriving, then the state holds 2 intervals + realtime bound, then unknown."""
    store = _open(tmp_path)  # interval 1 s, realtime bound 5 s
    store.ingest([sample("state", T0 + 1, 1)], advance_to=T0 + 60)
    store.ingest([sample("state", T0 + 61, 1)])
    frame = store.intervals(T0, T0 + 100)
    running = frame[frame["state"] == "running"]
    assert running["start"].min() == T0 + 1
    assert running[running["end"] <= T0 + 60]["end"].max() == T0 + 8
    silent = frame[(frame["start"] >= T0 + 8) & (frame["end"] <= T0 + 61)]
    assert set(silent["state"]) == {"unknown"} and silent["end"].max() == T0 + 61


def test_closed_hour_is_materialised_with_sample_counts(tmp_path: Path) -> None:
    """If one hour is fully sampled, then its row has expected = received and exact counts."""
    store = _open(tmp_path, interval_s=10.0)
    items = []
    for k in range(360):
        t = T0 + 10 * k
        items += [sample("state", t, 1), sample("auto", t, True), sample("good", t, k),
                  sample("reject", t, k // 60), sample("energy", t, 0.5 * k),
                  sample("temp", t, 20.0, latency=9.0)]
    store.ingest(items, advance_to=T0 + 3600 + 5)
    rows = store.base_measures(T0, T0 + 3600)
    assert list(rows["device_id"]) == ["M1"]
    row = rows.iloc[0]
    assert row["pot_s"] == 3600 and row["apt_s"] == 3600 and row["auto_apt_s"] == 3600
    assert row["produced"] == 359 + 5 and row["good"] == 359 and row["scrap"] == 5
    assert row["energy_kwh"] == pytest.approx(179.5)
    # 5 required signals x 360 slots; temp is not required.
    assert row["samples_expected"] == 1800 and row["samples_received"] == 1800
    assert row["samples_on_time"] == 1800 and row["samples_bad"] == 0
    before = rows.copy()
    store.rebuild_base_measures(T0, T0 + 3600)
    pd.testing.assert_frame_equal(store.base_measures(T0, T0 + 3600), before)


def test_subscription_value_without_change_counts_as_received(tmp_path: Path) -> None:
    """If a subscribed value does not change while the link is up, its slots are received."""
    store = Store.open(tmp_path / "agent.db", opcua_config(interval_s=60.0))
    store.resume(T0)
    store.ingest([sample("state", T0, 1, device="U1"), sample("good", T0, 5, device="U1")])
    store.ingest([sample("good", T0 + 1800, 9, device="U1")], advance_to=T0 + 3600 + 5)
    row = store.base_measures(T0, T0 + 3600).iloc[0]
    assert row["samples_expected"] == 120 and row["samples_received"] == 120
    assert row["produced"] == 4 and row["apt_s"] == 3600
    # After a link loss nothing more is received until new samples arrive.
    down = LinkItem("ua", LinkEvent(LinkState.DISCONNECTED, T0 + 3600 + 10))
    store.ingest([down], advance_to=T0 + 7200 + 5)
    row = store.base_measures(T0 + 3600, T0 + 7200).iloc[0]
    assert row["samples_expected"] == 120 and row["samples_received"] == 2 * 1
    assert row["unk_s"] == pytest.approx(3590)


def test_source_clock_ahead_is_not_on_time(tmp_path: Path) -> None:
    """If a device stamps samples ahead of the gateway's receive time by more than the
    realtime bound (8 s, or 2 h: a skewed clock), then those slots are received but not on
    time; a clock 3 s ahead is within the bound and on time."""
    store = _open(tmp_path, interval_s=10.0)
    items = []
    for k in range(360):
        t = T0 + 10 * k + 1
        energy_ahead = 3.0 if k < 180 else 8.0  # still inside the same 10 s slot
        items += [
            sample("state", t, 1), sample("auto", t, True), sample("good", t, k),
            replace(sample("energy", t, 0.5 * k), source_ts=t + energy_ahead),
            replace(sample("reject", t, 0), source_ts=t + 7200.0),
        ]
    store.ingest(items, advance_to=T0 + 3600 + 5)
    row = store.base_measures(T0, T0 + 3600).iloc[0]
    assert row["samples_expected"] == 1800 and row["samples_received"] == 1800
    assert row["samples_with_source_ts"] == 1800
    assert row["samples_on_time"] == 1800 - 180 - 360
