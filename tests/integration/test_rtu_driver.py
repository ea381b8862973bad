"""The RTU master (drivers.modbus_rtu) against the simulator's RTU slaves over a socat pty pair."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from drivers.base import Block, SourceProtocolError, SourceTimeout
from drivers.line import RX_LIMIT, SerialLine
from drivers.modbus_rtu import ModbusRtuSource
from drivers.rtu_frame import crc16, find_reply, read_request, with_crc
from firmware_sim.rtu import RtuSlaves, SerialSlave
from firmware_sim.server import Fault
from tests.pty import PtyPair


def test_crc_and_reply_search() -> None:
    assert crc16(bytes.fromhex("010300000001")) == 0x0A84  # the classic 01 03 00 00 00 01 84 0A
    assert read_request(1, 3, 0, 1).hex() == "010300000001840a"
    good = with_crc(bytes((7, 3, 4, 0, 1, 0, 2)))
    found = find_reply(b"\xff\x00\x07" + good, 7, 3, 2)
    assert found is not None and found.skipped == 3 and found.data == b"\x00\x01\x00\x02"
    assert find_reply(good, 8, 3, 2) is None  # another unit's reply never matches
    assert find_reply(good[:-1] + bytes((good[-1] ^ 1,)), 7, 3, 2) is None  # bad CRC


@asynccontextmanager
async def line(tmp: Path, slaves: RtuSlaves, **kw: float) -> AsyncIterator[ModbusRtuSource]:
    pty = PtyPair(tmp)
    pty.start()
    server = SerialSlave(slaves, pty.a)
    await server.start()
    src = ModbusRtuSource(
        SerialLine(pty.b, 19200),
        timeout=kw.get("timeout", 0.2),
        retries=int(kw.get("retries", 0)),
        timing=None,
        late_guard=kw.get("late_guard"),
    )
    await src.connect()
    try:
        yield src
    finally:
        await src.close()
        await server.stop()
        pty.kill()


def counter() -> tuple[RtuSlaves, list[int]]:
    """Unit 1 answers every read with the number of the request it answers."""
    n = [0]

    def registers(unit: int, fc: int, address: int, count: int) -> list[int]:
        n[0] += 1
        return [n[0]] * count

    return RtuSlaves([1], registers, None), n


async def test_late_reply_is_never_the_answer_to_the_next_request(tmp_path: Path) -> None:
    slaves, _ = counter()
    slaves.faults[1] = Fault(delay=0.35, every=2)  # requests 1, 3, 5... answered late
    async with line(tmp_path, slaves, timeout=0.2, late_guard=0.3) as src:
        with pytest.raises(SourceTimeout):
            await src.read(Block(1, "holding", 0, 2))  # request 1: its reply comes at 0.35 s
        t0 = time.monotonic()
        raw = await src.read(Block(1, "holding", 0, 2))  # request 2, after the guard
        assert raw.registers.tolist() == [2, 2]  # not [1, 1], the late reply to request 1
        assert time.monotonic() - t0 < 0.2  # the guard was already served
        assert src.stats.late_bytes == 9  # the late reply (5 + 4 bytes), discarded and counted


async def test_crc_error_is_retried_and_exceptions_are_not(tmp_path: Path) -> None:
    slaves, n = counter()
    slaves.faults[1] = Fault(crc=True, every=2)
    async with line(tmp_path, slaves, timeout=0.2, retries=1, late_guard=0.05) as src:
        raw = await src.read(Block(1, "input", 0, 3))  # request 1: bad CRC; retry: request 2
        assert raw.registers.tolist() == [2, 2, 2]
        assert src.stats.frame_errors == 1
        slaves.faults[1] = Fault(exception=2)
        with pytest.raises(SourceProtocolError) as err:
            await src.read(Block(1, "input", 0, 3))
        assert err.value.code == 2 and "illegal data address" in str(err.value)
        assert src.stats.requests == 3  # an exception reply is an answer: no retry
    assert n[0] == 2


async def wait_until(src: ModbusRtuSource, cond: Callable[[], bool], within: float = 5.0) -> None:
    """Wait on the line's own receive wake-up until `cond()` holds."""
    deadline = time.monotonic() + within
    while not cond():
        assert await src.line.wait_rx(deadline) or cond(), "timed out waiting for bytes"


async def test_bytes_outside_a_request_window_make_the_master_wait(tmp_path: Path) -> None:
    """A well-formed reply of the right shape that arrives between requests (a slow device's
    late answer) is discarded: the master waits for a silent line, then asks; a fast reply is
    accepted as soon as it is complete."""
    slaves, n = counter()
    async with line(tmp_path, slaves, timeout=0.2, late_guard=0.05) as src:
        fd = os.open(str(tmp_path / "ttySIM"), os.O_WRONLY | os.O_NOCTTY)
        try:
            late = with_crc(bytes((1, 3, 4, 0, 99, 0, 99)))
            os.write(fd, late)
            await wait_until(src, lambda: len(src.line.peek()) == len(late))
            raw = await src.read(Block(1, "holding", 0, 2))
            # a line that overflows keeps only the newest bytes
            os.write(fd, bytes(5000))
            await wait_until(src, lambda: src.line.dropped > 0 and len(src.line.peek()) == RX_LIMIT)
        finally:
            os.close(fd)
    assert raw.registers.tolist() == [1, 1]  # the slave's answer, not the stray [99, 99]
    assert src.stats.stray_bytes == len(late) and src.stats.guards == 1
    assert src.stats.timeouts == src.stats.frame_errors == 0 and n[0] == 1


def test_reply_search_skips_non_matching_frames() -> None:
    other = with_crc(bytes((7, 3, 2, 0, 5)))  # same unit, another length
    exc = with_crc(bytes((7, 0x83, 6)))
    good = with_crc(bytes((7, 3, 4, 0, 1, 0, 2)))
    found = find_reply(other + good, 7, 3, 2)
    assert found is not None and found.skipped == len(other) and found.end == len(other + good)
    found = find_reply(b"\x07\x03\x04" + exc, 7, 3, 2)  # a header fragment, then busy
    assert found is not None and found.exception == 6 and found.skipped == 3
    assert find_reply(good[:-1], 7, 3, 2) is None  # incomplete
