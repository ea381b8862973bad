"""Vectorised decode of a poll cycle's registers into scaled float64 values.

A `Decoder` is built once per bus from the read plan. Points are grouped by how their
registers must be combined (type and byte/word order), so each cycle does one gather and one
view per group plus one multiply-add over all points: no Python loop per point.

Byte/word orders name the bytes of a 32-bit value as they arrive on the wire, "A" being the
most significant byte of the value:

    ABCD  big-endian registers, high word first (the Modbus default)
    CDAB  big-endian registers, low word first ("word swap")
    BADC  byte-swapped registers, high word first ("byte swap")
    DCBA  byte-swapped registers, low word first (fully little-endian)

For the 16-bit types only the byte order matters: BADC and DCBA swap the two bytes of the
register, ABCD and CDAB do not. For the 64-bit types the same names apply per register and
to the register order: ABCD/BADC send the most significant register first, CDAB/DCBA the
least significant first (all four registers reversed). uint64/int64 above 2**53 lose
precision in the float64 value. A bit field (`bit`) takes one bit of a 16-bit register
(after the byte order) as 0 or 1.

Non-finite results (a float32 NaN or infinity from the device, or an overflow after scaling)
are returned as they are; the caller flags them (the poller sets Quality.BAD_VALUE).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from agent.core.model import REGISTER_WIDTH, DataType, WordOrder

_BYTE_SWAPPED: frozenset[WordOrder] = frozenset({"BADC", "DCBA"})
_LOW_WORD_FIRST: frozenset[WordOrder] = frozenset({"CDAB", "DCBA"})


class DecodeSpec(NamedTuple):
    """Where one point's value sits in the cycle buffer and how to turn it into a number."""

    word: int  # offset of the point's first register in the cycle buffer
    type: DataType
    order: WordOrder
    scale: float = 1.0
    offset: float = 0.0
    bit: int = -1  # >= 0: the value is this bit (0 = least significant) of the register


@dataclass(frozen=True, slots=True)
class _Group:
    """Points sharing one decode path: output positions and buffer offsets, as arrays.

    `words[k]` holds the buffer offset of each point's k-th most significant register.
    """

    type: DataType
    byte_swap: bool
    out_pos: npt.NDArray[np.intp]
    words: tuple[npt.NDArray[np.intp], ...]
    shift: npt.NDArray[np.uint16] | None = None  # bit fields: the bit of each point


class Decoder:
    """Decodes a uint16 cycle buffer into float64 values, in the order of the specs given."""

    def __init__(self, specs: Sequence[DecodeSpec]) -> None:
        self.size = len(specs)
        self.min_buffer = max((s.word + REGISTER_WIDTH[s.type] for s in specs), default=0)
        if any(s.word < 0 for s in specs):
            raise ValueError("negative word offset in decode specs")
        self._scale = np.array([s.scale for s in specs], dtype=np.float64)
        self._offset = np.array([s.offset for s in specs], dtype=np.float64)
        self._identity = bool(np.all(self._scale == 1.0) and np.all(self._offset == 0.0))
        self._groups = _build_groups(specs)

    def decode(
        self,
        buffer: npt.NDArray[np.uint16],
        out: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Return raw * scale + offset for every point (a new array unless `out` is given)."""
        if buffer.shape[0] < self.min_buffer:
            raise ValueError(f"cycle buffer has {buffer.shape[0]} words, need {self.min_buffer}")
        if out is None:
            out = np.empty(self.size, dtype=np.float64)
        # A device may send a signalling NaN: converting it must not warn (tests run -W error).
        with np.errstate(over="ignore", invalid="ignore"):
            for g in self._groups:
                out[g.out_pos] = _decode_group(g, buffer)
            if not self._identity:
                np.multiply(out, self._scale, out=out)
                np.add(out, self._offset, out=out)
        return out


def _build_groups(specs: Sequence[DecodeSpec]) -> tuple[_Group, ...]:
    keys: dict[tuple[DataType, bool, bool, bool], list[int]] = {}
    for i, s in enumerate(specs):
        wide = REGISTER_WIDTH[s.type] > 1
        key = (s.type, s.order in _BYTE_SWAPPED, wide and s.order in _LOW_WORD_FIRST, s.bit >= 0)
        keys.setdefault(key, []).append(i)
    groups = []
    for (dtype, byte_swap, low_first, is_bit), members in keys.items():
        base = np.array([specs[i].word for i in members], dtype=np.intp)
        n = REGISTER_WIDTH[dtype]
        order = range(n - 1, -1, -1) if low_first else range(n)  # most significant first
        shift = np.array([specs[i].bit for i in members], dtype=np.uint16) if is_bit else None
        groups.append(
            _Group(
                type=dtype,
                byte_swap=byte_swap,
                out_pos=np.array(members, dtype=np.intp),
                words=tuple(base + k for k in order),
                shift=shift,
            )
        )
    return tuple(groups)


def _word(g: _Group, buffer: npt.NDArray[np.uint16], k: int) -> npt.NDArray[np.uint16]:
    w = buffer[g.words[k]]
    return w.byteswap() if g.byte_swap else w


def _decode_group(g: _Group, buffer: npt.NDArray[np.uint16]) -> npt.NDArray[np.generic]:
    hi = _word(g, buffer, 0)
    if g.shift is not None:
        return (hi >> g.shift) & np.uint16(1)
    if g.type == "uint16":
        return hi
    if g.type == "int16":
        return hi.view(np.int16)
    if len(g.words) == 2:
        u32 = (hi.astype(np.uint32) << np.uint32(16)) | _word(g, buffer, 1).astype(np.uint32)
        if g.type == "uint32":
            return u32
        if g.type == "int32":
            return u32.view(np.int32)
        return u32.view(np.float32)
    u64 = hi.astype(np.uint64)
    for k in (1, 2, 3):
        u64 = (u64 << np.uint64(16)) | _word(g, buffer, k).astype(np.uint64)
    if g.type == "uint64":
        return u64
    if g.type == "int64":
        return u64.view(np.int64)
    return u64.view(np.float64)
