"""The store's data types: what goes in (Entry), what comes out (Row, Batch, OutboxStats), errors.

Errors (all OutboxError):

    OutboxError             cannot open, read or write the database (names the file)
    └── OutboxWriteError    the write failed for a reason outside the agent: disk full,
                            read-only filesystem, I/O error; `reason` says which. Retrying
                            later may succeed; nothing was stored.

`event_body` / `event_entry` encode one gateway event (the store writes its own
`data_dropped` and `outbox_replaced` events; the guard and the service write others). The
uplinks read these types; the store never imports an uplink.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final, Literal, get_args

import orjson

Stream = Literal["alarm", "event", "telemetry"]
STREAMS: Final[tuple[Stream, ...]] = get_args(Stream)  # also the drain priority, highest first
DEFAULT_CONSUMER: Final = "default"  # the consumer of an outbox created without names


class OutboxError(RuntimeError):
    """The outbox database cannot be opened, read or written."""


class OutboxWriteError(OutboxError):
    """A write failed because of the disk or filesystem (full, read-only, I/O error)."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Entry:
    """A chunk of `n` encoded records of one stream (e.g. one poll cycle's telemetry).

    `body` holds the records without seq numbers (agent.uplink.payload defines the encoding
    of telemetry and alarms; `event_body` that of events); `ts` is the wall-clock epoch
    seconds when the chunk was produced.
    """

    stream: Stream
    n: int
    body: bytes
    ts: float

    def __post_init__(self) -> None:
        if self.stream not in STREAMS:
            raise ValueError(f"unknown stream {self.stream!r}")
        if self.n < 0:
            raise ValueError(f"record count must be >= 0, got {self.n}")


@dataclass(frozen=True, slots=True)
class Row:
    """One stored chunk: records seq_first .. seq_first + n - 1 of its stream."""

    id: int
    seq_first: int
    n: int
    body: bytes
    ts: float


@dataclass(frozen=True, slots=True)
class Batch:
    """Leased rows of one stream, oldest first; hand back with ack() or keep().

    `backfill`: the rows were stored before the consumer's live boundary (queued during an
    outage or before a restart). `gen` is the database generation (a replaced database
    starts a new one; an ack from an older generation deletes nothing). `consumer` is the
    consumer that leased it ("" for the outbox's first consumer).
    """

    stream: Stream
    rows: tuple[Row, ...]
    backfill: bool = False
    gen: int = 0
    consumer: str = ""

    @property
    def records(self) -> int:
        return sum(r.n for r in self.rows)

    @property
    def oldest_ts(self) -> float:
        return min(r.ts for r in self.rows)


@dataclass(frozen=True, slots=True)
class OutboxStats:
    pending_rows: dict[str, int]
    pending_records: dict[str, int]
    next_seq: dict[str, int]
    db_bytes: int  # database file plus its -wal file
    dropped_records: int  # telemetry records deleted by the byte cap, ever
    # wall-clock time (epoch s) of the oldest pending row, per stream that has any
    oldest_ts: dict[str, float] = field(default_factory=dict)
    replaced: int = 0  # corrupt databases moved aside since start
    # records per stream not yet acknowledged, for each configured consumer
    pending_by_consumer: dict[str, dict[str, int]] = field(default_factory=dict)
    used_bytes: int = 0  # pages in use (the file minus its free pages), bytes
    reclaimed_bytes: int = 0  # freed pages given back to the filesystem since start
    # wall-clock time (epoch s) of the oldest row each consumer has not acknowledged, per
    # stream that has any; with several consumers refreshed at most every `oldest_every` s
    oldest_by_consumer: dict[str, dict[str, float]] = field(default_factory=dict)


def event_body(kind: str, data: dict[str, Any], ts: float) -> bytes:
    """The body of a one-record "event" entry: [{"kind", "ts" (ms), "data"}]."""
    return orjson.dumps([{"kind": kind, "ts": round(ts * 1000), "data": data}])


def event_entry(kind: str, data: dict[str, Any], ts: float | None = None) -> Entry:
    """One gateway event (e.g. "clock_jump", "data_dropped") as an event-stream entry."""
    now = time.time() if ts is None else ts
    return Entry("event", 1, event_body(kind, data, now), now)
