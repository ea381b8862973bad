"""Modbus RTU framing, pure: CRC-16, read requests, reply lengths, reply search and timing.

No I/O here, so the same code serves the agent's RTU master, the scan tool and the tests.
Only the read functions exist (FC1-FC4): the agent never writes to a field device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FC_READ_COILS = 1
FC_READ_DISCRETE = 2
FC_READ_HOLDING = 3
FC_READ_INPUT = 4

TABLE_FC: dict[str, int] = {
    "coil": FC_READ_COILS,
    "discrete": FC_READ_DISCRETE,
    "holding": FC_READ_HOLDING,
    "input": FC_READ_INPUT,
}
REQUEST_LEN = 8  # unit, fc, address (2), count (2), crc (2)
EXCEPTION_LEN = 5  # unit, fc | 0x80, code, crc (2)


def _table() -> list[int]:
    out = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        out.append(crc)
    return out


_CRC_TABLE = _table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """Modbus CRC-16 (poly 0xA001 reflected, init 0xFFFF); sent low byte first."""
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ b) & 0xFF]
    return crc


def with_crc(pdu: bytes) -> bytes:
    return pdu + crc16(pdu).to_bytes(2, "little")


def crc_ok(frame: bytes | bytearray | memoryview) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def read_request(unit: int, fc: int, address: int, count: int) -> bytes:
    return with_crc(bytes((unit, fc)) + address.to_bytes(2, "big") + count.to_bytes(2, "big"))


def data_bytes(fc: int, count: int) -> int:
    """Bytes of data in the normal reply to a read of `count` registers or bits."""
    return (count + 7) // 8 if fc in (FC_READ_COILS, FC_READ_DISCRETE) else 2 * count


def reply_len(fc: int, count: int) -> int:
    return 5 + data_bytes(fc, count)


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply found in the received bytes: data (None for an exception) and bytes skipped."""

    data: bytes | None
    exception: int | None
    skipped: int  # bytes before the frame (garbage, noise, a fragment of a late reply)

    @property
    def end(self) -> int:
        """Offset just past the frame in the searched buffer."""
        size = EXCEPTION_LEN if self.data is None else 5 + len(self.data)
        return self.skipped + size


def _first_frame(buf: bytes | bytearray, head: bytes, size: int) -> int:
    """Offset of the first complete `size`-byte frame that starts with `head` and has a right
    CRC, or -1. bytes.find jumps between candidate headers: no Python loop per byte."""
    i = buf.find(head)
    while i >= 0 and i + size <= len(buf):
        if crc_ok(memoryview(buf)[i : i + size]):
            return i
        i = buf.find(head, i + 1)
    return -1


def find_reply(buf: bytes | bytearray, unit: int, fc: int, count: int) -> Reply | None:
    """The first well-formed reply to (unit, fc, count) in `buf`, at any offset, or None.

    Well-formed: right unit, function code, byte count and CRC. A normal reply starts with
    the 3 bytes (unit, fc, byte count) and an exception with (unit, fc | 0x80); only offsets
    holding such a header are checked (length, then CRC). Searching past leading bytes makes a
    reply that follows line noise usable; a frame from another unit or for another request
    never matches.
    """
    nbytes = data_bytes(fc, count)
    ok = _first_frame(buf, bytes((unit, fc, nbytes)), 5 + nbytes)
    exc = _first_frame(buf, bytes((unit, fc | 0x80)), EXCEPTION_LEN)
    if exc >= 0 and (ok < 0 or exc < ok):
        return Reply(None, buf[exc + 2], exc)
    if ok >= 0:
        return Reply(bytes(buf[ok + 3 : ok + 3 + nbytes]), None, ok)
    return None


def unpack_registers(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 2], "big") for i in range(0, len(data), 2)]


def unpack_bits(data: bytes, count: int) -> list[int]:
    return [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]


def pack_bits(bits: list[int] | list[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for i, b in enumerate(bits):
        if b:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


Parity = Literal["N", "E", "O"]


@dataclass(frozen=True, slots=True)
class LineTiming:
    """Wire timing of a serial line: character time and the 3.5-character frame gap."""

    baud: int
    bytesize: int = 8
    parity: Parity = "N"
    stopbits: int = 1

    @property
    def char_s(self) -> float:
        bits = 1 + self.bytesize + (0 if self.parity == "N" else 1) + self.stopbits
        return bits / self.baud

    @property
    def gap_s(self) -> float:
        """The 3.5-character silence that ends a frame (fixed 1.75 ms above 19200 baud)."""
        return 0.00175 if self.baud > 19200 else 3.5 * self.char_s

    def wire_s(self, n_bytes: int) -> float:
        return n_bytes * self.char_s

    def transaction_s(self, fc: int, count: int) -> float:
        """Best possible time of one read: request, gap, reply, gap."""
        return self.wire_s(REQUEST_LEN + reply_len(fc, count)) + 2 * self.gap_s
