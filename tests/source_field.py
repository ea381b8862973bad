"""The far end of a Source under contract test: a "field" of Modbus devices of one bus kind.

Every kind offers the same handles, so one suite runs over all of them:

- `start()` / `stop()`: the device server (TCP kinds) or the serial port (RTU: the socat pair
  is killed, the port vanishes) appears and disappears, on the same address;
- `set(...)`, `silent(unit)`, `exception(unit, code)`, `clear()`: register values and faults,
  served by pymodbus's own servers (ModbusTcpServer, with the RTU framer for RTU over TCP,
  ModbusSerialServer on a pty);
- `count_requests()`: from now on every reply carries the number of the request it answers,
  so a test can tell which request a reply belongs to;
- `late_next(seconds)`: the next reply arrives that late; `stray(data)`: unsolicited bytes
  reach the driver. pymodbus's servers cannot do either faithfully (a delayed pymodbus reply
  takes the transaction id of the newest request), so TCP kinds pass through a relay
  (tests.tcp_relay) that holds and injects bytes unchanged, and the serial line swaps
  pymodbus for the project simulator's RTU slave (firmware_sim.rtu), which holds replies
  for their wire time at the line's baud and can delay one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import cast

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from agent.core.model import BusSpec, BusType
from drivers.base import Source
from drivers.registry import make_source
from drivers.rtu_frame import LineTiming
from firmware_sim.rtu import RtuSlaves, SerialSlave
from firmware_sim.server import Fault
from tests.modbus_server import ModbusTestServer, Request
from tests.pty import PtyPair
from tests.tcp_relay import TcpRelay

UNITS = (1, 2)
BAUD = 9600  # the serial kind's line speed (a common RS-485 default)
_FC = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}


class FieldServer(ModbusTestServer):
    """tests.modbus_server's server, also with the RTU framer or on a serial port, and with a
    request-counting mode."""

    def __init__(self, framer: FramerType, serial_port: str = "") -> None:
        super().__init__(units=UNITS, size=64)
        self.framer = framer
        self.serial_port = serial_port
        self.counting = False
        self._any: ModbusTcpServer | ModbusSerialServer | None = None

    async def start(self, port: int | None = None) -> None:
        devices = [self._device(u) for u in self.units]
        if self.serial_port:
            server = ModbusSerialServer(
                devices, port=self.serial_port, framer=self.framer, baudrate=BAUD
            )
            await server.serve_forever(background=True)
            self._any = server
            return
        use = self.port if port is None else port
        tcp = ModbusTcpServer(devices, address=("127.0.0.1", use), framer=self.framer)
        await tcp.serve_forever(background=True)
        self._any = tcp
        listener = cast(asyncio.Server, tcp.transport)
        self.port = listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for fut in self._parked:
            fut.cancel()
        self._parked.clear()
        server, self._any = self._any, None
        if server is not None:
            await server.shutdown()  # type: ignore[no-untyped-call]

    async def _action(self, unit: int, req: Request, current: list[int]) -> ExcCodes | None:
        if self.counting and req.fc in (3, 4):
            self.set(unit, _FC[req.fc], req.address, [self.requests + 1] * req.quantity)
        return await super()._action(unit, req, current)


class Field:
    """Base: what every kind shares. Subclasses say how the bus is reached."""

    kind: BusType
    server: FieldServer

    def set(self, unit: int, table: str, address: int, values: Sequence[int]) -> None:
        self.server.set(unit, table, address, values)

    def silent(self, unit: int) -> None:
        self.server.fail(unit, silent=True)

    def exception(self, unit: int, code: int, addresses: range | None = None) -> None:
        self.server.fail(unit, exception=code, addresses=addresses)

    def clear(self) -> None:
        self.server.clear_faults()

    def bus(self, timeout: float, retries: int = 0, poll: float = 0.05) -> BusSpec:
        raise NotImplementedError

    def source(self, timeout: float, retries: int = 0) -> Source:
        """The real driver for this kind, built as the agent builds it."""
        return make_source(self.bus(timeout, retries))

    async def open(self) -> None:
        """Bring the field up the first time."""
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def count_requests(self) -> None:
        raise NotImplementedError

    def late_next(self, seconds: float, then: float = 0.0) -> None:
        """The next reply comes `seconds` late; over TCP the one after it `then` seconds late
        (so that the late one arrives while the next request waits for its answer)."""
        raise NotImplementedError

    def late_delivered(self) -> bool:
        """The late reply has gone out to the driver."""
        raise NotImplementedError

    def stray(self, data: bytes) -> None:
        raise NotImplementedError


class TcpField(Field):
    """Modbus TCP (socket framer) or RTU over TCP (RTU framer), behind a relay."""

    def __init__(self, kind: BusType) -> None:
        self.kind = kind
        framer = FramerType.SOCKET if kind == "tcp" else FramerType.RTU
        self.server = FieldServer(framer)
        self.relay: TcpRelay | None = None

    async def open(self) -> None:
        await self.server.start()
        self.relay = TcpRelay(self.server.port)
        await self.relay.start()

    @property
    def _relay(self) -> TcpRelay:
        assert self.relay is not None
        return self.relay

    def bus(self, timeout: float, retries: int = 0, poll: float = 0.05) -> BusSpec:
        return BusSpec("line", self.kind, "127.0.0.1", self._relay.port, timeout, retries, poll)

    async def start(self) -> None:
        await self._relay.start()

    async def stop(self) -> None:
        await self._relay.stop()

    async def close(self) -> None:
        await self._relay.stop()
        await self.server.stop()

    async def count_requests(self) -> None:
        self.server.counting = True

    def late_next(self, seconds: float, then: float = 0.0) -> None:
        self._relay.hold_replies(seconds, then)

    def late_delivered(self) -> bool:
        return self._relay.late_sent > 0

    def stray(self, data: bytes) -> None:
        assert self._relay.inject(data) == 1, "the driver is not connected"


class SerialField(Field):
    """Modbus RTU on a socat pty pair: pymodbus's serial server, or the simulator's RTU slave
    once `count_requests()` is called."""

    kind: BusType = "rtu"

    def __init__(self, directory: Path) -> None:
        self.pty = PtyPair(directory)
        self.server = FieldServer(FramerType.RTU, self.pty.a)
        self.sim: SerialSlave | None = None
        self._slaves: RtuSlaves | None = None
        self._count = 0

    async def open(self) -> None:
        await self.start()

    def bus(self, timeout: float, retries: int = 0, poll: float = 0.05) -> BusSpec:
        return BusSpec(
            "line", "rtu", "", 0, timeout, retries, poll, serial_port=self.pty.b, baud=BAUD
        )

    async def start(self) -> None:
        await asyncio.to_thread(self.pty.start)
        if self._slaves is not None:
            self.sim = SerialSlave(self._slaves, self.pty.a, BAUD)
            await self.sim.start()
        else:
            await self.server.start()

    async def stop(self) -> None:
        if self.sim is not None:
            await self.sim.stop()
            self.sim = None
        await self.server.stop()
        await asyncio.to_thread(self.pty.kill)

    async def close(self) -> None:
        await self.stop()

    async def count_requests(self) -> None:
        def registers(unit: int, fc: int, address: int, count: int) -> list[int]:
            self._count += 1
            return [self._count] * count

        await self.server.stop()
        self._slaves = RtuSlaves(UNITS, registers, LineTiming(BAUD))
        self.sim = SerialSlave(self._slaves, self.pty.a, BAUD)
        await self.sim.start()

    def late_next(self, seconds: float, then: float = 0.0) -> None:
        # `then` is not needed: the RTU master waits out the late reply before its next request
        assert self._slaves is not None, "call count_requests() first"
        for unit in UNITS:  # the fault hits request 1 of the count restarted here
            self._slaves.requests[unit] = 0
            self._slaves.faults[unit] = Fault(delay=seconds, every=1 << 30)

    def late_delivered(self) -> bool:
        return self._slaves is not None and self._slaves.answered == self._count

    def stray(self, data: bytes) -> None:
        fd = os.open(self.pty.a, os.O_WRONLY | os.O_NOCTTY)  # a second opener of the sim's end
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
