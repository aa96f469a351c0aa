"""A fresh agent on healthy devices (issue 16): held values count from the first read, old but
unchanged values are on time while a wrong source clock is still flagged, a stop already in
progress at the start is not a new stop, and an ideal-cycle-time signal counts like the
device field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from agent_testkit import T0

from agent.config import FactoryConfig, declared_inventory, parse_config
from agent.derive.device_plans import plan_devices
from agent.derive.engine import Deriver
from agent.derive.sample_columns import columns_from_samples
from agent.store import LinkItem, Store
from connectors.base import LinkEvent, LinkState
from connectors.sample import Quality, Sample, TimestampOrigin
from indicators.columns import DELTA_COLUMNS
from indicators.kpi import compute
from indicators.timemodel import base_measures
from indicators.vocabulary import Q_GOOD, Q_UNCERTAIN

H = 3600.0
START = T0 + 0.4  # the agent starts inside a second, as it does in the field


def _config(*, signals: list[dict[str, Any]] | None = None, **device: Any) -> FactoryConfig:
    """Two OPC UA devices in subscribe mode with 1 s slots: state, good and reject counters."""
    def node(device_id: str, name: str) -> dict[str, str]:
        return {"node": f"ns=2;s={device_id}/{name}"}

    def signals_of(device_id: str) -> list[dict[str, Any]]:
        base = [
            {"id": "state", "role": "state", "state_map": "plain", "opcua": node(device_id, "S")},
            {"id": "good", "role": "good_count", "opcua": node(device_id, "G")},
            {"id": "reject", "role": "reject_count", "opcua": node(device_id, "R")},
        ]
        extra = [{**s, "opcua": node(device_id, s["id"])} for s in signals or []]
        return base + extra

    raw = {
        "schema": "tieragent/config/v1",
        "factory": {"enterprise_id": "E1", "factory_id": "f-1", "industry_code": "C3484"},
        "collection": {"default_interval_s": 1.0},
        "connections": {"ua": {"protocol": "opcua", "endpoint": "opc.tcp://127.0.0.1:4840"}},
        "devices": [
            {"id": d, "line": "L1", "process_step": "mill", "kind": "cnc", "digital": True,
             "key_process": True, "connection": "ua", "signals": signals_of(d), **device}
            for d in ("U1", "U2")
        ],
    }
    return parse_config(raw)


def _sample(device: str, signal: str, source_ts: float, value: Any, received: float, *,
            held: bool = False) -> Sample:
    return Sample(device, signal, value, Quality.GOOD, source_ts, received, 0,
                  TimestampOrigin.SOURCE, held)


def _connected(ts: float) -> LinkItem:
    return LinkItem("ua", LinkEvent(state=LinkState.CONNECTED, ts=ts, reason=""))


def _first_read(device: str, received: float, since: float, state: int = 2) -> list[Sample]:
    """The read after subscribing: values unchanged since `since` (an idle machine)."""
    return [_sample(device, "state", since, state, received, held=True),
            _sample(device, "good", since, 1200, received, held=True),
            _sample(device, "reject", since, 0, received, held=True)]


def test_unchanged_values_are_received_on_time_from_the_first_read(tmp_path: Path) -> None:
    """If a fresh agent reads devices whose values have not changed for hours (one of them
    within the same second as the start, clamped to it) and nothing changes afterwards, then
    every expected slot of the first hour is received and on time, the samples are stored
    good, the data-collection rate is 1.0 and every device is networked."""
    config = _config()
    store = Store.open(tmp_path / "agent.db", config)
    store.resume(START)
    store.ingest([_connected(START + 0.1),
                  *_first_read("U1", START + 0.3, since=T0 - 5 * H),
                  *_first_read("U2", START + 0.3, since=START - 0.2)])
    store.ingest([], advance_to=T0 + H + 1)
    base = store.base_measures(T0, T0 + H)
    raw = store.raw_samples(0, 4e9)
    store.close()
    assert len(base) == 2
    assert (base["samples_expected"] == 3 * 3599).all()  # slots T0+1 .. T0+3599, 3 signals
    assert (base["samples_received"] == base["samples_expected"]).all()
    assert (base["samples_on_time"] == base["samples_received"]).all()
    assert set(raw["quality"]) == {Q_GOOD}
    rates = compute(base, declared_inventory(config))
    assert rates["data_collection_rate"].value == 1.0
    assert rates["realtime_rate"].value == 1.0
    assert rates["networking_rate"].value == 1.0


def test_a_wrong_source_clock_is_still_flagged(tmp_path: Path) -> None:
    """If a source clock is 2 h behind, then its first read cannot be told from a value
    unchanged for 2 h (held: good, on time), but the first change it reports is flagged
    uncertain and not on time; a held value 2 h ahead is flagged at once."""
    config = _config()
    store = Store.open(tmp_path / "agent.db", config)
    store.resume(START)
    skew = -2 * H
    store.ingest([_connected(START + 0.1), *_first_read("U1", START + 0.3, START + skew),
                  *_first_read("U2", START + 0.3, START + 2 * H)])
    store.ingest([_sample("U1", "good", START + 10 + skew, 1201, START + 10.1)])
    raw = store.raw_samples(0, 4e9)
    result = store.ingest([_sample("U1", "good", START + 20 + skew, 1202, START + 20.1)])
    store.ingest([], advance_to=T0 + H + 1)
    base = store.base_measures(T0, T0 + H).set_index("device_id")
    store.close()
    u1 = raw[raw["device_id"] == "U1"].sort_values("received_ts")
    assert list(u1["quality"]) == [Q_GOOD] * 3 + [Q_UNCERTAIN]
    assert set(raw.loc[raw["device_id"] == "U2", "quality"]) == {Q_UNCERTAIN}
    assert result.skewed_by_device == {"U1": 1}
    # Slots held with a value from a wrong clock are not on time either: U1's good counter
    # from its first skewed change on (the 10 slots before it were on time), all of U2's.
    late = base["samples_received"] - base["samples_on_time"]
    assert late["U1"] == 3599 - 10 and late["U2"] == 3 * 3599


def test_a_stop_in_progress_at_the_start_is_not_a_new_stop() -> None:
    """If the first state the Deriver sees is an unplanned stop that began before the start,
    then that stop is not counted (its time is still delay), and a later stop is; a stop
    crossing an hour boundary is one stop, in the hour it began."""
    config = _config()
    deriver = Deriver(plan_devices(config), config.collection.realtime_bound_s)
    deriver.begin("U1", START)
    stop, running = 5, 1
    deriver.feed("U1", columns_from_samples([
        _sample("U1", "state", START - 300, stop, START + 0.3, held=True),
        _sample("U1", "state", START + 50, running, START + 50.1),
        _sample("U1", "state", T0 + H - 100, stop, T0 + H - 99.9),
        _sample("U1", "state", T0 + H + 20, running, T0 + H + 20.1),
    ]))
    deriver.advance("U1", T0 + 2 * H + 1)
    out = deriver.take()
    intervals = pd.DataFrame(out.intervals, columns=["device_id", "start", "end", "state", "auto"])
    intervals["auto"] = intervals["auto"].astype(bool)
    no_deltas = pd.DataFrame(columns=list(DELTA_COLUMNS))
    base = base_measures(intervals, no_deltas, pd.DataFrame(), {}).set_index("hour_start")
    assert base.loc[int(T0), "adet_s"] == 50 + 100
    assert base.loc[int(T0), "unplanned_stops"] == 1  # the one at T0 + H - 100
    assert base.loc[int(T0 + H), "unplanned_stops"] == 0
    # Hour by hour, as the store materialises them, the count is the same.
    hourly = [base_measures(intervals[(intervals["start"] >= h) & (intervals["start"] < h + H)],
                            no_deltas, pd.DataFrame(), {}) for h in (T0, T0 + H)]
    assert [int(b["unplanned_stops"].sum()) for b in hourly] == [1, 0]


def _production(tmp_path: Path, config: FactoryConfig, ideal: list[tuple[float, float]]) -> Any:
    """U1 runs and makes 100 pieces in the first hour (ideal values: (ts, value) samples);
    the first hour's indicators."""
    store = Store.open(tmp_path / "agent.db", config)
    store.resume(START)
    first = _first_read("U1", START + 0.3, since=T0 - H, state=1)
    ideal_samples = [_sample("U1", "ict", ts, value, max(ts, START) + 0.1, held=ts < START)
                     for ts, value in ideal]
    store.ingest([_connected(START + 0.1), *first, *ideal_samples[:1]])
    counts = [_sample("U1", "good", T0 + 30 * (i + 1), 1200 + i + 1, T0 + 30 * (i + 1) + 0.1)
              for i in range(100)]
    later = sorted(ideal_samples[1:] + counts, key=lambda s: s.source_ts)
    for sample in later:
        store.ingest([sample])
    store.ingest([], advance_to=T0 + H + 1)
    base = store.base_measures(T0, T0 + H)
    store.close()
    base = base[base["device_id"] == "U1"]
    return base, compute(base, declared_inventory(config))


def test_an_ideal_cycle_time_signal_counts_like_the_device_field(tmp_path: Path) -> None:
    """If the ideal cycle time comes from a mapped signal instead of the device field, then
    ideal time and performance are the same; when the signal changes (a product mix), each
    piece counts with the value in effect when it was completed."""
    signal = [{"id": "ict", "role": "ideal_cycle_time_s", "required": False}]
    field_base, by_field = _production(tmp_path / "field", _config(ideal_cycle_time_s=20), [])
    signal_base, by_signal = _production(
        tmp_path / "signal", _config(signals=signal), [(T0 - 2 * H, 20.0)]
    )
    assert field_base["ideal_time_s"].iloc[0] == 100 * 20.0
    assert signal_base["ideal_time_s"].iloc[0] == 100 * 20.0
    assert by_signal["performance"].value == by_field["performance"].value
    assert by_signal["performance"].value is not None
    assert by_signal["oee"].value == by_field["oee"].value
    # A product change after piece 40 (completed at T0 + 1200): 40 x 20 s + 60 x 10 s.
    mix_base, _ = _production(
        tmp_path / "mix", _config(signals=signal, ideal_cycle_time_s=99),
        [(T0 - 2 * H, 20.0), (T0 + 1210, 10.0)],
    )
    assert mix_base["ideal_time_s"].iloc[0] == 40 * 20.0 + 60 * 10.0
    assert np.isclose(float(mix_base["produced"].iloc[0]), 100)


def test_a_stop_that_continues_across_a_restart_is_counted_once(tmp_path: Path) -> None:
    """If the agent stops during an unplanned stop and comes back while it lasts, then the
    stop is counted once (when it began), not again after the restart; a stop that begins
    during the downtime after a running state is a new stop."""
    config = _config()
    store = Store.open(tmp_path / "agent.db", config)
    store.resume(START)
    stop, running = 5, 1
    store.ingest([_connected(START + 0.1), *_first_read("U1", START + 0.3, START - 60, running),
                  *_first_read("U2", START + 0.3, START - 60, running)])
    store.ingest([_sample("U1", "state", START + 100, stop, START + 100.1),
                  _sample("U2", "state", START + 100, running, START + 100.1)])
    store.close()
    store = Store.open(tmp_path / "agent.db", config)
    store.resume(START + 400)
    store.ingest([_connected(START + 400.1),
                  *_first_read("U1", START + 400.3, START + 100, stop),
                  *_first_read("U2", START + 400.3, START + 300, stop)])
    store.ingest([_sample(d, "state", START + 500, running, START + 500.1) for d in ("U1", "U2")],
                 advance_to=T0 + H + 1)
    base = store.base_measures(T0, T0 + H).set_index("device_id")
    store.close()
    assert base.loc["U1", "unplanned_stops"] == 1
    assert base.loc["U2", "unplanned_stops"] == 1
