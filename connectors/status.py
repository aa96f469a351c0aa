"""Names of the status codes a bad `Sample` carries: OPC UA StatusCodes by their standard
name, Modbus exception codes by their meaning."""

from __future__ import annotations

from functools import lru_cache

MODBUS_EXCEPTIONS = {
    1: "illegal function",
    2: "illegal address",
    3: "illegal value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    10: "gateway path unavailable",
    11: "gateway target failed to respond",
}
# connectors.modbus: a register block that cannot be decoded as the configured type.
MODBUS_DECODE_ERROR = 0x1_0000


@lru_cache(maxsize=256)
def opcua_status_name(code: int) -> str:
    """`BadNodeIdUnknown` for 0x80340000; the hex code when asyncua cannot name it."""
    from asyncua import ua

    try:
        return str(ua.StatusCode(ua.UInt32(code)).name)
    except Exception:  # an unknown code: asyncua cannot name it
        return f"0x{code:08X}"


def status_text(code: int) -> str:
    """A bad sample's status in words, whichever protocol it came from."""
    if code == MODBUS_DECODE_ERROR:
        return "value cannot be decoded"
    if 0 < code <= 0xFF:
        return f"Modbus exception {code:02d} ({MODBUS_EXCEPTIONS.get(code, 'unknown')})"
    return opcua_status_name(code)
