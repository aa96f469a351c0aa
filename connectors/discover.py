"""Browse an OPC UA server and draft the devices of a factory configuration.

`discover` walks the hierarchy under Objects (skipping namespace 0, the server's own
diagnostics), batched to the server's MaxNodesPerBrowse / MaxNodesPerRead, and returns one
`Variable` per variable with its data type and current value. `group_devices` turns them
into `DeviceDraft`s: every object that holds variables is a device, except for the
components of a machine (Identification, MachineryItemState, PackML's Status and Admin...),
which fold into the machine that owns them. Each signal gets a role guessed from its name
and place (OPC 40001 MachineryItemState, PackML StateCurrent) and, for a state, a state map
guessed from the companion specification or from the codes seen. `render_devices` writes
the drafts as commented YAML for the `devices:` list; every guess is there to be checked.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from connectors.discover_browse import INTEGER_TYPES, Variable
from connectors.discover_browse import discover as discover  # the entry point, re-exported

# Role guesses, checked in this order (so "GoodCount" is good_count, not total_count, and
# "EnergyTotal" is energy_kwh): (role, fragments found anywhere, words that must stand alone).
_ROLE_RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("ideal_cycle_time_s", ("idealcycletime", "ideal_cycle_time", "idealcycle"), ()),
    ("good_count", ("good",), ()),
    ("reject_count", ("reject", "scrap", "defect"), ("ng",)),
    ("energy_kwh", ("energy", "kwh"), ()),
    ("total_count", ("total", "count"), ()),
    ("alarm", ("alarm",), ()),
    ("auto_mode", ("auto",), ()),
    ("state", ("state", "status"), ()),
)
_ID = re.compile(r"[^A-Za-z0-9_.\-]+")
NUMERIC_TYPES = INTEGER_TYPES | {"Boolean", "Float", "Double"}
# Objects that are parts of a machine, not machines: their variables belong to the nearest
# enclosing object that is not one of these (OPC 40001-1 Machinery, OPC 30050 PackML, and
# the CurrentState variable of a state machine, whose Number child holds the state code).
COMPONENTS = frozenset({
    "identification", "machinerybuildingblocks", "machineryitemstate", "machineryoperationmode",
    "currentstate", "monitoring", "status", "admin", "packml",
})
# State-code guesses, best first: a companion specification beats a name.
_STATE_PRIORITY = {"opcua_machinery": 0, "packml": 1, "guess": 2, "operation_mode": 3}
_COUNTER_ROLES = frozenset({"good_count", "reject_count", "total_count"})
_COUNTER_BITS = {"UInt16": 16, "Int16": 16, "UInt64": 64, "Int64": 64}
PLAIN_MEANING = (
    "plain is 0 offline, 1 running, 2 idle, 3 setup, 4 planned_stop, 5 unplanned_stop;\n"
    "other presets: packml (PackML states 0-17), opcua_machinery (0-3)"
)


@dataclass
class SignalDraft:
    id: str
    role: str
    variable: Variable
    state_map: str | None = None
    notes: list[str] = field(default_factory=list)  # written as "# check: ..." comments
    collect: bool = True  # False: written commented out (text, or no value type we keep)


@dataclass
class DeviceDraft:
    id: str
    name: str
    line: str
    path: str  # browse path of the device object
    kind: str
    signals: list[SignalDraft]


def _words(name: str) -> list[str]:
    """Lower-case words of a CamelCase / snake_case name ("NGCount" -> ["ng", "count"])."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    spaced = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1 \2", spaced)
    return re.sub(r"[^A-Za-z0-9]+", " ", spaced).lower().split()


def guess_role(name: str) -> str:
    """The signal role suggested by a variable's name; `process` when nothing matches.

    "NG" counts as a reject only as a word of its own ("NGCount", "count_ng"), never inside
    another word ("Running").
    """
    words = _words(name)
    lowered = name.lower()
    for role, fragments, whole_words in _ROLE_RULES:
        if any(f in lowered for f in fragments) or any(w in words for w in whole_words):
            return role
    return "process"


# --- grouping into devices ----------------------------------------------------------------


def config_id(text: str, fallback: str) -> str:
    """`text` as a config id: letters, digits, '_', '.', '-', starting with a letter or
    digit, at most 64 characters."""
    cleaned = _ID.sub("_", text).lstrip("_.-")[:64].rstrip("_.-")
    return cleaned or fallback


def _unique(base: str, used: set[str]) -> str:
    candidate, n = base, 2
    while candidate in used:
        suffix = f"_{n}"
        candidate, n = base[: 64 - len(suffix)] + suffix, n + 1
    used.add(candidate)
    return candidate


def _device_path(variable: Variable) -> tuple[str, list[str]]:
    """(browse path of the owning device, the variable's path relative to it)."""
    parts = variable.browse_path.split("/")
    owner = parts[:-1]
    while owner and owner[-1].lower() in COMPONENTS:
        owner = owner[:-1]
    return "/".join(owner), parts[len(owner) :]


def _kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind in ("cnc", "robot") if kind in lowered), "other")


def group_devices(found: Sequence[Variable]) -> list[DeviceDraft]:
    """One draft per object holding variables, in browse order, ids unique."""
    by_path: dict[str, list[Variable]] = {}
    for variable in found:
        path, _ = _device_path(variable)
        by_path.setdefault(path, []).append(variable)
    devices: list[DeviceDraft] = []
    used: set[str] = set()
    for path, variables in by_path.items():
        parts = path.split("/") if path else []
        name = parts[-1] if parts else "Objects"
        device_id = _unique(config_id(name, "device"), used)
        line = parts[-2] if len(parts) >= 2 else "line-1"
        packml = "packml" in path.lower() or any(
            v.name.lower() in ("statecurrent", "unitmodecurrent") for v in variables
        )
        signals = _signals(variables, packml)
        devices.append(DeviceDraft(device_id, name, line, path, _kind(name), signals))
    return devices


def _state_kind(relative: Sequence[str], variable: Variable, packml: bool) -> str | None:
    """Which kind of state code an integer variable holds, if it looks like a state."""
    lowered = [part.lower() for part in relative]
    if "machineryitemstate" in lowered:
        return "opcua_machinery"
    if "machineryoperationmode" in lowered:
        return "operation_mode"
    if variable.name.lower() == "statecurrent":
        return "packml"
    if guess_role(variable.name) == "state":
        return "packml" if packml else "guess"
    return None


def _signals(variables: Sequence[Variable], packml: bool) -> list[SignalDraft]:
    drafts: list[SignalDraft] = []
    used: set[str] = set()
    state_kinds: dict[int, str] = {}
    for variable in variables:
        _, relative = _device_path(variable)
        signal_id = _unique(config_id(".".join(relative), "signal"), used)
        draft = SignalDraft(signal_id, "process", variable)
        draft.collect = variable.data_type in NUMERIC_TYPES or (
            variable.data_type not in ("String", "LocalizedText", "ByteString", "DateTime")
            and isinstance(variable.value, int | float)
        )
        kind = _state_kind(relative, variable, packml)
        integer = variable.data_type in INTEGER_TYPES
        if kind is not None and integer:
            draft.role = "state"
            state_kinds[len(drafts)] = kind
        elif kind is not None or guess_role(variable.name) == "state":
            draft.notes.append(f"a state as {variable.data_type}, not an integer code")
        else:
            draft.role = guess_role(variable.name)
        if variable.name.lower() == "unitmodecurrent":
            draft.notes.append("PackML unit mode: 1 production, 2 maintenance, 3 manual")
        if not draft.collect:
            draft.role = "process"
        drafts.append(draft)
    _one_state(drafts, state_kinds)
    _one_per_role(drafts)
    return drafts


def _one_state(drafts: list[SignalDraft], state_kinds: dict[int, str]) -> None:
    """The best state candidate keeps the role and gets its state map; others are process."""
    if not state_kinds:
        return
    best = min(state_kinds, key=lambda i: (_STATE_PRIORITY[state_kinds[i]], i))
    for index, kind in state_kinds.items():
        draft = drafts[index]
        if index != best:
            draft.role = "process"
            draft.notes.append(f"also looks like a state ({kind}); one state per device")
            continue
        named = preset_of_names(draft.variable.enum_names)
        if named is not None:  # the server names its codes: no guess needed
            draft.state_map = named
            continue
        if draft.variable.enum_names:
            draft.notes.append(
                "the server names the codes " + ", ".join(
                    f"{code} {name}" for code, name in enumerate(draft.variable.enum_names))
                + ": no preset has these names; write a state_maps entry")
        if kind in ("opcua_machinery", "packml"):
            draft.state_map = kind
            continue
        running = _running_codes(draft.variable, [d.variable for d in drafts if d.role in
                                                  ("good_count", "total_count")])
        draft.state_map, note = _guess_state_map(draft.variable.codes, kind, running)
        draft.notes.append(note)


def _running_codes(state: Variable, counters: Sequence[Variable]) -> set[int]:
    """State codes held while a piece counter went up: the codes that mean running."""
    running: set[int] = set()
    codes = state.history
    for counter in (c for c in counters if len(c.history) == len(codes)):  # read together
        for i in range(1, len(codes)):
            before, after, code = counter.history[i - 1], counter.history[i], codes[i]
            if not (isinstance(before, int) and isinstance(after, int) and isinstance(code, int)):
                continue
            if code == codes[i - 1] and after > before:
                running.add(code)
    return running


# The names servers give each preset's codes (EnumStrings, index = code), compared without
# case, spaces or punctuation: OPC 30050 PackML states, OPC 40001 MachineryItemState, and
# the plain map's own words.
_PRESET_NAMES: dict[str, tuple[str, ...]] = {
    "packml": (
        "undefined", "clearing", "stopped", "starting", "idle", "suspended", "execute",
        "stopping", "aborting", "aborted", "holding", "held", "unholding", "suspending",
        "unsuspending", "resetting", "completing", "complete",
    ),
    "opcua_machinery": ("notavailable", "outofservice", "notexecuting", "executing"),
    "plain": ("offline", "running", "idle", "setup", "plannedstop", "unplannedstop"),
}


def preset_of_names(names: Sequence[str]) -> str | None:
    """The preset whose codes have exactly these names (index = code), or None."""
    normal = tuple(re.sub(r"[^a-z0-9]", "", name.lower()) for name in names)
    for preset, table in _PRESET_NAMES.items():
        if normal == table:
            return preset
    return None


# The code that means running in each preset, for a guess from a counter going up.
_RUNNING_CODE = {6: "packml", 16: "packml", 1: "plain", 3: "opcua_machinery"}


def _guess_state_map(codes: Sequence[int], kind: str, running: set[int]) -> tuple[str, str]:
    seen = ", ".join(str(c) for c in sorted(codes)) or "none"
    presets = {_RUNNING_CODE[c] for c in running if c in _RUNNING_CODE}
    if kind == "guess" and len(presets) == 1:
        preset = presets.pop()
        code = ", ".join(str(c) for c in sorted(running))
        return preset, f"pieces were counted while the state was {code}: {preset} is guessed"
    if kind == "operation_mode":
        return "plain", (
            "state codes unknown: MachineryOperationMode (0 none, 1 maintenance, 2 setup, "
            "3 processing) fits no preset; write a state_maps entry"
        )
    if codes and 5 < max(codes) <= 17 and min(codes) >= 0:
        return "packml", f"codes seen {seen}: above 5, so PackML is guessed"
    return "plain", f"state codes unknown (seen: {seen}); {PLAIN_MEANING}"


def _one_per_role(drafts: list[SignalDraft]) -> None:
    """A role other than process and alarm is bound once per device: later ones are process."""
    taken: set[str] = set()
    for draft in drafts:
        if draft.role in ("process", "alarm") or not draft.collect:
            continue
        if draft.role in taken:
            draft.notes.append(f"also looks like {draft.role}, already bound in this device")
            draft.role = "process"
        taken.add(draft.role)


# --- YAML -----------------------------------------------------------------------------------


def quoted(text: str) -> str:
    """A YAML double-quoted scalar (JSON strings are valid YAML)."""
    return json.dumps(text, ensure_ascii=False)


def _shown(value: bool | int | float | str | None) -> str:
    if value is None:
        return "no value read"
    if isinstance(value, bool):
        return f"now {'true' if value else 'false'}"
    if isinstance(value, str):
        return f"now {quoted(value[:40])}"
    if isinstance(value, float):
        return f"now {value:.6g}"
    return f"now {value}"


def render_devices(devices: Sequence[DeviceDraft], connection: str) -> list[str]:
    """YAML lines of the `devices:` list items (indented two spaces) with comments."""
    lines: list[str] = []
    for device in devices:
        collected = [s for s in device.signals if s.collect]
        if not collected:
            lines.append(f"  # {device.path or 'Objects'}: no numeric variables; not a device here")
            continue
        lines += [
            f"  # {device.path or 'Objects'}: {len(collected)} signal(s) found",
            f"  - id: {quoted(device.id)}",
            f"    name: {quoted(device.name)}",
            f"    line: {quoted(device.line)}  # CHANGE ME if wrong: the parent folder's name",
            f"    process_step: {quoted(device.name)}  # CHANGE ME: the process step it serves",
            "    key_process: false  # CHANGE ME: true for a key process (key-process rates)",
            f"    kind: {device.kind}  # CHANGE ME: cnc, robot, plc_automated, manual or other",
            "    digital: true",
            f"    connection: {quoted(connection)}",
            "    signals:",
        ]
        for signal in device.signals:
            lines += _signal_lines(signal)
    return lines


def _signal_lines(signal: SignalDraft) -> list[str]:
    variable = signal.variable
    about = f"{variable.data_type}, {_shown(variable.value)}"
    body = [f"- id: {quoted(signal.id)}", f"  role: {signal.role}"]
    if signal.state_map is not None:
        body.append(f"  state_map: {signal.state_map}")
    bits = _COUNTER_BITS.get(variable.data_type)
    if signal.role in _COUNTER_ROLES and bits is not None:
        body.append(f"  counter_bits: {bits}  # wraps as its {variable.data_type} type does")
    body.append(f"  opcua: {{node: {quoted(variable.node)}}}  # {about}")
    notes = [
        f"      # {'check: ' if n == 0 else '  '}{line}"
        for note in signal.notes
        for n, line in enumerate(note.splitlines())
    ]
    if signal.collect:
        return notes + [f"      {line}" for line in body]
    why = f"      # {variable.browse_path}: {variable.data_type}, not collected; uncomment to keep"
    return [why, *notes, *(f"      # {line}" for line in body)]
