"""The Modbus drivers' registry entries: bus types `tcp`, `rtu` (a serial port) and `rtu_tcp`
(RTU frames through a serial device server), with their address checks, Source factories
and request-time estimates (registered in drivers.registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from drivers.base import (
    Block,
    BusAddress,
    BusConfigError,
    BusFields,
    BusSettings,
    DriverEntry,
    Source,
    tcp_address,
)
from drivers.rtu_frame import TABLE_FC, LineTiming

if TYPE_CHECKING:
    from drivers.line import SerialLine, TcpLine

# The Source factories import pymodbus and pyserial when a bus is built, not when the config
# is checked (`dust-agent check` and the CLI stay light).

# Assumed for the cycle-time estimate when a bus sets no `round_trip`: one Modbus TCP
# request/reply on a switched plant LAN (0.1-0.5 ms) plus an Ethernet device's turnaround
# (typically well under 1 ms). Requests on one endpoint are sequential (one in flight), so a
# TCP cycle is requests x round trip. Measured here: ~0.13 ms per request on loopback against
# pymodbus's server. A Modbus TCP gateway to serial devices answers only as fast as its serial
# line: set round_trip for it.
TCP_ROUND_TRIP_S = 0.001


def round_trip_s(bus: BusSettings) -> float:
    """The LAN round trip assumed per request (the bus's `round_trip`, else the default)."""
    return TCP_ROUND_TRIP_S if bus.round_trip is None else bus.round_trip


def timing_of(bus: BusSettings) -> LineTiming | None:
    """The serial line's timing (rtu, and rtu_tcp when its baud is given)."""
    if bus.baud is None:
        return None
    return LineTiming(bus.baud, bus.bytesize, bus.parity, bus.stopbits)


def _rtu_source(
    bus: BusSettings, line: SerialLine | TcpLine, timing: LineTiming | None, *, physical: bool
) -> Source:
    from drivers.modbus_rtu import ModbusRtuSource

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


# -- tcp ------------------------------------------------------------------------------------


def _tcp(bus: BusSettings) -> Source:
    from drivers.modbus_tcp import ModbusTcpSource

    return ModbusTcpSource(bus.host, bus.port, bus.timeout, bus.retries, bus.name)


def _tcp_address(fields: BusFields) -> BusAddress:
    address = tcp_address(fields)
    if fields.baud is not None:
        raise BusConfigError("baud", "baud applies to rtu and rtu_tcp buses only")
    return address


def _tcp_request_s(bus: BusSettings, block: Block) -> float:
    return round_trip_s(bus)


# -- rtu and rtu_tcp --------------------------------------------------------------------------


def _rtu(bus: BusSettings) -> Source:
    timing = timing_of(bus)
    assert timing is not None, "the rtu address check requires baud"
    from drivers.line import SerialLine

    line = SerialLine(
        bus.serial_port,
        timing.baud,
        bytesize=bus.bytesize,
        parity=bus.parity,
        stopbits=bus.stopbits,
        name=f"serial port {bus.serial_port}",
    )
    return _rtu_source(bus, line, timing, physical=True)


def _rtu_address(fields: BusFields) -> BusAddress:
    if not isinstance(fields.port, str) or not fields.port:
        raise BusConfigError(
            "port",
            "an rtu bus needs the serial device path, e.g. port = "
            '"/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A10K1234-if00-port0" (stable '
            "across replugs; `ls /dev/serial/by-id/` lists them) or /dev/ttyUSB0",
        )
    if fields.host is not None:
        raise BusConfigError("host", "an rtu bus has no host (it is a serial port)")
    if fields.baud is None:
        raise BusConfigError("baud", "an rtu bus needs baud, e.g. baud = 9600")
    return BusAddress(serial_port=fields.port)


def _rtu_tcp(bus: BusSettings) -> Source:
    from drivers.line import TcpLine

    line = TcpLine(
        bus.host,
        bus.port,
        connect_timeout=max(bus.timeout, 1.0),
        name=f"RTU over TCP {bus.host}:{bus.port}",
    )
    return _rtu_source(bus, line, timing_of(bus), physical=False)


def _serial_request_s(bus: BusSettings, block: Block) -> float:
    """Request and reply wire time at the baud plus two 3.5-character gaps (the turnaround,
    if longer, replaces one); RTU over TCP adds a LAN round trip; without a baud (rtu_tcp)
    only the round trip is known."""
    timing = timing_of(bus)
    if timing is None:
        return round_trip_s(bus)
    t = timing.transaction_s(TABLE_FC[block.table], block.count)
    if bus.turnaround is not None and bus.turnaround > timing.gap_s:
        t += bus.turnaround - timing.gap_s
    return t + (round_trip_s(bus) if bus.type == "rtu_tcp" else 0.0)


def _tcp_basis(bus: BusSettings) -> str:
    how = "(round_trip)" if bus.round_trip is not None else "(default; set round_trip)"
    return f"~{round_trip_s(bus) * 1000:g} ms round trip per request {how}"


def _serial_basis(bus: BusSettings) -> str:
    timing = timing_of(bus)
    if timing is None:
        return _tcp_basis(bus)
    return (
        f"wire time at {timing.baud} baud, {timing.char_s * 1000:.3f} ms a character, "
        f"3.5-character gaps of {timing.gap_s * 1000:.2f} ms"
    )


# Modbus over serial line (V1.02, 2.2): 0 is the broadcast address (a write no device answers;
# a read of it always times out), 248-255 are reserved. RTU over TCP forwards the same frames
# onto the line. On Modbus TCP the unit id is the device's own business: TCP-native devices
# mostly ignore it or want 0 or 255, gateways map it to a serial device: 0-255 stay valid.
RTU_UNITS = (1, 247)
RTU_UNIT_NOTE = (
    "an RTU unit id is 1..247 (0 is broadcast, which no device answers; 248..255 are "
    "reserved): use the address set on the device's panel"
)
TCP_UNIT_NOTE = "a Modbus TCP unit id is 0..255"


def _frame(bus: BusSettings) -> str:
    return f"{bus.bytesize}{bus.parity}{bus.stopbits}"


TCP = DriverEntry(
    name="tcp",
    make=_tcp,
    address=_tcp_address,
    request_s=_tcp_request_s,
    endpoint=lambda bus: f"modbus tcp {bus.host}:{bus.port}",
    basis=_tcp_basis,
    summary="Modbus TCP: host, port (502)",
    unit_note=TCP_UNIT_NOTE,
)
RTU = DriverEntry(
    name="rtu",
    make=_rtu,
    address=_rtu_address,
    request_s=_serial_request_s,
    endpoint=lambda bus: f"modbus rtu {bus.serial_port} {bus.baud} baud {_frame(bus)}",
    basis=_serial_basis,
    summary="Modbus RTU on a serial port (RS-485): port = device path, baud",
    unit_ids=RTU_UNITS,
    unit_note=RTU_UNIT_NOTE,
)
RTU_TCP = DriverEntry(
    name="rtu_tcp",
    make=_rtu_tcp,
    address=tcp_address,  # baud is optional: the device server's serial side
    request_s=_serial_request_s,
    endpoint=lambda bus: f"modbus rtu-over-tcp {bus.host}:{bus.port}",
    basis=_serial_basis,
    summary="Modbus RTU frames over TCP (serial device server): host, port, optional baud",
    unit_ids=RTU_UNITS,
    unit_note=RTU_UNIT_NOTE,
)
