"""Field-bus drivers: the only code that talks to pymodbus.

Exception tree (every driver raises only these, translated once at the boundary)::

    SourceError
     ├── SourceTimeout(SourceError, TimeoutError)      no answer within the bus timeout
     ├── SourceProtocolError(SourceError)              Modbus exception 1, 2, 3... (.code)
     │    └── SourceBusy(SourceProtocolError)          exception 5 or 6: retry shortly
     ├── SourceDeviceFailure(SourceError)              exception 4, 10, 11: the device failed
     ├── SourceFrameError(SourceError)                 bytes but no valid reply (CRC, noise)
     └── SourceLinkError(SourceError, ConnectionError) socket/port not open or lost

Drivers by bus type: `drivers.registry.make_source(bus)`; each driver registers a DriverEntry
(drivers.base; docs/extending.md). The Modbus entries are in modbus: TCP in modbus_tcp, RTU on
a serial port and RTU over TCP in modbus_rtu (framing in rtu_frame, byte lines in line).
"""

from drivers.base import (
    Block,
    RawBlock,
    Source,
    SourceBusy,
    SourceDeviceFailure,
    SourceError,
    SourceFrameError,
    SourceLinkError,
    SourceProtocolError,
    SourceTimeout,
    Table,
)

__all__ = [
    "Block",
    "RawBlock",
    "Source",
    "SourceBusy",
    "SourceDeviceFailure",
    "SourceError",
    "SourceFrameError",
    "SourceLinkError",
    "SourceProtocolError",
    "SourceTimeout",
    "Table",
]
