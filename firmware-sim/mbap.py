"""Modbus TCP (MBAP framing) served with the simulator's own code, for site configs.

One asyncio server; each request is answered from a `RegisterFn` (firmware_sim.site) after the
unit's fault (`fault_of(unit)`, asked at each request) has had its say: `no_answer` drops the
request (the client times out; nothing late is ever sent), `delay` holds the reply,
`exception=N` answers exception N, `max_count` refuses longer reads with exception 3, `crc` or
`garbage` send random bytes instead of the reply. A unit that is not served stays silent, as
behind a real gateway. `set_link(False)` closes the listener and drops every connection (a
cable pulled); `set_link(True)` listens again on the same port.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable

from firmware_sim.server import Fault
from firmware_sim.site import RegisterFn

ILLEGAL_FUNCTION = 1
ILLEGAL_VALUE = 3
HEADER = 7  # transaction id, protocol id, length, unit id


def pdu_reply(fc: int, values: list[int] | int) -> bytes:
    """The reply PDU for a read (FC 1-4): data, or an exception for an int."""
    if isinstance(values, int):
        return bytes((fc | 0x80, values))
    if fc in (1, 2):
        bits = bytearray((len(values) + 7) // 8)
        for i, bit in enumerate(values):
            if bit:
                bits[i // 8] |= 1 << (i % 8)
        return bytes((fc, len(bits))) + bytes(bits)
    data = b"".join(int(v & 0xFFFF).to_bytes(2, "big") for v in values)
    return bytes((fc, len(data))) + data


class _Conn(asyncio.Protocol):
    def __init__(self, server: MbapServer) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.conns.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server.conns.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= HEADER:
            length = int.from_bytes(self.buf[4:6], "big")
            if len(self.buf) < 6 + length:
                return
            frame = bytes(self.buf[: 6 + length])
            del self.buf[: 6 + length]
            self.server.request(frame, self.send)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)


class MbapServer:
    """Modbus TCP on host:port for the given units."""

    def __init__(
        self,
        units: Iterable[int],
        registers: RegisterFn,
        fault_of: Callable[[int], Fault | None],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 0,
    ) -> None:
        self.units = frozenset(units)
        self.registers = registers
        self.fault_of = fault_of
        self.host = host
        self.port = port
        self.conns: set[_Conn] = set()
        self.answered = 0
        self.dropped = 0
        self._server: asyncio.Server | None = None
        self._rng = random.Random(seed)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Conn(self), self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def set_link(self, up: bool) -> None:
        if up and self._server is None:
            await self.start()
        elif not up and self._server is not None:
            await self._close()

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for conn in list(self.conns):
            if conn.transport is not None:
                conn.transport.abort()
        if server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2.0)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._close()

    def request(self, frame: bytes, send: Callable[[bytes], None]) -> None:
        unit = frame[6]
        fault = self.fault_of(unit)
        if unit not in self.units or len(frame) < HEADER + 5 or (fault and fault.no_answer):
            self.dropped += 1
            return
        task = asyncio.get_running_loop().create_task(self._answer(frame, fault, send))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self, frame: bytes, fault: Fault | None, send: Callable[[bytes], None]
    ) -> None:
        fc = frame[7]
        address = int.from_bytes(frame[8:10], "big")
        count = int.from_bytes(frame[10:12], "big")
        if fault is not None and fault.delay > 0:
            await asyncio.sleep(fault.delay)
        values: list[int] | int
        if fault is not None and fault.exception is not None:
            values = fault.exception
        elif fc not in (1, 2, 3, 4):
            values = ILLEGAL_FUNCTION
        elif fault is not None and fault.max_count and count > fault.max_count:
            values = ILLEGAL_VALUE
        else:
            values = self.registers(frame[6], fc, address, count)
        pdu = pdu_reply(fc, values)
        reply = frame[:4] + (len(pdu) + 1).to_bytes(2, "big") + frame[6:7] + pdu
        if fault is not None and (fault.crc or fault.garbage):
            reply = bytes(self._rng.randrange(256) for _ in range(len(reply)))
        send(reply)
        self.answered += 1
