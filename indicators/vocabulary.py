"""The vocabulary the agent, the indicators and the bureau share.

- Canonical machine states, the presets that map protocol state codes onto them, and the
    labels a state interval may carry.
- Signal roles: what a configured signal means, and which roles counter deltas carry.
- Sample quality codes as stored (the connectors keep their own `Quality` enum with the same
    names, since `connectors/` imports nothing of ours).
- Tier, condition-status and source ids with their bilingual (Chinese, English) labels.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

# --- machine states ------------------------------------------------------------------------------


class State(StrEnum):
    RUNNING = "running"
    IDLE = "idle"
    SETUP = "setup"
    PLANNED_STOP = "planned_stop"
    UNPLANNED_STOP = "unplanned_stop"
    OFFLINE = "offline"


# Time without any data. Ours, never a device state: presets cannot map a code onto it.
UNKNOWN_STATE = "unknown"

# Every label a state interval may carry, in a fixed order (the agent keeps intervals' states as
# indexes into it).
INTERVAL_STATES: tuple[str, ...] = (*(s.value for s in State), UNKNOWN_STATE)


# ISA-TR88.00.02 (PackML) state numbers.
PACKML: dict[int, State] = {
    0: State.OFFLINE,  # Undefined
    1: State.UNPLANNED_STOP,  # Clearing (after an abort)
    2: State.PLANNED_STOP,  # Stopped
    3: State.SETUP,  # Starting
    4: State.IDLE,  # Idle
    5: State.IDLE,  # Suspended: starved or blocked, the machine is available
    6: State.RUNNING,  # Execute
    7: State.PLANNED_STOP,  # Stopping
    8: State.UNPLANNED_STOP,  # Aborting
    9: State.UNPLANNED_STOP,  # Aborted
    10: State.UNPLANNED_STOP,  # Holding: internal fault
    11: State.UNPLANNED_STOP,  # Held
    12: State.UNPLANNED_STOP,  # Unholding
    13: State.IDLE,  # Suspending
    14: State.IDLE,  # Unsuspending
    15: State.SETUP,  # Resetting (changeover)
    16: State.RUNNING,  # Completing
    17: State.IDLE,  # Complete
}

# OPC 40001-1 (OPC UA for Machinery) MachineryItemState. It cannot express setup or a
# planned stop; devices using it report those as NotExecuting (idle).
OPCUA_MACHINERY: dict[int, State] = {
    0: State.OFFLINE,  # NotAvailable
    1: State.UNPLANNED_STOP,  # OutOfService
    2: State.IDLE,  # NotExecuting
    3: State.RUNNING,  # Executing
}

# A plain integer map as many PLC programs use it.
PLAIN: dict[int, State] = {
    0: State.OFFLINE,
    1: State.RUNNING,
    2: State.IDLE,
    3: State.SETUP,
    4: State.PLANNED_STOP,
    5: State.UNPLANNED_STOP,
}

PRESETS: dict[str, dict[int, State]] = {
    "packml": PACKML,
    "opcua_machinery": OPCUA_MACHINERY,
    "plain": PLAIN,
}


# --- signal roles --------------------------------------------------------------------------------


class Role(StrEnum):
    STATE = "state"
    GOOD_COUNT = "good_count"
    REJECT_COUNT = "reject_count"
    TOTAL_COUNT = "total_count"
    IDEAL_CYCLE_TIME_S = "ideal_cycle_time_s"
    ENERGY_KWH = "energy_kwh"
    AUTO_MODE = "auto_mode"
    ALARM = "alarm"
    PROCESS = "process"


# Signals whose values are running counters; the agent turns them into counter deltas.
COUNTER_ROLES = frozenset({Role.GOOD_COUNT, Role.REJECT_COUNT, Role.TOTAL_COUNT, Role.ENERGY_KWH})

# Reworked units: a counter-delta role the time model accepts that no configured signal has.
REWORK_COUNT = "rework_count"

# Ideal time Σ PRI x PQ measured with an ideal-cycle-time signal: a delta per produced delta
# (a product mix changes PRI between pieces).
IDEAL_TIME = "ideal_time_s"

# The roles counter deltas may carry (the time model's input).
DELTA_ROLES: frozenset[str] = frozenset(
    {*(r.value for r in COUNTER_ROLES), REWORK_COUNT, IDEAL_TIME}
)

# --- sample quality ------------------------------------------------------------------------------

# Quality as a small integer: in sample columns, the store, history files and raw-data segments.
Q_GOOD, Q_UNCERTAIN, Q_BAD = 0, 1, 2
QUALITY_CODES: dict[str, int] = {"good": Q_GOOD, "uncertain": Q_UNCERTAIN, "bad": Q_BAD}
QUALITY_NAMES: dict[int, str] = {code: name for name, code in QUALITY_CODES.items()}

# --- tiers, condition statuses and sources -------------------------------------------------------


@dataclass(frozen=True)
class Bilingual:
    zh: str
    en: str


TierId = Literal["basic", "advanced", "excellent", "leading"]
TIER_ORDER: tuple[str, ...] = ("basic", "advanced", "excellent", "leading")
TIERS: dict[str, Bilingual] = {
    "basic": Bilingual("基础级", "basic"),
    "advanced": Bilingual("先进级", "advanced"),
    "excellent": Bilingual("卓越级", "excellent"),
    "leading": Bilingual("领航级", "leading"),
}
NO_TIER = Bilingual("未达到", "none")  # no tier reached

Status = Literal[
    "pass", "fail", "insufficient_data", "declared_pass", "declared_fail", "not_declared"
]
PASSING: frozenset[str] = frozenset({"pass", "declared_pass"})
STATUSES: dict[str, Bilingual] = {
    "pass": Bilingual("通过", "pass"),
    "fail": Bilingual("未通过", "fail"),
    "insufficient_data": Bilingual("数据不足", "insufficient data"),
    "declared_pass": Bilingual("声明通过", "declared pass"),
    "declared_fail": Bilingual("声明未通过", "declared fail"),
    # No declaration for the condition (no declarations file, or no item in it): failing.
    "not_declared": Bilingual("未声明", "not declared"),
}

Source = Literal["measured", "declared", "benchmark"]
SOURCES: dict[str, Bilingual] = {
    "measured": Bilingual("实测", "measured"),
    "declared": Bilingual("声明", "declared"),
    "benchmark": Bilingual("对标", "benchmark"),
}
