"""How a sample value is kept in `samples.value`, exactly, and read back.

The column has no declared type, so SQLite keeps each value's own storage class. SQLite
holds natively, without loss: NULL, text, floats including +Inf, -Inf and -0.0, and
integers in [-2^63, 2^63 - 1]. Two things it cannot hold natively:

- integers in [2^63, 2^64 - 1] (a uint64 register or OPC UA UInt64): binding one raises
  OverflowError;
- NaN: SQLite silently stores it as NULL, which would make it a "no value".

Those two are kept as 9-byte tagged BLOBs (no sample value of ours is otherwise a blob):

- `b"u"` + 8 bytes big-endian unsigned: an integer 2^63 ..= 2^64 - 1;
- `b"f"` + 8 bytes big-endian IEEE 754 binary64: a NaN, its sign and payload bits kept.

Bools are stored as the integers 0 and 1 (SQLite has no bool) and read back as ints.

Anything else cannot be held: an int below -2^63 or above 2^64 - 1, a str with a lone
surrogate (not UTF-8), any other type. `Store.ingest` turns such a sample into a BAD one
without value rather than failing the batch.
"""

from __future__ import annotations

import math
import struct
from typing import Any, Final

import numpy as np
import numpy.typing as npt

INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
UINT64_MAX: Final = 2**64 - 1

_U64_TAG: Final = b"u"
_F64_TAG: Final = b"f"
_BLOB_LEN: Final = 9

# Exceptions sqlite3 raises while binding a value it cannot take: an int outside int64
# (OverflowError), a str that is not UTF-8 (UnicodeEncodeError), an unsupported type
# (sqlite3.ProgrammingError, checked by the caller as it is a sqlite3.Error too).
BIND_ERRORS: Final = (OverflowError, UnicodeEncodeError)


class Unstorable:
    """Marker for a value the store cannot hold (see the module docstring)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNSTORABLE"


UNSTORABLE: Final = Unstorable()

StoredValue = None | int | float | str | bytes


def _nan_blob(value: float) -> bytes:
    return _F64_TAG + struct.pack(">d", value)


def stored_value(value: Any) -> StoredValue | Unstorable:
    """One value as bound to SQLite, or UNSTORABLE. The slow, complete path: used only for
    a batch whose fast path (`stored_column`) SQLite refused."""
    if isinstance(value, np.generic):  # numpy scalars from history files: plain Python first
        value = value.item()
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return value
        if INT64_MAX < value <= UINT64_MAX:
            return _U64_TAG + value.to_bytes(8, "big")
        return UNSTORABLE
    if isinstance(value, float):
        return _nan_blob(value) if math.isnan(value) else value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return UNSTORABLE
        return value
    return UNSTORABLE


def stored_column(values: npt.NDArray[Any]) -> list[Any]:
    """The values as bound to SQLite: the fast path, vectorised.

    Only NaN is rewritten here (SQLite would store it as NULL without complaint). Out of
    range ints and other unbindable values make SQLite raise; the caller then falls back to
    `stored_value` per value. So the common batch of plain ints and floats costs one
    vectorised NaN test on top of `tolist()`.
    """
    out: list[Any] = values.tolist()
    if values.dtype.kind == "f":
        nan = np.isnan(values)
    elif values.dtype == object:
        try:
            # x != x is true exactly for NaN (a float or a numpy float); elementwise in C.
            nan = np.asarray(values != values, dtype=bool)
        except (TypeError, ValueError):
            # An exotic value whose comparison fails: the per-value path handles everything.
            return [stored_value(value) for value in out]
        if nan.shape != values.shape:
            return [stored_value(value) for value in out]
    else:
        return out  # ints and bools: no NaN; out-of-range ints make SQLite raise
    for index in np.flatnonzero(nan).tolist():
        out[index] = _nan_blob(float(out[index]))
    return out


def read_value(blob: bytes) -> int | float | bytes:
    """A tagged BLOB back to the value it stands for (other blobs are returned as they are)."""
    if len(blob) == _BLOB_LEN:
        tag, payload = blob[:1], blob[1:]
        if tag == _U64_TAG:
            return int.from_bytes(payload, "big")
        if tag == _F64_TAG:
            value: float = struct.unpack(">d", payload)[0]
            return value
    return blob
