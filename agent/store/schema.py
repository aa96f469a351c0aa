"""Tables of the agent database (agent.db). Derived tables are kept; raw samples expire."""

from __future__ import annotations

from indicators.columns import MEASURE_COLUMNS

SCHEMA_VERSION = 2  # 2: samples.seg_ts, sealed_days, sealed_blocks (agent.store.sealed)

_MEASURES = ",\n    ".join(f"{name} REAL NOT NULL" for name in MEASURE_COLUMNS)

DDL: tuple[str, ...] = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # `value` has no declared type so ints, floats and strings keep their own type. Ints in
    # [2^63, 2^64) and NaN, which SQLite cannot hold as such, are tagged BLOBs
    # (agent.store.values); read them through Store.raw_samples. `seg_ts`: the time that
    # decides the sample's raw segment where it is not source_ts (agent.store.sealed), else
    # NULL; a store of schema 1 gets the column at open (agent.store.sqlite).
    """CREATE TABLE IF NOT EXISTS samples (
    device_id TEXT NOT NULL, signal_id TEXT NOT NULL, source_ts REAL NOT NULL,
    received_ts REAL NOT NULL, value, quality INTEGER NOT NULL, status INTEGER NOT NULL,
    origin INTEGER NOT NULL, seg_ts REAL)""",
    # Where each device-hour's samples sit (rowid range), by the hour of coalesce(seg_ts,
    # source_ts): a full index on samples would double the cost of every insert.
    """CREATE TABLE IF NOT EXISTS sample_index (
    device_id TEXT NOT NULL, hour_start INTEGER NOT NULL, first_rowid INTEGER NOT NULL,
    last_rowid INTEGER NOT NULL, PRIMARY KEY (device_id, hour_start)) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS intervals (
    device_id TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL, state TEXT NOT NULL,
    auto INTEGER NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS intervals_by_device ON intervals (device_id, start)",
    """CREATE TABLE IF NOT EXISTS deltas (
    device_id TEXT NOT NULL, role TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL,
    delta REAL NOT NULL)""",
    'CREATE INDEX IF NOT EXISTS deltas_by_device ON deltas (device_id, "end")',
    """CREATE TABLE IF NOT EXISTS sample_counts (
    device_id TEXT NOT NULL, hour_start INTEGER NOT NULL, samples_expected INTEGER NOT NULL,
    samples_received INTEGER NOT NULL, samples_on_time INTEGER NOT NULL,
    samples_with_source_ts INTEGER NOT NULL, samples_bad INTEGER NOT NULL,
    PRIMARY KEY (device_id, hour_start)) WITHOUT ROWID""",
    f"""CREATE TABLE IF NOT EXISTS base_measures (
    device_id TEXT NOT NULL, hour_start INTEGER NOT NULL,
    {_MEASURES},
    PRIMARY KEY (device_id, hour_start)) WITHOUT ROWID""",
    # Derivation memory per device (agent.derive.carry.DeviceCarry as JSON), committed with
    # its samples.
    "CREATE TABLE IF NOT EXISTS carry (device_id TEXT PRIMARY KEY, state TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS link_log (
    connection TEXT NOT NULL, ts REAL NOT NULL, state TEXT NOT NULL, reason TEXT NOT NULL)""",
    # Samples that could not be stored (disk full, I/O error): the counted gap.
    """CREATE TABLE IF NOT EXISTS ingest_losses (
    first_ts REAL NOT NULL, last_ts REAL NOT NULL, samples INTEGER NOT NULL,
    reason TEXT NOT NULL)""",
    # How far each device of an imported history is (agent.store.backfill_state).
    """CREATE TABLE IF NOT EXISTS backfill_progress (
    history_id TEXT NOT NULL, device_id TEXT NOT NULL, start REAL NOT NULL, "end" REAL NOT NULL,
    imported_through REAL NOT NULL, samples INTEGER NOT NULL, done INTEGER NOT NULL,
    PRIMARY KEY (history_id, device_id)) WITHOUT ROWID""",
    # Sealed raw data (agent.store.sealed): the local days whose raw segments are sealed,
    # and their segments' bytes, compressed, one block per day and device.
    """CREATE TABLE IF NOT EXISTS sealed_days (
    start INTEGER PRIMARY KEY, "end" INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sealed_blocks (
    day_start INTEGER NOT NULL, device_id TEXT NOT NULL, codec TEXT NOT NULL,
    segments INTEGER NOT NULL, samples INTEGER NOT NULL, data BLOB NOT NULL,
    PRIMARY KEY (day_start, device_id))""",
    # Signal health per hour (agent.derive.issues): problem samples by cause, the detail
    # of the latest one.
    """CREATE TABLE IF NOT EXISTS signal_issues (
    device_id TEXT NOT NULL, signal_id TEXT NOT NULL, cause TEXT NOT NULL,
    hour_start INTEGER NOT NULL, count INTEGER NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (device_id, signal_id, cause, hour_start)) WITHOUT ROWID""",
)
