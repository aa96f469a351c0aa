"""Column contracts shared by the store, the simulator's tests, reports and the bureau.

Base measures: one row per device per hour (UTC), every column additive. Times are
float seconds, quantities integers, energy kWh. `hour_start` is int epoch seconds (UTC,
a multiple of 3600). Identities per row (ISO 22400-2, see docs/indicators.md §1):
    pot_s = pdt_s + pbt_s,   pbt_s = apt_s + asut_s + adet_s + adot_s + unk_s
"""

from __future__ import annotations

HOUR_S = 3600  # base measures are per UTC hour

KEY_COLUMNS: tuple[str, ...] = ("device_id", "hour_start")

TIME_COLUMNS: tuple[str, ...] = (
    "pot_s",  # planned operation time: the hour part inside the measured period
    "pdt_s",  # planned downtime: planned_stop
    "apt_s",  # actual production time: running
    "asut_s",  # actual unit setup time: setup
    "adet_s",  # actual unit delay time: unplanned_stop (+ offline after producing)
    "adot_s",  # actual unit down time: idle (+ offline otherwise)
    "unk_s",  # no data at all: never counted as running
    "auto_apt_s",  # running time in automatic mode (auto_mode signal true)
    "ideal_time_s",  # Σ ideal cycle time × produced (ISO PRI × PQ)
)

COUNT_COLUMNS: tuple[str, ...] = (
    "produced",
    "good",
    "scrap",
    "rework",
    "unplanned_stops",  # unplanned_stop intervals starting in this hour
    "failures",  # of those, the ones lasting at least collection.min_failure_s
    "samples_expected",  # required signals: slots of their interval in the measured time
    "samples_received",  # slots actually filled with a sample
    "samples_on_time",  # received with received_ts - source_ts <= realtime bound
    "samples_with_source_ts",  # received samples that carried a source timestamp
    "samples_bad",  # received with bad quality
)

ENERGY_COLUMNS: tuple[str, ...] = ("energy_kwh",)

MEASURE_COLUMNS: tuple[str, ...] = TIME_COLUMNS + COUNT_COLUMNS + ENERGY_COLUMNS
BASE_MEASURE_COLUMNS: tuple[str, ...] = KEY_COLUMNS + MEASURE_COLUMNS

# Device inventory: every production device, connected or not.
INVENTORY_COLUMNS: tuple[str, ...] = (
    "device_id",
    "line",
    "process_step",
    "key_process",  # bool
    "kind",  # cnc | robot | plc_automated | manual | other
    "digital",  # bool
    "connection",  # opcua | modbus | none
)

# State intervals: [start, end) per device, canonical state plus `unknown`.
INTERVAL_COLUMNS: tuple[str, ...] = ("device_id", "start", "end", "state", "auto")

# Counter deltas: a delta observed at `end` covers (start, end]; it belongs to the hour
# h with h*3600 < end <= (h+1)*3600.
DELTA_COLUMNS: tuple[str, ...] = ("device_id", "role", "start", "end", "delta")
