"""The peer plant's register encoding (`dust-sim serve --peer-devices N`, bench/peer.py).

Every unit serves PEER_REGISTERS holding registers (FC3, addresses 0..16), recomputed on each
read of the block that holds address 0:

    0-1    seq      uint32, big-endian words: this unit's reads so far (1 for the first read)
    2-5    t_ms     uint64, big-endian words: wall-clock time of this read, ms since the epoch
    6-15   v0..v9   uint16: slow sines around 10000 (they change between 1 s polls)
    16     status   uint16: 0

A subscriber finds lost readings by gaps in `seq` per device and the read-to-delivery latency
as its arrival time minus `t_ms`.
"""

from __future__ import annotations

import math
from typing import Final

PEER_REGISTERS: Final = 17
SEQ_ADDRESS: Final = 0
TIME_ADDRESS: Final = 2
VALUE_ADDRESS: Final = 6
VALUES: Final = 10
STATUS_ADDRESS: Final = 16


def peer_registers(unit: int, seq: int, t_wall: float) -> list[int]:
    """The 17 registers of one read: `seq` (uint32), `t_wall` in ms (uint64), 10 values."""
    seq &= 0xFFFFFFFF
    t_ms = round(t_wall * 1000.0)
    regs = [seq >> 16, seq & 0xFFFF]
    regs += [(t_ms >> shift) & 0xFFFF for shift in (48, 32, 16, 0)]
    w = 2.0 * math.pi / 60.0
    regs += [
        10000 + int(5000.0 * math.sin(w * t_wall + 0.37 * k + 0.11 * unit)) for k in range(VALUES)
    ]
    regs.append(0)
    return regs
