"""Structured mutations for the parser fuzz tests (Z1): start from a valid input of the
corpus (tests/fuzz/corpus/<target>/) and break it the ways hostile or damaged input breaks:
flipped, dropped, inserted or repeated bytes; dropped, duplicated or renamed members;
values of the wrong type, numbers outside every range, deep nesting, long strings."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

CORPUS = Path(__file__).resolve().parent / "corpus"

HOSTILE_SCALARS: tuple[Any, ...] = (
    None, True, False, 0, -1, 2**31, 2**53, 2**53 + 1, -(2**63), 2**64, 10**30, 1e308, -1e308,
    5e-324, -0.0, 0.5, "", " ", "\x00", "\u202e", "é", "𝄞", "A" * 10_000, "1", "true",
    "null", "NaN", "../../etc/passwd", "' OR 1=1 --", "2025-03-02T00:05:00Z", [], {},
)
json_leaves = st.one_of(
    st.sampled_from(HOSTILE_SCALARS),
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=50),
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)


def corpus_files(target: str) -> list[Path]:
    return sorted(p for p in (CORPUS / target).iterdir() if p.is_file())


def corpus_bytes(target: str, suffix: str | None = None) -> list[bytes]:
    return [
        p.read_bytes() for p in corpus_files(target) if suffix is None or p.suffix == suffix
    ]


# ---- JSON-like values -------------------------------------------------------------------

Path_ = tuple[str | int, ...]


def _paths(value: Any, here: Path_ = ()) -> list[Path_]:
    found = [here]
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*here, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*here, index))
    return found


def _parent(value: Any, path: Path_) -> Any:
    for step in path[:-1]:
        value = value[step]
    return value


@st.composite
def _mutate_once(draw: st.DrawFn, value: Any) -> Any:
    paths = _paths(value)
    path = paths[draw(st.integers(0, len(paths) - 1))]
    op = draw(st.sampled_from(("replace", "drop", "retype", "nest", "duplicate", "rename")))
    if not path:  # the whole value
        if op == "nest":
            return _nested(value, draw(st.integers(1, 60)))
        return draw(json_values) if op in ("replace", "drop", "retype") else value
    parent, last = _parent(value, path), path[-1]
    current = parent[last]
    if op == "replace":
        parent[last] = draw(json_values)
    elif op == "drop":
        del parent[last]
    elif op == "retype":
        parent[last] = draw(st.sampled_from(
            (str(current), [current], {"value": current}, None, len(str(current)))
        ))
    elif op == "nest":
        parent[last] = _nested(current, draw(st.integers(1, 60)))
    elif op == "duplicate":
        if isinstance(parent, list):
            parent.insert(last if isinstance(last, int) else 0, copy.deepcopy(current))
        else:
            parent[f"{last}{draw(st.sampled_from(('', '_', ' ', 'X')))}2"] = copy.deepcopy(current)
    elif op == "rename" and isinstance(parent, dict):
        parent[draw(st.text(max_size=12))] = parent.pop(last)
    return value


def _nested(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


@st.composite
def mutated_value(draw: st.DrawFn, base: Any, max_mutations: int = 4) -> Any:
    """`base` (not changed) with 1..max_mutations structured mutations applied."""
    value = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, max_mutations))):
        value = draw(_mutate_once(value))
    return value


@st.composite
def mutated_member(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    """`base` with one top-level member replaced by any JSON value or dropped: the members a
    parser reads first, hit more often than `mutated_value`'s uniform choice of any node."""
    value = dict(base)
    key = draw(st.sampled_from(sorted(value)))
    if draw(st.booleans()):
        value[key] = draw(json_values)
    else:
        del value[key]
    return value


_MEMBER = re.compile(rb'[{,]"([^"\\]{1,40})":')


@st.composite
def duplicate_member(draw: st.DrawFn, text: bytes) -> bytes:
    """JSON text with one member repeated in its object (a parse that keeps the last would
    see another value than one that keeps the first)."""
    members = list(_MEMBER.finditer(text))
    if not members:
        return text
    member = members[draw(st.integers(0, len(members) - 1))]
    value = json.dumps(draw(json_leaves)).encode()
    at = member.start() + 1
    return text[:at] + b'"' + member.group(1) + b'":' + value + b"," + text[at:]


# ---- bytes --------------------------------------------------------------------------------

MAGIC = (b"\x00", b"\xff", b"\xc3\x28", b'"', b"\\", b"{", b"}", b"[", b"]", b".", b"=",
         b"\\u0000", b"\\ud800", b"1e999", b"-0", b"NaN", b"\n", b"\r\n", b"\t", b" ", b"&a *a")


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes, max_mutations: int = 4) -> bytes:
    """`data` with 1..max_mutations byte-level mutations (flip, delete, insert, repeat,
    truncate, magic values)."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_mutations))):
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        op = draw(st.sampled_from(("flip", "delete", "insert", "repeat", "truncate", "magic")))
        if op == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 64))]
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif op == "repeat":
            piece = out[at : at + draw(st.integers(1, 256))]
            out[at:at] = piece * draw(st.integers(1, 64))
        elif op == "truncate":
            del out[at:]
        else:
            out[at:at] = draw(st.sampled_from(MAGIC))
    return bytes(out)
