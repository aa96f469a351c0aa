"""A fast path to RFC 8785 canonical JSON: the same bytes as the rfc8785 library, or None.

rfc8785 is pure Python and costs about 4 µs per JSON value, 30-40 ms per daily report, and
every report is canonicalised when built and again when signed (and by the bureau when
verified). The C JSON encoder writes RFC 8785 for everything but two things, which a copy of
the value settles first:

- numbers: ECMAScript prints an integral float without a fraction (3.0 -> 3) and switches
  to exponents at other magnitudes than Python's repr. The copy turns integral floats below
  2^53 into ints (exact there, and printed the same), keeps floats whose repr is positional
  ([1e-4, 1e16), where repr and ECMAScript print the same shortest digits), and gives up on
  any other float (NaN, Inf, tiny, huge);
- member order: RFC 8785 sorts keys by UTF-16 code units, Python by code points; for ASCII
  keys these agree, and any other key gives up.

Giving up (None) sends the caller to the rfc8785 library, which decides, errors included.
tests/delivery/test_canonical_fast.py holds the two to the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

_INT_LIMIT = 2**53 - 1  # RFC 8785 / I-JSON: integers beyond are not exact as JSON numbers
_FLOAT_EXACT = float(2**53)
_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"),
    check_circular=False,
)


class _Unsure(Exception):
    """The fast path cannot promise rfc8785's bytes for this value."""


def fast_canonical_bytes(value: Any) -> bytes | None:
    """RFC 8785 bytes of `value`, or None when the rfc8785 library must decide."""
    form = fast_canonical_form(value)
    return None if form is None else form[0]


def fast_canonical_form(value: Any) -> tuple[bytes, Any] | None:
    """RFC 8785 bytes of `value` and a copy of `value` equal to `json.loads` of those bytes
    (integral floats as ints, tuples as lists, members in sorted order), or None when the
    rfc8785 library must decide."""
    try:
        copy = _prepared(value)
        return _ENCODER.encode(copy).encode("utf-8"), copy
    except (_Unsure, UnicodeEncodeError, RecursionError, ValueError, TypeError):
        return None


def _prepared(value: Any) -> Any:
    """A copy of `value` that the C encoder prints as RFC 8785; exact types only (a subclass
    such as a numpy float or a str enum goes to the library)."""
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is float:
        return _number(value)
    if kind is int:
        if -_INT_LIMIT <= value <= _INT_LIMIT:
            return value
        raise _Unsure
    if kind is list or kind is tuple:
        # Plain ints, strs and floats inline: a report is mostly rows of numbers.
        copy: list[Any] = []
        add = copy.append
        for item in value:
            item_kind = type(item)
            if (item_kind is int and -_INT_LIMIT <= item <= _INT_LIMIT) or item_kind is str:
                add(item)
            elif item_kind is float:
                add(_number(item))
            else:
                add(_prepared(item))
        return copy
    if kind is dict:
        members = {}
        for key in sorted(value) if all(type(key) is str for key in value) else ():
            if not key.isascii():
                raise _Unsure
            members[key] = _prepared(value[key])
        if len(members) != len(value):  # a key that is not a str
            raise _Unsure
        return members
    raise _Unsure


def _number(number: float) -> float | int:
    if number.is_integer():  # False for NaN and Inf
        if -_FLOAT_EXACT < number < _FLOAT_EXACT:
            return int(number)
        raise _Unsure
    if 1e-4 <= abs(number) < 1e16:  # False for NaN
        return number
    raise _Unsure
