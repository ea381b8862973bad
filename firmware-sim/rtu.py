"""The plant served over Modbus RTU: on a serial port (a pty in tests, a USB-RS485 adapter for
hardware-in-loop) or over TCP with raw RTU frames (a serial device server).

Own framing (drivers.rtu_frame) rather than pymodbus's serial server, so every fault sits where a
real line would put it:

- wire time: a pty delivers bytes at once whatever the baud, so each reply is held until the
  instant the last byte would have arrived on a real line at the configured baud: request wire
  time + 3.5-character gap + reply wire time after the request arrived. Bus figures measured
  against the simulator are therefore realistic;
- per-unit faults (server.Fault): `no_answer` (silence), `delay` (slow; beyond the master's
  timeout it is a late reply), `exception=N`, `crc` (the reply's CRC is wrong), `garbage`
  (random bytes instead of the reply), `max_count` (longer reads get exception 3: a device
  that rejects multi-register reads), each optionally on `every` N-th request only;
- an absent unit stays silent, as on a real line; requests with a bad CRC are dropped;
  write function codes are refused with exception 1 (the controllers are read-only here).

Each reply is sent by its own task, so a late reply can overlap the next request, exactly the
hazard a master must survive.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import termios
import time
import tty
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from drivers.rtu_frame import (
    REQUEST_LEN,
    LineTiming,
    crc_ok,
    pack_bits,
    with_crc,
)
from firmware_sim.plant import Plant
from firmware_sim.server import Fault

ILLEGAL_FUNCTION = 1
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
N_BITS = 16

# (unit, fc, address, count) -> values (registers, or 0/1 per bit) or a Modbus exception code
RegisterFn = Callable[[int, int, int, int], list[int] | int]


def plant_registers(
    plant: Plant, clock: Callable[[], float], holding_registers: int = 0
) -> RegisterFn:
    """The plant's tables: input 0..10 (the dry-collector map), holding 0..M-1 (bench), coil i
    = bit i of the unit id, discrete i = bit i of the whole seconds of plant time (16 each)."""

    def registers(unit: int, fc: int, address: int, count: int) -> list[int] | int:
        t = clock()
        if fc == 4:
            table = plant.collector_registers(unit, t)
        elif fc == 3 and holding_registers:
            table = plant.bench_registers(unit, t, holding_registers)
        elif fc == 1:
            table = [(unit >> i) & 1 for i in range(N_BITS)]
        elif fc == 2:
            table = [(int(t) >> i) & 1 for i in range(N_BITS)]
        else:
            return ILLEGAL_ADDRESS
        if address + count > len(table):
            return ILLEGAL_ADDRESS
        return table[address : address + count]

    return registers


class RtuSlaves:
    """The units on one RTU line: parses requests from a byte stream and schedules replies."""

    def __init__(
        self,
        units: Iterable[int],
        registers: RegisterFn,
        timing: LineTiming | None,
        faults: Mapping[int, Fault] | None = None,
        *,
        seed: int = 0,
        fault_of: Callable[[int], Fault | None] | None = None,
    ) -> None:
        """`fault_of(unit)`, when given, is asked at each request instead of `faults`
        (a scenario timeline's faults change over time)."""
        self.units = frozenset(units)
        self.fault_of = fault_of
        self.registers = registers
        self.timing = timing
        self.faults: dict[int, Fault] = dict(faults or {})
        self.requests: dict[int, int] = {}  # requests seen per unit
        self.answered = 0
        self.dropped = 0  # silent: absent unit, no_answer
        self.bad_requests = 0  # bytes dropped while resyncing on a bad CRC
        self._rng = random.Random(seed)
        self._tasks: set[asyncio.Task[None]] = set()

    def feed(self, buf: bytearray, send: Callable[[bytes], None]) -> None:
        """Consume complete requests from `buf` (in place) and schedule their replies."""
        while len(buf) >= REQUEST_LEN:
            fc = buf[1]
            n = 9 + buf[6] if fc in (15, 16) and len(buf) >= 7 else REQUEST_LEN
            if len(buf) < n:
                return
            frame = bytes(buf[:n])
            if not crc_ok(frame):
                del buf[0]  # resync one byte at a time
                self.bad_requests += 1
                continue
            del buf[:n]
            self._request(frame, time.monotonic(), send)

    def _request(self, frame: bytes, t_rx: float, send: Callable[[bytes], None]) -> None:
        unit, fc = frame[0], frame[1]
        if unit not in self.units:
            self.dropped += 1
            return
        k = self.requests[unit] = self.requests.get(unit, 0) + 1
        fault = self.fault_of(unit) if self.fault_of is not None else self.faults.get(unit)
        if fault is not None and (k - 1) % fault.every != 0:
            fault = None
        if fault is not None and fault.no_answer:
            self.dropped += 1
            return
        reply = self._reply(unit, fc, frame, fault)
        hold = 0.0
        if self.timing is not None:
            hold = self.timing.wire_s(len(frame)) + self.timing.gap_s
            hold += self.timing.wire_s(len(reply))
        if fault is not None:
            hold += fault.delay
        task = asyncio.get_running_loop().create_task(self._send_at(t_rx + hold, reply, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _reply(self, unit: int, fc: int, frame: bytes, fault: Fault | None) -> bytes:
        exc: int | None = None
        address = int.from_bytes(frame[2:4], "big")
        count = int.from_bytes(frame[4:6], "big")
        if fault is not None and fault.exception is not None:
            exc = fault.exception
        elif fc not in (1, 2, 3, 4):
            exc = ILLEGAL_FUNCTION
        elif fault is not None and fault.max_count and count > fault.max_count:
            exc = ILLEGAL_VALUE
        values: list[int] | int = (
            exc if exc is not None else self.registers(unit, fc, address, count)
        )
        if isinstance(values, int):
            reply = with_crc(bytes((unit, fc | 0x80, values)))
        elif fc in (1, 2):
            data = pack_bits(values)
            reply = with_crc(bytes((unit, fc, len(data))) + data)
        else:
            data = b"".join(int(v & 0xFFFF).to_bytes(2, "big") for v in values)
            reply = with_crc(bytes((unit, fc, len(data))) + data)
        if fault is not None and fault.crc:
            reply = reply[:-2] + bytes((reply[-2] ^ 0x5A, reply[-1]))
        if fault is not None and fault.garbage:
            reply = bytes(self._rng.randrange(256) for _ in range(len(reply)))
        return reply

    async def _send_at(self, when: float, reply: bytes, send: Callable[[bytes], None]) -> None:
        wait = when - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        with contextlib.suppress(OSError):
            send(reply)
            self.answered += 1

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class SerialSlave:
    """Serves RtuSlaves on a serial device (a pty end or a real port), raw mode.

    The baud only sets the wire-time hold here: a pty ignores it, and on a real adapter the
    port is opened at the same speed.
    """

    def __init__(self, slaves: RtuSlaves, path: str, baud: int | None = None) -> None:
        self.slaves = slaves
        self.path = path
        self.baud = baud
        self._fd = -1
        self._buf = bytearray()
        self._reopen: asyncio.Task[None] | None = None

    async def _reopen_loop(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            with contextlib.suppress(OSError):
                await self.start()
                return

    async def start(self) -> None:
        self._buf.clear()
        fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(fd)
        if self.baud is not None and hasattr(termios, f"B{self.baud}"):
            attrs = termios.tcgetattr(fd)
            attrs[4] = attrs[5] = getattr(termios, f"B{self.baud}")
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        self._fd = fd
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._fd, 4096)
        except OSError:
            data = b""
        if not data:  # the other end went away (socat killed): reopen when it is back
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._fd)
            os.close(self._fd)
            self._fd = -1
            self._reopen = loop.create_task(self._reopen_loop(), name="sim-serial-reopen")
            return
        self._buf += data
        self.slaves.feed(self._buf, self._send)

    def _send(self, data: bytes) -> None:
        if self._fd >= 0:
            os.write(self._fd, data)

    async def stop(self) -> None:
        await self.slaves.stop()
        if self._reopen is not None:
            self._reopen.cancel()
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)


class _Conn(asyncio.Protocol):
    def __init__(self, slaves: RtuSlaves) -> None:
        self.slaves = slaves
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self.slaves.feed(self.buf, self._send)

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


class TcpRtuSlave:
    """Serves RtuSlaves over TCP with raw RTU frames (what a serial device server does)."""

    def __init__(self, slaves: RtuSlaves, host: str = "127.0.0.1", port: int = 0) -> None:
        self.slaves = slaves
        self.host = host
        self._requested_port = port
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Conn(self.slaves), self.host, self._requested_port
        )
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        await self.slaves.stop()
        server, self._server = self._server, None
        if server is not None:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)


def rtu_plant(
    plant: Plant,
    units: Iterable[int],
    *,
    baud: int | None,
    holding_registers: int = 0,
    faults: Mapping[int, Fault] | None = None,
    **timing: Any,
) -> RtuSlaves:
    """RtuSlaves serving `plant` with plant time = monotonic seconds since this call."""
    t0 = time.monotonic()
    line = LineTiming(baud, **timing) if baud else None
    registers = plant_registers(plant, lambda: time.monotonic() - t0, holding_registers)
    return RtuSlaves(units, registers, line, faults)
