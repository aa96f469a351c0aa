"""Canonical machine states and the presets that map protocol state codes onto them."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    RUNNING = "running"
    IDLE = "idle"
    SETUP = "setup"
    PLANNED_STOP = "planned_stop"
    UNPLANNED_STOP = "unplanned_stop"
    OFFLINE = "offline"


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
