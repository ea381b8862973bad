"""The driver contract: a Source reads planned register blocks and raises its own errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

Table = Literal["holding", "input"]

MAX_REGISTERS_PER_READ = 125


@dataclass(frozen=True, slots=True)
class Block:
    """One planned read request: `count` registers of `table` from `address` on unit `unit_id`."""

    unit_id: int
    table: Table
    address: int
    count: int

    def __post_init__(self) -> None:
        if not 1 <= self.count <= MAX_REGISTERS_PER_READ:
            raise ValueError(f"block count {self.count} outside 1..{MAX_REGISTERS_PER_READ}")


@dataclass(frozen=True, slots=True)
class RawBlock:
    """The registers of one successful read, stamped when the reply arrived."""

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
