"""Field input that misbehaves: Modbus TCP replies with another function code or undecodable
bytes (one fault each, no traceback), and a babbling RTU-over-TCP device server (bounded
memory, polling continues)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import psutil
import pytest

from drivers.base import Block, SourceError, SourceProtocolError
from drivers.line import RX_LIMIT, TcpLine
from drivers.modbus_rtu import ModbusRtuSource
from drivers.modbus_tcp import ModbusTcpSource
from drivers.rtu_frame import with_crc

pytestmark = pytest.mark.integration

Answer = Callable[[bytes, int, bytes], bytes]  # (mbap head, unit, request pdu) -> reply bytes
HOLDING = Block(unit_id=1, table="holding", address=0, count=2)


def track(handlers: set[asyncio.Task[Any]]) -> None:
    """Remember the running connection handler (call first thing in it)."""
    task = asyncio.current_task()
    assert task is not None
    handlers.add(task)


async def end_handlers(handlers: set[asyncio.Task[Any]]) -> None:
    """Let handlers see their client's EOF and end; cancel and await the rest (a handler
    cancelled by asyncio.run's shutdown would be logged with a traceback)."""
    if handlers:
        _, pending = await asyncio.wait(handlers, timeout=1.0)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def mbap(head: bytes, unit: int, pdu: bytes) -> bytes:
    return head[:4] + (len(pdu) + 1).to_bytes(2, "big") + bytes([unit]) + pdu


class FakeTcpDevice:
    """A Modbus TCP server on loopback whose replies a function writes as raw bytes."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.port = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> FakeTcpDevice:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await end_handlers(self._handlers)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        track(self._handlers)
        try:
            while True:
                head = await r.readexactly(7)
                pdu = await r.readexactly(int.from_bytes(head[4:6], "big") - 1)
                w.write(self.answer(head, head[6], pdu))
                await w.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            w.close()


async def read_some(port: int, n: int) -> list[BaseException | object]:
    src = ModbusTcpSource("127.0.0.1", port, 0.5, 0, "adv")
    out: list[BaseException | object] = []
    try:
        for _ in range(n):
            try:
                await src.connect()
                out.append(await src.read(HOLDING))
            except SourceError as exc:
                out.append(exc)
    finally:
        await src.close()
    return out


@pytest.mark.parametrize("fc", [4, 23, 6, 0x84])
async def test_tcp_reply_with_another_function_code_is_refused(fc: int) -> None:
    def answer(head: bytes, unit: int, pdu: bytes) -> bytes:
        return mbap(head, unit, bytes([fc, 4, 0, 1, 0, 2]))

    async with FakeTcpDevice(answer) as dev:
        got = await read_some(dev.port, 2)
    for item in got:
        assert isinstance(item, SourceProtocolError), item
        assert "function code" in str(item) or "undecodable" in str(item)


GARBAGE: list[Answer] = [
    lambda h, u, p: mbap(h, u, bytes([3, 200, 0, 1])),  # byte count beyond the frame
    lambda h, u, p: mbap(h, u, bytes([0x66, 1, 2, 3])),  # no such function code
    lambda h, u, p: mbap(h, u, b""),  # empty PDU
    lambda h, u, p: b"\xff" * 64,  # not Modbus TCP at all
    lambda h, u, p: h[:4] + b"\xff\xff" + bytes([u]) + b"\x03\x04",  # length 65535
]


@pytest.mark.parametrize("answer", GARBAGE)
async def test_tcp_garbage_is_one_fault_per_read_without_traceback(
    answer: Answer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    async with FakeTcpDevice(answer) as dev:
        got = await read_some(dev.port, 3)
    assert all(isinstance(g, SourceError) for g in got), got
    noisy = [r for r in caplog.records if r.exc_info or r.name == "asyncio"]
    assert not noisy, [r.getMessage() for r in noisy]


# -- RTU over TCP: a device server that babbles ---------------------------------------------


class BabblingDeviceServer:
    """Writes 4 KiB of junk every `pause` s (1.6 MB/s at 2.5 ms: 170 times a 9600 baud line);
    answers each request with junk, then the reply."""

    def __init__(self, pause: float = 0.0025) -> None:
        self.port = 0
        self.sent = 0
        self.pause = pause
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> BabblingDeviceServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in self._tasks:
            t.cancel()
        for w in self._writers:
            w.close()
        await asyncio.sleep(0.05)  # let the handlers see EOF and end

    def _junk(self) -> bytes:
        return os.urandom(4096)

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        async def babble() -> None:
            while True:
                w.write(self._junk())
                self.sent += 4096
                await w.drain()
                await asyncio.sleep(self.pause)

        self._writers.append(w)
        task = asyncio.get_running_loop().create_task(babble())
        self._tasks.add(task)
        try:
            while True:
                req = await r.readexactly(8)
                count = int.from_bytes(req[4:6], "big")
                regs = b"".join((40 + i).to_bytes(2, "big") for i in range(count))
                w.write(self._junk()[:500] + with_crc(bytes([req[0], 3, 2 * count]) + regs))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            task.cancel()
            w.close()


async def test_rtu_over_tcp_babble_bounded_and_polling_continues() -> None:
    proc = psutil.Process()
    async with BabblingDeviceServer() as srv:
        line = TcpLine("127.0.0.1", srv.port, connect_timeout=1.0, name="babbler")
        src = ModbusRtuSource(line, timeout=0.5, retries=0, timing=None, late_guard=0.05)
        await src.connect()
        rss0 = proc.memory_info().rss
        ok = faults = 0
        lag = 0.0
        t_end = time.monotonic() + 3.0
        try:
            while time.monotonic() < t_end:
                t0 = time.monotonic()
                try:
                    block = await src.read(HOLDING)
                    assert list(block.registers) == [40, 41]
                    ok += 1
                except SourceError:
                    faults += 1
                lag = max(lag, time.monotonic() - t0)
                assert len(line._rx) <= RX_LIMIT
        finally:
            await src.close()
        grown = proc.memory_info().rss - rss0
    assert srv.sent > 2 * 1024 * 1024, srv.sent  # it really babbled
    assert ok + faults >= 3 and ok >= 1, (ok, faults)  # polling continues, reads complete
    print(f"babble {srv.sent} bytes: {ok} good reads, {faults} faults, max read {lag:.2f} s")
    assert lag < 1.5, lag  # no read blocked the loop beyond its timeout
    assert grown < 10 * 1024 * 1024, grown
