"""The simulator's own register encoding: engineering value -> registers as a device sends them.

Written independently of the agent's decoder on purpose (the simulator is the agent's test
counterpart: sharing code would make both ends agree on the same mistakes). Follows
docs/config.md: value = raw x scale + offset; `order` ABCD (big-endian), CDAB (registers low
first: the word list reversed, for 32- and 64-bit alike), BADC (bytes swapped in each
register), DCBA (little-endian: both).
"""

from __future__ import annotations

import math
import struct

WIDTH: dict[str, int] = {
    "uint16": 1,
    "int16": 1,
    "uint32": 2,
    "int32": 2,
    "float32": 2,
    "uint64": 4,
    "int64": 4,
    "float64": 4,
}
_STRUCT: dict[str, str] = {
    "uint16": ">H",
    "int16": ">h",
    "uint32": ">I",
    "int32": ">i",
    "float32": ">f",
    "uint64": ">Q",
    "int64": ">q",
    "float64": ">d",
}


def _int_range(type_: str) -> tuple[int, int]:
    bits = 16 * WIDTH[type_]
    if type_.startswith("u"):
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def raw_value(value: float, type_: str, scale: float = 1.0, offset: float = 0.0) -> float | int:
    """The number the device stores: (value - offset) / scale; integers rounded and clamped to
    the type's range (a transmitter saturates, it does not wrap)."""
    raw = (value - offset) / scale
    if type_.startswith("float"):
        return raw
    lo, hi = _int_range(type_)
    if math.isnan(raw):
        return 0
    return int(min(hi, max(lo, round(raw))))


def encode(
    value: float, type_: str, order: str = "ABCD", scale: float = 1.0, offset: float = 0.0
) -> list[int]:
    """Registers (ints 0..65535) for `value`, in the order the device puts them on the wire."""
    data = struct.pack(_STRUCT[type_], raw_value(value, type_, scale, offset))
    words = [data[i : i + 2] for i in range(0, len(data), 2)]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    return [int.from_bytes(w, "big") for w in words]


def decode(
    regs: list[int], type_: str, order: str = "ABCD", scale: float = 1.0, offset: float = 0.0
) -> float:
    """The inverse of `encode` (for the simulator's own checks and tools)."""
    words = [r.to_bytes(2, "big") for r in regs[: WIDTH[type_]]]
    if order in ("BADC", "DCBA"):
        words = [w[::-1] for w in words]
    if order in ("CDAB", "DCBA"):
        words.reverse()
    (raw,) = struct.unpack(_STRUCT[type_], b"".join(words))
    return float(raw) * scale + offset


def resolution(type_: str, scale: float) -> float:
    """The smallest step the encoded value can take (0 for floats: exact to float32)."""
    return 0.0 if type_.startswith("float") else abs(scale)
