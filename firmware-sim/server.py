"""The plant served over Modbus TCP: one pymodbus `SimDevice` per unit, values from the model.

How the registers stay current: every `SimDevice` has an `action` hook, which pymodbus awaits
on each access with the live register list of the block being read. The hook recomputes the
block from the model (`Plant.collector_registers` / `Plant.bench_registers`) for the plant time
of that very read and writes it in place. There is no background task: a simulator nobody
polls never wakes the event loop, the cost is proportional to the reads actually made (the
benchmark's 50 units x 1 Hz costs 50 small recomputes a second), and every read sees the value
at the instant of the read rather than one up to a tick old. The same hook injects faults.

Absent units: a real RS-485 slave that is not there stays silent, but pymodbus answers an
unknown unit id with exception 4. So the server has a catch-all `SimDevice(id=0)` whose hook
drops the request (raises `NoSuchIdException` with `ignore_missing_devices=True`: pymodbus
sends nothing and the client times out). The `no_answer` fault uses the same mechanism. This is
cleaner than sleeping past the client timeout: nothing is left pending, and no late reply can
be sent (pymodbus stamps a late reply with the transaction id of the *latest* request on that
connection, so a reply that comes after the client gave up could be mistaken for the answer to
the next request). A `delay` longer than the client's timeout does produce such a late reply:
use `no_answer` to model silence, `delay` to model a slow unit.

Faults per unit (`Fault`): `no_answer`, `exception=N` (a Modbus exception code), `delay=S`
(seconds before answering; combinable with `exception`), `max_count=N` (reads of more than N
registers or bits get exception 3, as from devices that reject multi-register reads). Switch
them at run time with `PlantServer.set_fault` / `clear_fault`, or from the CLI with
`--fault UNIT:SPEC`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from firmware_sim.peer import PEER_REGISTERS, peer_registers
from firmware_sim.plant import DRY_COLLECTOR_REGISTERS, Plant

FC_READ_HOLDING = 3
FC_READ_INPUT = 4

Action = Callable[
    [int, int, int, int, list[int], list[int] | list[bool] | None],
    Coroutine[Any, Any, ExcCodes | None],
]

VALID_EXCEPTION_CODES = tuple(int(c) for c in ExcCodes)


def quiet_pymodbus(level: int = logging.CRITICAL) -> None:
    """pymodbus logs every dropped or failed frame; keep the simulator's output readable."""
    logging.getLogger("pymodbus").setLevel(level)


@dataclass(frozen=True, slots=True)
class Fault:
    """An injected fault on one unit. All fields off = healthy."""

    no_answer: bool = False
    exception: int | None = None  # Modbus exception code sent instead of data
    delay: float = 0.0  # seconds before the answer (or the exception)
    # RTU serving only (firmware_sim.rtu): the reply's CRC is wrong / random bytes instead
    crc: bool = False
    garbage: bool = False
    every: int = 1  # RTU serving only: the fault hits every N-th request of the unit
    max_count: int = 0  # > 0: reads of more than this many registers/bits get exception 3

    def __post_init__(self) -> None:
        if self.exception is not None and self.exception not in VALID_EXCEPTION_CODES:
            raise ValueError(
                f"exception code {self.exception} is not one pymodbus can send "
                f"(valid: {', '.join(map(str, VALID_EXCEPTION_CODES))})"
            )
        if self.delay < 0:
            raise ValueError(f"delay must be >= 0, got {self.delay}")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.max_count < 0:
            raise ValueError(f"max_count must be >= 0, got {self.max_count}")

    @property
    def active(self) -> bool:
        return (
            self.no_answer
            or self.exception is not None
            or self.delay > 0
            or self.crc
            or self.garbage
            or self.max_count > 0
        )

    def describe(self) -> str:
        parts = []
        if self.no_answer:
            parts.append("no_answer")
        if self.delay:
            parts.append(f"delay={self.delay:g}")
        if self.exception is not None:
            parts.append(f"exception={self.exception}")
        parts += [name for name in ("crc", "garbage") if getattr(self, name)]
        if self.max_count:
            parts.append(f"max_count={self.max_count}")
        if self.every > 1:
            parts.append(f"every={self.every}")
        return ",".join(parts) or "none"

    @classmethod
    def parse(cls, spec: str) -> Fault:
        """`no_answer`, `exception=2`, `delay=0.5`, `crc`, `garbage`, `every=N`, `max_count=N`,
        or a comma-joined mix; `none` clears. `delay` beyond the client's timeout is a late
        reply."""
        no_answer, exception, delay, crc, garbage, every = False, None, 0.0, False, False, 1
        max_count = 0
        for raw in spec.split(","):
            item = raw.strip()
            name, _, arg = item.partition("=")
            try:
                if item in ("no_answer", "silent"):
                    no_answer = True
                elif name == "exception" and arg:
                    exception = int(arg, 0)
                elif name in ("delay", "late") and arg:
                    delay = float(arg)
                elif item == "crc":
                    crc = True
                elif item == "garbage":
                    garbage = True
                elif name == "every" and arg:
                    every = int(arg)
                elif name == "max_count" and arg:
                    max_count = int(arg)
                elif item in ("none", "ok"):
                    pass
                else:
                    raise ValueError
            except ValueError:
                raise ValueError(
                    f"bad fault {item!r}: use no_answer, exception=N, delay=SECONDS, crc, "
                    "garbage, every=N, max_count=N or none"
                ) from None
        return cls(no_answer, exception, delay, crc, garbage, every, max_count)


def parse_fault_arg(text: str) -> tuple[int, Fault]:
    """CLI form `UNIT:SPEC`, e.g. `2:exception=2`, `2:no_answer`, `1:delay=0.3,exception=6`."""
    unit_s, sep, spec = text.partition(":")
    try:
        unit = int(unit_s)
    except ValueError:
        unit = -1
    if not sep or not 1 <= unit <= 247:
        raise ValueError(f"bad --fault {text!r}: use UNIT:SPEC with UNIT 1..247, e.g. 2:no_answer")
    return unit, Fault.parse(spec)


async def _shutdown(server: ModbusTcpServer) -> None:
    await server.shutdown()  # type: ignore[no-untyped-call]


class PlantServer:
    """A Modbus TCP server for a plant.

    Every unit serves the dry-collector input-register map (FC4, addresses 0..10). With
    `holding_registers=M > 0` every unit also serves M uint16 holding registers (FC3,
    addresses 0..M-1) that change over time: the bench plant. Unit ids not in `units` do not
    answer. Client writes are refused with exception 1: the controllers are read-only here.

    Usage (inside a running event loop)::

        server = PlantServer(Plant(seed=1, scenario="smoulder"), units=(1, 2), port=0)
        await server.start()
        server.port                     # the real port
        server.set_fault(2, Fault(exception=2))
        server.clear_fault(2)
        await server.stop()

    `clock` returns the plant time in seconds; by default, monotonic seconds since `start()`.
    Tests can pass their own to read the plant at chosen instants.

    `peer=True` (the peer plant of bench/peer.py): the holding registers carry a per-read
    sequence number and the read's wall-clock time instead (firmware_sim.peer).
    """

    def __init__(
        self,
        plant: Plant,
        *,
        units: Iterable[int] = (1, 2),
        holding_registers: int = 0,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Mapping[int, Fault] | None = None,
        clock: Callable[[], float] | None = None,
        peer: bool = False,
    ) -> None:
        self.plant = plant
        self.peer = peer
        if peer:
            holding_registers = PEER_REGISTERS
        self.units = tuple(sorted(set(units)))
        if not self.units or not all(1 <= u <= 247 for u in self.units):
            raise ValueError(f"units must be 1..247, got {self.units}")
        if not 0 <= holding_registers <= 10000:
            raise ValueError(f"holding_registers must be 0..10000, got {holding_registers}")
        self.holding_registers = holding_registers
        self.host = host
        self._requested_port = port
        self._faults: dict[int, Fault] = {}
        for unit, fault in (faults or {}).items():
            self.set_fault(unit, fault)
        self._clock = clock
        self._t0 = time.monotonic()
        self._server: ModbusTcpServer | None = None
        self._port: int | None = None
        self.reads: dict[int, int] = dict.fromkeys(self.units, 0)  # answered reads per unit
        self.dropped = 0  # requests left unanswered (absent unit or no_answer)
        self._peer_regs: dict[int, list[int]] = {}  # peer plant: each unit's last read

    # --- time and faults ---------------------------------------------------------------------

    def elapsed(self) -> float:
        """Plant time now, in seconds."""
        if self._clock is not None:
            return self._clock()
        return time.monotonic() - self._t0

    def set_fault(self, unit: int, fault: Fault | None = None, **kwargs: Any) -> None:
        """Inject a fault on `unit`: `set_fault(2, Fault(no_answer=True))` or
        `set_fault(2, exception=6, delay=0.2)`. Takes effect on the next request."""
        if fault is None:
            fault = Fault(**kwargs)
        elif kwargs:
            raise TypeError("pass either a Fault or keyword arguments, not both")
        if fault.active:
            self._faults[unit] = fault
        else:
            self._faults.pop(unit, None)

    def clear_fault(self, unit: int | None = None) -> None:
        """Clear the fault of `unit`, or of every unit."""
        if unit is None:
            self._faults.clear()
        else:
            self._faults.pop(unit, None)

    def fault(self, unit: int) -> Fault:
        return self._faults.get(unit, Fault())

    @property
    def faults(self) -> dict[int, Fault]:
        return dict(self._faults)

    # --- lifecycle ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("PlantServer is not started")
        return self._port

    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        """Listen (inside the running loop); `port` then holds the real port."""
        if self._server is not None:
            raise RuntimeError("PlantServer already started")
        devices = [self._device(unit) for unit in self.units]
        devices.append(self._absent_device())
        server = ModbusTcpServer(
            devices,
            address=(self.host, self._requested_port),
            ignore_missing_devices=True,
        )
        try:
            await server.serve_forever(background=True)
        except RuntimeError as exc:
            await _shutdown(server)
            raise OSError(f"cannot listen on {self.host}:{self._requested_port}: {exc}") from exc
        transport: Any = server.transport
        self._port = int(transport.sockets[0].getsockname()[1])
        self._server = server
        self._t0 = time.monotonic()

    async def stop(self) -> None:
        """Close the listener and every client connection."""
        server, self._server = self._server, None
        if server is not None:
            await _shutdown(server)

    async def __aenter__(self) -> PlantServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- devices -----------------------------------------------------------------------------

    def _device(self, unit: int) -> SimDevice:
        holding = max(1, self.holding_registers)
        return SimDevice(
            id=unit,
            action=self._action(unit),
            simdata=(
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],  # coils
                [SimData(0, count=16, values=False, datatype=DataType.BITS)],  # discrete in
                [SimData(0, count=holding, values=0, datatype=DataType.REGISTERS)],
                [SimData(0, count=DRY_COLLECTOR_REGISTERS, values=0, datatype=DataType.REGISTERS)],
            ),
        )

    def _absent_device(self) -> SimDevice:
        """Catch-all (id 0) for every unit id not configured: never answers."""

        async def silent(  # noqa: PLR0917 (pymodbus's SimAction signature)
            fc: int,
            start: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            self.dropped += 1
            raise NoSuchIdException("unit not present")

        bits = SimData(0, count=16, values=False, datatype=DataType.BITS)
        regs = SimData(0, count=125, values=0, datatype=DataType.REGISTERS)
        return SimDevice(id=0, action=silent, simdata=([bits], [bits], [regs], [regs]))

    def _action(self, unit: int) -> Action:
        plant = self.plant
        n_holding = self.holding_registers

        async def action(  # noqa: PLR0917 (pymodbus's SimAction signature)
            fc: int,
            start: int,
            address: int,
            count: int,
            registers: list[int],
            values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            fault = self._faults.get(unit)
            if fault is not None:
                if fault.no_answer:
                    self.dropped += 1
                    raise NoSuchIdException(f"unit {unit}: injected no_answer")
                if fault.delay > 0:
                    await asyncio.sleep(fault.delay)
                if fault.exception is not None:
                    return ExcCodes(fault.exception)
                if fault.max_count and count > fault.max_count:
                    return ExcCodes.ILLEGAL_VALUE
            if values is not None:
                return ExcCodes.ILLEGAL_FUNCTION
            if self.peer and fc == FC_READ_HOLDING:
                self._peer_read(unit, address, count, registers)
                return None
            t = self.elapsed()
            if fc == FC_READ_INPUT:
                registers[:DRY_COLLECTOR_REGISTERS] = plant.collector_registers(unit, t)
            elif fc == FC_READ_HOLDING and n_holding:
                registers[:n_holding] = plant.bench_registers(unit, t, n_holding)
            self.reads[unit] += 1
            return None

        return action

    def _peer_read(self, unit: int, address: int, count: int, registers: list[int]) -> None:
        """A read of the peer plant: a new seq and read time when it covers address 0."""
        if address == 0:
            self.reads[unit] += 1
            self._peer_regs[unit] = peer_registers(unit, self.reads[unit], time.time())
        regs = self._peer_regs.get(unit) or peer_registers(unit, 0, time.time())
        registers[:PEER_REGISTERS] = regs
