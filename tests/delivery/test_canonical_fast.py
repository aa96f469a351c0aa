"""The fast canonical JSON path gives rfc8785's bytes exactly, or steps aside (issue 20 item 11).

Signatures and hash chains are over these bytes: one differing byte would make every report
unverifiable, so the fast path is held to the library on numbers of every magnitude, on
strings that need escaping, and on the report-shaped values it exists for.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
import rfc8785

from agent.protocol.canonical import fast_canonical_bytes, fast_canonical_form
from agent.protocol.envelope import EnvelopeError, canonical_bytes, canonical_form


def _floats(count: int) -> list[float]:
    rnd = random.Random(8785)
    values = [0.0, -0.0, 1e-4, 9.999999999999999e-05, 1e16, 9999999999999998.0, 2.0**53,
              2.0**53 - 1, -(2.0**53) + 1, 0.1, 1e21, 1e-7, 5e-324, 1.7976931348623157e308,
              123456789.125, -0.5]
    for _ in range(count):
        magnitude = 10 ** rnd.uniform(-12, 24) * rnd.choice([-1, 1])
        values += [magnitude, float(round(magnitude)), float(rnd.randint(-(2**54), 2**54))]
    return values


def test_numbers_print_as_rfc8785_prints_them() -> None:
    fast = 0
    for value in _floats(30_000):
        mine = fast_canonical_bytes(value)
        if mine is not None:
            fast += 1
            assert mine == rfc8785.dumps(value), repr(value)
        assert canonical_bytes(value) == rfc8785.dumps(value)
    assert fast > 40_000  # the usual magnitudes do take the fast path


def test_strings_members_and_nesting() -> None:
    value: dict[str, Any] = {
        "s": "\x00\x1f\x7f\"\\/\b\f\n\r\t中文\u2028 é",
        "b": [True, False, None, 1, -2, 3.5, [], {}],
        "z": {"b": 1, "a": 2, "A": [1.0, 2.5, (3, 4)]},
        "k": 2**53 - 1,
    }
    assert fast_canonical_bytes(value) == rfc8785.dumps(value)
    payload, copy = canonical_form(value)
    assert payload == rfc8785.dumps(value)
    assert copy == json.loads(payload) and list(copy) == list(json.loads(payload))


@pytest.mark.parametrize("value", [
    {"é": 1},  # non-ASCII member name: UTF-16 order is the library's to decide
    {1: "x"},  # not a str member name
    "lone \ud800 surrogate",
    math.nan,
    2**53,
    1e-7,
    (1.5).__class__.fromhex("0x1p-30"),
])
def test_anything_unsure_goes_to_the_library(value: Any) -> None:
    assert fast_canonical_form(value) is None
    try:
        expected: bytes | None = rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeEncodeError, TypeError, ValueError):
        expected = None
    if expected is None:
        with pytest.raises(EnvelopeError):
            canonical_bytes(value)
    else:
        assert canonical_bytes(value) == expected


def test_a_subclass_is_the_library_s() -> None:
    import numpy as np

    value = {"x": np.float64(1.0), "y": [np.float64(0.25)]}
    assert fast_canonical_form(value) is None
    assert canonical_bytes(value) == rfc8785.dumps(value)


def _strict_verdict(payload: bytes) -> Any:
    """What the strict path (strict parse + rfc8785 re-encoding) says of `payload`."""
    from agent.protocol.envelope import strict_loads

    try:
        value = strict_loads(payload)
        return value if rfc8785.dumps(value) == payload else "not canonical"
    except (EnvelopeError, rfc8785.CanonicalizationError, UnicodeEncodeError, ValueError):
        return "error"


def test_the_verifier_fast_parse_never_accepts_what_the_strict_path_rejects() -> None:
    """If a payload is not RFC 8785 canonical (integral or exponent floats, integers past
    2^53 - 1, duplicate or unsorted members, whitespace, non-ASCII member order, a bare
    number, too deep), then the fast parse steps aside (None); when it accepts, the strict
    path accepts the same value (issue 18 item 6)."""
    from agent.protocol.envelope import _canonical_parse

    canonical = [
        rfc8785.dumps(v) for v in (
            {"a": 1, "b": [0.5, -2, "x"], "c": {"d": None, "e": True}},
            {"n": 0.0001, "m": 123456789.125, "k": 10**15 - 1, "s": "中文\u2028\n\x00"},
            {"h": "0123456789abcdef" * 4, "é": 1, "z": [[{"y": 1.5}]]},
            # steps aside: a look-alike string, 16 digits, exponents, 4-byte UTF-8
            {"a": "x:1.0,"}, {"k": 2**53 - 1}, {"f": [1e-7, 1e21, 5e-324, 0.0, -0.0]},
            {"\U0001f600": 1, "\uff01": 2},
        )
    ]
    others = [
        b'{"a":1.0}', b'{"a":1e-05}', b'{"a":1E5}', b'{"a":[1.5e+16]}', b'{"a":-0.0}',
        b'{"a":9007199254740993}', b'{"a":1,"a":2}', b'{"b":1,"a":2}', b'{"a": 1}',
        b'{"a":"\\u0041"}', b'{"a":NaN}', b"1.0", b"[1.0]", b'{"a":' + b"[" * 40 + b"]" * 40 + b"}",
        b'{"a":"\xff"}', b'{"\xf0\x9f\x98\x80":1,"\xef\xbc\x81":2}', b'{"a":100000000000000000}',
    ]
    fast_accepted = 0
    for payload in canonical + others:
        mine = _canonical_parse(payload)
        strict = _strict_verdict(payload)
        if mine is not None:
            fast_accepted += 1
            assert strict == mine, payload
        if payload in others:
            assert mine is None, payload
    assert fast_accepted == 3  # the first three take the fast path
    for value in _floats(3_000)[:3_000]:
        payload = rfc8785.dumps({"v": [value, {"w": value}]})
        mine = _canonical_parse(payload)
        assert mine is None or mine == _strict_verdict(payload), payload
        wrong = json.dumps({"v": [value, {"w": value}]}, separators=(",", ":")).encode()
        if wrong != payload:
            assert _canonical_parse(wrong) is None, wrong


def test_base64url_check_gives_the_regular_expression_s_verdicts() -> None:
    """`_b64url_decode` checks the alphabet by one deletion pass; it must decide exactly as
    the check it replaced, `^[A-Za-z0-9_-]*$` (a final newline included, which `$` lets
    through) then base64, did."""
    import base64
    import binascii
    import re

    from agent.protocol.envelope import _b64url_decode

    expression = re.compile(rb"^[A-Za-z0-9_-]*$")

    def before(part: bytes) -> bytes | None:
        if not expression.match(part):
            return None
        try:
            return base64.urlsafe_b64decode(part + b"=" * (-len(part) % 4))
        except (binascii.Error, ValueError):
            return None

    rng = random.Random(5)
    alphabet = b"AZaz09_-=+/ \n\r.\x00\xff"
    for _ in range(20_000):
        part = bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 7)))
        try:
            now: bytes | None = _b64url_decode(part, "payload")
        except EnvelopeError:
            now = None
        assert now == before(part), part
