"""Drivers by bus type: `make_source(bus)` builds the Source for a bus's settings."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, Protocol

from drivers.base import Source
from drivers.line import SerialLine, TcpLine
from drivers.modbus_rtu import ModbusRtuSource
from drivers.modbus_tcp import ModbusTcpSource
from drivers.rtu_frame import LineTiming


class BusSettings(Protocol):
    """What a driver needs of a bus (agent.core.model.BusSpec has these fields)."""

    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def timeout(self) -> float: ...
    @property
    def retries(self) -> int: ...
    @property
    def serial_port(self) -> str: ...
    @property
    def baud(self) -> int | None: ...
    @property
    def parity(self) -> Literal["N", "E", "O"]: ...
    @property
    def bytesize(self) -> int: ...
    @property
    def stopbits(self) -> int: ...
    @property
    def turnaround(self) -> float | None: ...
    @property
    def late_guard(self) -> float | None: ...


def timing_of(bus: BusSettings) -> LineTiming | None:
    if bus.baud is None:
        return None
    return LineTiming(bus.baud, bus.bytesize, bus.parity, bus.stopbits)


def _tcp(bus: BusSettings) -> Source:
    return ModbusTcpSource(bus.host, bus.port, bus.timeout, bus.retries, bus.name)


def _rtu(bus: BusSettings) -> Source:
    timing = timing_of(bus)
    assert timing is not None, "the config loader requires baud on rtu buses"
    line = SerialLine(
        bus.serial_port,
        timing.baud,
        bytesize=bus.bytesize,
        parity=bus.parity,
        stopbits=bus.stopbits,
        name=f"serial port {bus.serial_port}",
    )
    return _rtu_source(bus, line, timing, physical=True)


def _rtu_tcp(bus: BusSettings) -> Source:
    line = TcpLine(
        bus.host,
        bus.port,
        connect_timeout=max(bus.timeout, 1.0),
        name=f"RTU over TCP {bus.host}:{bus.port}",
    )
    return _rtu_source(bus, line, timing_of(bus))


def _rtu_source(
    bus: BusSettings,
    line: SerialLine | TcpLine,
    timing: LineTiming | None,
    *,
    physical: bool = False,
) -> Source:
    return ModbusRtuSource(
        line,
        timeout=bus.timeout,
        retries=bus.retries,
        timing=timing,
        turnaround=bus.turnaround,
        late_guard=bus.late_guard,
        name=bus.name,
        physical=physical,
    )


DRIVERS: dict[str, Callable[[BusSettings], Source]] = {
    "tcp": _tcp,
    "rtu": _rtu,
    "rtu_tcp": _rtu_tcp,
}


def make_source(bus: BusSettings) -> Source:
    try:
        factory = DRIVERS[bus.type]
    except KeyError:
        raise ValueError(f"bus {bus.name!r}: no driver for type {bus.type!r}") from None
    return factory(bus)
