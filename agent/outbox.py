"""Store-and-forward outbox: SQLite (WAL) rows per stream with gap-free sequence numbers.

Every SQLite call runs on one dedicated worker thread (agent.store holds the SQL); the async
methods hand work to it and return after COMMIT.

Contract:

- `put(entries)` stores chunks of records in one transaction and gives each chunk a
  contiguous range of per-stream sequence numbers (`streams.next_seq` is updated in the
  same transaction, so seq is monotonic, gap-free and survives restarts and kill -9).
  Durability: a transaction holding an alarm or event record is committed with
  synchronous=FULL (fsync before put returns); telemetry-only transactions use NORMAL, and
  one of them is made FULL at least every `sync_interval` seconds. So a power cut loses no
  stored alarm or event, and at most the last `sync_interval` seconds of telemetry.
- `set_live_boundary(live_since)` (at each connect) marks every row stored before
  `live_since` (wall clock; None: every row stored so far) as backlog.
- `begin(max_records, max_bytes, backlog=True)` leases the oldest un-leased rows, in this
  order: alarms, events, live telemetry (after the boundary), and, only if `backlog`,
  older telemetry. A batch holds at least one row, and more while the records stay within
  `max_records` and the estimated message size within `max_bytes`. Leased rows are not
  handed out again until `keep(batch)` (put back for retry) or `ack(batch)` (deleted).
  Leases live in memory: one consumer per outbox. Several batches may be leased at once.
- Byte cap: after a put, while the live pages of the database exceed `max_bytes`, the oldest
  un-leased TELEMETRY rows are deleted (never alarm or event rows) until the database is
  under 90 % of the cap. The dropped records are counted persistently and reported, in the
  same transaction, as a `data_dropped` event record.
- A corrupt database is moved aside and replaced (see agent.store); seqs continue.

Exceptions: OutboxError (cannot open, read or write; names the file) and its subclass
OutboxWriteError (disk full, read-only filesystem, I/O error: retry later).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from agent.store import (
    STREAMS,
    Batch,
    Entry,
    OutboxError,
    OutboxStats,
    OutboxWriteError,
    Row,
    Store,
    Stream,
    event_body,
)

__all__ = [
    "STREAMS",
    "Batch",
    "Entry",
    "Outbox",
    "OutboxError",
    "OutboxStats",
    "OutboxWriteError",
    "Row",
    "Stream",
    "event_body",
]

_T = TypeVar("_T")
UNLIMITED = 1 << 40


class Outbox:
    """SQLite store-and-forward queue; see the module docstring for the contract."""

    def __init__(self, path: Path, max_bytes: int, *, sync_interval: float = 10.0) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._store = Store(self.path, max_bytes, sync_interval)
        self._executor: ThreadPoolExecutor | None = None
        self._data = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            raise OutboxError(f"outbox {self.path} is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        try:
            await self._submit(self._store.open)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        if await self._run(self._store.has_pending):
            self._data.set()

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._submit(self._store.close)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None
            with self._store.leases.lock:
                self._store.leases.ids.clear()
                self._store.leases.cursor.clear()

    # -- producer side -----------------------------------------------------------------------

    async def put(self, entries: Sequence[Entry]) -> None:
        """Store the entries (empty ones are skipped); returns after COMMIT.

        If the caller is cancelled while waiting, the transaction still runs to its end on
        the worker thread (committed or not: the caller cannot tell).
        """
        todo = [e for e in entries if e.n > 0]
        if not todo:
            return
        await self._run(self._store.put, todo)
        self._data.set()

    # -- consumer side -----------------------------------------------------------------------

    async def set_live_boundary(self, live_since: float | None) -> int:
        """Rows stored before `live_since` (None: all rows stored so far) become backlog."""
        return await self._run(self._store.set_boundary, live_since)

    async def begin(
        self, max_records: int, max_bytes: int = UNLIMITED, *, backlog: bool = True
    ) -> Batch | None:
        """Lease the next batch (see the module docstring for the order)."""
        self._data.clear()  # before the query: a put committed after it sets the event again
        return await self._run(self._store.begin, max(1, max_records), max_bytes, backlog)

    async def ack(self, *batches: Batch) -> None:
        """Delete the batches' rows (one transaction) and release their leases."""
        try:
            await self._run(self._store.delete, list(batches))
        finally:
            for b in batches:
                self._store.release(b, rewind=False)

    def keep(self, batch: Batch) -> None:
        """Put the batch back: its rows are handed out again by a later begin()."""
        self._store.release(batch, rewind=True)
        self._data.set()

    async def wait_for_data(self, timeout: float) -> bool:  # noqa: ASYNC109 (the agreed API)
        """Wait until a put (or keep) may have made rows available; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._data.wait()
        except TimeoutError:
            return False
        return True

    async def stats(self) -> OutboxStats:
        return await self._run(self._store.stats)

    # -- worker-thread side ------------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await self._submit(self._store.call, fn, *args)

    async def _submit(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            raise OutboxError(f"outbox {self.path} is not open")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)
