"""The driver contract: a Source reads planned register blocks and raises its own errors; a
DriverEntry describes a driver to the registry (drivers.registry): its bus type, how it checks
a bus's address keys, how it builds its Source, and its request-time estimate."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from agent.core.hosts import host_problem
from agent.core.model import Table

__all__ = ["Table"]  # re-exported: the table names are part of the driver contract

BIT_TABLES: frozenset[str] = frozenset({"coil", "discrete"})

MAX_REGISTERS_PER_READ = 125
MAX_BITS_PER_READ = 2000


def max_count(table: Table) -> int:
    """The most registers (or bits, for coil/discrete) one request may read."""
    return MAX_BITS_PER_READ if table in BIT_TABLES else MAX_REGISTERS_PER_READ


@dataclass(frozen=True, slots=True)
class Block:
    """One planned read request: `count` registers (or bits) of `table` from `address` on unit
    `unit_id`."""

    unit_id: int
    table: Table
    address: int
    count: int

    def __post_init__(self) -> None:
        top = max_count(self.table)
        if not 1 <= self.count <= top:
            raise ValueError(f"block count {self.count} outside 1..{top}")

    @property
    def label(self) -> str:
        last = self.address + self.count - 1
        what = "bits" if self.table in BIT_TABLES else "registers"
        return f"unit {self.unit_id} {self.table} {what} {self.address}-{last}"


@dataclass(frozen=True, slots=True)
class RawBlock:
    """The registers of one successful read, stamped when the reply arrived. For coil and
    discrete blocks `registers` holds one 0/1 word per bit."""

    block: Block
    registers: npt.NDArray[np.uint16]
    t_wall: float  # time.time() at the read (UTC epoch seconds)
    t_mono: float  # time.monotonic() at the read


class SourceError(Exception):
    """Base of every error a driver raises."""


class SourceTimeout(SourceError, TimeoutError):
    """The device did not answer within the configured timeout (after retries)."""


class SourceProtocolError(SourceError):
    """The device answered with a Modbus exception response."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class SourceLinkError(SourceError, ConnectionError):
    """The link (TCP socket, serial port) is not open or was lost."""


class SourceFrameError(SourceError):
    """Bytes came back but no valid reply (CRC error, garbage, a truncated frame)."""


class SourceBusy(SourceProtocolError):
    """Exception 5 (acknowledge) or 6 (device busy): the device is alive but cannot serve this
    request now; the poller retries it a little later within the cycle."""


class SourceDeviceFailure(SourceError):
    """Exception 4 (device failure), 10 (gateway path unavailable) or 11 (gateway target did not
    respond): the device cannot deliver data, which counts as a failure of that device (toward
    quarantine and comm_loss), not as an answer."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def behind_gateway(self) -> bool:
        """10 or 11: a gateway answered for a device it cannot reach."""
        return self.code in GATEWAY_CODES


BUSY_CODES = frozenset({5, 6})
FAILURE_CODES = frozenset({4, 10, 11})
GATEWAY_CODES = frozenset({10, 11})
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "device failure",
    5: "acknowledge",
    6: "device busy",
    7: "negative acknowledge",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target did not respond",
}


def exception_error(code: int, where: str) -> SourceProtocolError | SourceDeviceFailure:
    """The SourceError for a Modbus exception reply `code` to the request described by `where`:
    every driver translates exception replies through this one function."""
    name = EXCEPTION_NAMES.get(code, "unknown exception")
    if code in GATEWAY_CODES:
        return SourceDeviceFailure(
            code,
            f"{where}: the gateway cannot reach the device behind it "
            f"(Modbus exception {code}: {name})",
        )
    if code in FAILURE_CODES:
        return SourceDeviceFailure(code, f"{where}: Modbus exception {code} ({name})")
    if code in BUSY_CODES:
        return SourceBusy(code, f"{where}: Modbus exception {code} ({name})")
    return SourceProtocolError(code, f"{where}: Modbus exception {code} ({name})")


class Source(Protocol):
    """A field bus. Contract:

    - one caller per Source (the bus task); calls are never concurrent;
    - `connect()` opens the link or raises SourceLinkError; it may be called again after a
      SourceLinkError to reopen;
    - `read(block)` returns the whole block or raises; it never returns partial data;
    - `close()` is idempotent; `read` is never called after `close`.
    """

    async def connect(self) -> None: ...

    async def read(self, block: Block) -> RawBlock: ...

    async def close(self) -> None: ...

    @property
    def connected(self) -> bool: ...


# -- the registry entry of a driver ---------------------------------------------------------


class BusSettings(Protocol):
    """What a driver may read of a bus (agent.core.model.BusSpec has these fields)."""

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
    @property
    def round_trip(self) -> float | None: ...


@dataclass(frozen=True, slots=True)
class BusFields:
    """The address keys of one [[buses]] entry as written (None: not set)."""

    type: str
    host: str | None
    port: int | str
    baud: int | None


@dataclass(frozen=True, slots=True)
class BusAddress:
    """Where a bus is, once its driver checked the address keys."""

    host: str = ""
    port: int = 0  # TCP port
    serial_port: str = ""  # serial device path


class BusConfigError(ValueError):
    """A bus's keys do not suit its driver; `key` names the offending key of the bus entry."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


@dataclass(frozen=True, slots=True)
class DriverEntry:
    """One field-bus driver, picked by the bus `type` in the config. Contract:

    - `address(fields)` checks the bus's address keys and returns the address, or raises
      BusConfigError (the config loader adds the file and `buses[i].<key>`);
    - `make(bus)` builds the bus's Source (not yet connected) from a validated bus;
    - `request_s(bus, block)` estimates one healthy request (`dust-agent check` sums them);
    - `endpoint(bus)` names the bus's link in one line ("modbus tcp 10.0.0.5:502");
    - `basis(bus)` says what the estimate assumes ("~5 ms assumed round trip per request");
    - `unit_ids` is the range of device (unit) ids the bus type can address, and `unit_note`
      says why, for the config loader's message.
    """

    name: str
    make: Callable[[BusSettings], Source]
    address: Callable[[BusFields], BusAddress]
    request_s: Callable[[BusSettings, Block], float]
    endpoint: Callable[[BusSettings], str]
    basis: Callable[[BusSettings], str]
    summary: str = ""  # one line for `dust-agent` messages and the docs
    unit_ids: tuple[int, int] = (0, 255)
    unit_note: str = ""


def tcp_address(fields: BusFields) -> BusAddress:
    """The address check of a driver on TCP: `host` and a TCP `port`, no serial keys."""
    if not fields.host:
        raise BusConfigError("host", f"a {fields.type} bus needs host (the address)")
    problem = host_problem(fields.host)
    if problem is not None:
        raise BusConfigError("host", problem)
    port = fields.port
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BusConfigError("port", f"a {fields.type} bus needs a TCP port 1..65535, got {port!r}")
    return BusAddress(host=fields.host, port=port)
