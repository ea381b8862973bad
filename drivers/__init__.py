"""Field-bus drivers: the only code that talks to pymodbus.

Exception tree (every driver raises only these, translated once at the boundary)::

    SourceError
     ├── SourceTimeout(SourceError, TimeoutError)      no answer within the bus timeout
     ├── SourceProtocolError(SourceError)              Modbus exception response (.code)
     └── SourceLinkError(SourceError, ConnectionError) socket/port not open or lost
"""

from drivers.base import (
    Block,
    RawBlock,
    Source,
    SourceError,
    SourceLinkError,
    SourceProtocolError,
    SourceTimeout,
    Table,
)

__all__ = [
    "Block",
    "RawBlock",
    "Source",
    "SourceError",
    "SourceLinkError",
    "SourceProtocolError",
    "SourceTimeout",
    "Table",
]
