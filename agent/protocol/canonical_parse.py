"""The fast path of canonical-form verification: the parse of a payload when it is surely
RFC 8785 canonical JSON within the depth limit, or None for the strict path
(agent.protocol.envelope: `strict_loads`, then `canonical_bytes` compared), which decides.
tests/delivery/test_canonical_fast.py holds the two to the same verdict.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

MAX_JSON_DEPTH = 32


def _no_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed.")


# What the C encoder prints otherwise than RFC 8785, once its output equals the payload: a
# float in exponent form ("1e-05", "1e+16"), an integral float
# ("3.0", ending a number before ',', ']' or '}'), an integer of 16 digits or more (it may
# exceed 2^53 - 1), and member names beyond U+FFFF (code points sort otherwise than UTF-16
# code units). Plain substring searches (a regular expression over a 16 KB report cost
# 0.45 ms); a string that looks alike only costs the strict path.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_INTEGRAL_ENDS = (b".0,", b".0]", b".0}")
# Python writes an exponent as e-NN, e+NN or with three digits, and a number ends at ',', ']'
# or '}' (a UUID's "9e-6e30" is no exponent).
_EXPONENTS = tuple(
    b"0e" + sign + digits + end
    for sign in (b"-", b"+") for digits in (b"00", b"000") for end in (b",", b"]", b"}")
)
_LONG_NUMBER = b"0" * 16


# The two lists above as one pass each over the payload (fifteen substring searches of a
# 16 KB report cost ≈0.1 ms).
_INTEGRAL_END = re.compile(b"|".join(re.escape(end) for end in _INTEGRAL_ENDS))
_EXPONENT = re.compile(b"|".join(re.escape(e) for e in _EXPONENTS))


def _surely_canonical_numbers(payload: bytes) -> bool:
    if _INTEGRAL_END.search(payload):
        return False
    digits = payload.translate(_DIGITS_AS_ZERO)
    if _EXPONENT.search(digits):
        return False
    # Runs of 16+ digits after a '.' are fractions; any other adds to the first count only.
    return digits.count(_LONG_NUMBER) == digits.count(b"." + _LONG_NUMBER)


_NOT_STRUCTURE = bytes(set(range(256)) - set(b'[]{}"'))
_STRING_SPAN = re.compile(rb'"[^"]*"')


def _compact_depth(payload: bytes) -> int:
    """`_depth` of compact JSON bytes by C-speed passes: escaped backslashes and quotes
    dropped (left to right, as a JSON parser pairs them), then everything but brackets and
    quotes, then the (now bracket-only) strings."""
    plain = payload.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _NOT_STRUCTURE)
    brackets = np.frombuffer(_STRING_SPAN.sub(b"", plain), dtype=np.uint8)
    if not len(brackets):
        return 0
    steps = np.where((brackets == ord("[")) | (brackets == ord("{")), 1, -1)
    return int(np.cumsum(steps).max())


def parse_unverified(payload: bytes) -> Any | None:
    """`payload` parsed by the C parser as `_canonical_parse` parses it (NaN and Infinity
    refused), or None when it is not such JSON. For a verifier that wants the ids a payload
    claims before its signature is checked (to send its look-ups early), and then hands the
    value to `verify_compact` instead of parsing twice. Nothing in it is trusted before that."""
    try:
        return json.loads(payload.decode("utf-8", errors="strict"),
                          parse_constant=_no_constant)
    except (ValueError, RecursionError, UnicodeError):
        return None


def _canonical_parse(payload: bytes, parsed: Any = None) -> Any | None:
    """The parse of `payload` when it is surely canonical JSON within our limits, else None.
    `parsed`: `parse_unverified(payload)`, when the caller has it.

    The bureau verifies thousands of reports a second, and the strict path (a duplicate-member
    hook, then a canonical re-encoding in Python) costs about 0.6 ms a report. Here: the C
    parser, then the C encoder must give back exactly `payload`. Equal bytes rule out
    duplicate members (the parse would have fewer), whitespace, escapes and member order other
    than RFC 8785's; `_surely_canonical_numbers` rules out the number forms where Python and
    RFC 8785 print differently; the depth bound is checked as in `strict_loads`. Anything
    else returns None and takes the strict path (tests/delivery/test_canonical_fast.py holds
    the two to the same verdict).
    """
    if not payload.startswith(b"{") or not _surely_canonical_numbers(payload):
        return None  # (and a bare value: "1.0" would pass the checks above)
    try:
        text = payload.decode("utf-8", errors="strict")
        if not text.isascii() and max(text) > "\uffff":
            return None
        value = json.loads(text, parse_constant=_no_constant) if parsed is None else parsed
        if _CANONICAL_ENCODER.encode(value).encode("utf-8") != payload:
            return None
    except (ValueError, RecursionError, UnicodeError):
        return None
    if _compact_depth(payload) > MAX_JSON_DEPTH:
        return None
    return value


_CANONICAL_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"),
    check_circular=False,
)
