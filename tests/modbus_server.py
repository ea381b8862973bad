"""In-process pymodbus servers for tests: `ModbusTestServer` (TCP: settable registers,
injectable faults) and `PymodbusBits` (TCP, RTU or RTU over TCP: coils and discrete inputs
in pymodbus's own datastore, the oracle of the bit tests).

Register values live here, not in the pymodbus server, so they survive `stop()`/`start()` on
the same port. Faults are per unit, optionally limited to an address range:

- `exception=code`: the unit answers every matching read with that Modbus exception;
- `silent=True`: the unit never answers (like an absent RS-485 slave behind a gateway).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple, cast

from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

_FC_TABLE = {3: "holding", 4: "input"}


class Request(NamedTuple):
    fc: int
    start: int  # address of current_registers[0]
    address: int
    quantity: int


@dataclass
class Fault:
    exception: int | None = None
    silent: bool = False
    addresses: range | None = None  # None: every address of the unit

    def hits(self, address: int, count: int) -> bool:
        if self.addresses is None:
            return True
        return address < self.addresses.stop and address + count > self.addresses.start


class ModbusTestServer:
    def __init__(self, units: Sequence[int] = (1,), size: int = 256) -> None:
        self.units = tuple(units)
        self.size = size
        self.registers: dict[tuple[int, str], list[int]] = {
            (u, t): [0] * size for u in self.units for t in ("holding", "input")
        }
        self.faults: dict[int, Fault] = {}
        self.requests = 0
        self.port = 0
        self._server: ModbusTcpServer | None = None
        self._parked: set[asyncio.Future[None]] = set()
        logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)

    def set(self, unit: int, table: str, address: int, values: Sequence[int]) -> None:
        regs = self.registers[(unit, table)]
        regs[address : address + len(values)] = [int(v) & 0xFFFF for v in values]

    def fail(
        self,
        unit: int,
        *,
        exception: int | None = None,
        silent: bool = False,
        addresses: range | None = None,
    ) -> None:
        self.faults[unit] = Fault(exception, silent, addresses)

    def clear_faults(self) -> None:
        self.faults.clear()

    async def start(self, port: int | None = None) -> None:
        """Listen on 127.0.0.1 (on `port`, else the previous port, else a free one)."""
        devices = [self._device(u) for u in self.units]
        use = self.port if port is None else port
        self._server = ModbusTcpServer(devices, address=("127.0.0.1", use))
        await self._server.serve_forever(background=True)
        listener = cast(asyncio.Server, self._server.transport)
        self.port = listener.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for fut in self._parked:
            fut.cancel()
        self._parked.clear()
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None

    def _device(self, unit: int) -> SimDevice:
        async def action(*args: object) -> ExcCodes | None:
            # pymodbus calls action(fc, start, address, count, current_registers, set_values)
            fc, start, address, count, current, _ = args
            assert isinstance(fc, int) and isinstance(start, int)
            assert isinstance(address, int) and isinstance(count, int)
            assert isinstance(current, list)
            return await self._action(unit, Request(fc, start, address, count), current)

        def regs() -> list[SimData]:
            return [SimData(0, count=self.size, values=0, datatype=DataType.REGISTERS)]

        def bits() -> list[SimData]:
            return [SimData(0, count=16, values=False, datatype=DataType.BITS)]

        return SimDevice(id=unit, action=action, simdata=(bits(), bits(), regs(), regs()))

    async def _action(self, unit: int, req: Request, current: list[int]) -> ExcCodes | None:
        fc, start, address, count = req
        self.requests += 1
        fault = self.faults.get(unit)
        if fault is not None and fault.hits(address, count):
            if fault.silent:
                fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
                self._parked.add(fut)
                await fut  # cancelled by stop(): no late reply ever goes out
            if fault.exception is not None:
                return ExcCodes(fault.exception)
        table = _FC_TABLE.get(fc)
        if table is not None:
            src = self.registers[(unit, table)]
            current[address - start : address - start + count] = src[address : address + count]
        return None


# -- coils and discrete inputs held by pymodbus's own datastore --------------------------------

BIT_FC = {"coil": 1, "discrete": 2}
Framing = Literal["tcp", "rtu", "rtu_tcp"]


class PymodbusBits:
    """pymodbus's own server (TCP, RTU on a serial port, or RTU over TCP) whose coils and
    discrete inputs live in pymodbus's datastore: `set_bits` writes them with the server's
    `async_setValues`, so pymodbus alone packs them into replies (no project code here)."""

    def __init__(self, framing: Framing, units: Sequence[int] = (1,), size: int = 64) -> None:
        self.framing = framing
        self.units = tuple(units)
        self.size = size
        self.port = 0
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)

    def _devices(self) -> list[SimDevice]:
        def bits() -> list[SimData]:
            return [SimData(0, count=self.size, values=False, datatype=DataType.BITS)]

        def regs() -> list[SimData]:
            return [SimData(0, count=8, values=0, datatype=DataType.REGISTERS)]

        return [SimDevice(id=u, simdata=(bits(), bits(), regs(), regs())) for u in self.units]

    async def start(self, serial_port: str = "", baud: int = 19200) -> None:
        if self.framing == "rtu":
            self._server = ModbusSerialServer(
                self._devices(), framer=FramerType.RTU, port=serial_port, baudrate=baud
            )
            await self._server.serve_forever(background=True)
            return
        framer = FramerType.RTU if self.framing == "rtu_tcp" else FramerType.SOCKET
        server = ModbusTcpServer(self._devices(), address=("127.0.0.1", 0), framer=framer)
        self._server = server
        await server.serve_forever(background=True)
        listener = cast(asyncio.Server, server.transport)
        self.port = listener.sockets[0].getsockname()[1]

    async def set_bits(self, unit: int, table: str, address: int, bits: Sequence[bool]) -> None:
        assert self._server is not None
        await self._server.async_setValues(unit, BIT_FC[table], address, list(bits))

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.shutdown()  # type: ignore[no-untyped-call]
            self._server = None
