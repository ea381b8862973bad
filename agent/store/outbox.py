"""Store-and-forward outbox: SQLite (WAL) rows per stream with gap-free sequence numbers.

SQLite calls that fsync (alarm and event puts, the telemetry put every `sync_interval`) or
take long (open, close, stats, boundaries, begin and ack while a backlog drains) run on one
dedicated worker thread (agent.store.sqlite holds the SQL). The small calls of steady
operation (telemetry puts in between, begin, ack) run inline on the event loop when the
worker is idle: a hand-off costs two thread wake-ups, more CPU than the call itself; a drain
keeps the hand-offs, so that the loop stays free for the pollers. Calls never overlap, and
run in the order they are made. The async methods return after COMMIT either way.

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
  Leases live in memory. Several batches may be leased at once.
- Consumers: `Outbox(..., consumers=("mqtt", "hebei"))` lets several uplinks drain the one
  outbox, each with its own leases, live boundary and durable delivery progress; none is
  special. `consumer(name)` is a handle with the consumer methods for that consumer; the
  methods above, called without `consumer=`, act for the first configured consumer (a
  convenience for an outbox with one consumer, named "default" unless given). An ack by one
  consumer records the rows as acknowledged by it (table `acked`); a row is deleted only
  when every configured consumer has acknowledged it, so one uplink being down neither
  blocks nor loses another's data. With one consumer acks delete rows directly (a fast
  path). Removing a consumer from the configuration forgets its progress at the next open
  (rows the others all acknowledged are deleted).
- Byte cap: after a put, while the live pages of the database exceed `max_bytes`, the oldest
  un-leased TELEMETRY rows are deleted (never alarm or event rows) until the database is
  under 90 % of the cap. The dropped records are counted persistently and reported, in the
  same transaction, as a `data_dropped` event record.
- A corrupt database is moved aside and replaced (see agent.store.sqlite); seqs continue.
- A disk that refuses writes (agent.store.guard holds what cannot be stored): a database that
  cannot be opened for writing at `open()` leaves the outbox open but empty, and every
  call retries the open (agent.store.sqlite); an `ack` whose delete fails keeps its rows leased
  and retries the delete with later acks and puts.

Exceptions: OutboxError (cannot open, read or write; names the file) and its subclass
OutboxWriteError (disk full, read-only filesystem, I/O error: retry later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TypeVar, cast

from agent.store.records import (
    DEFAULT_CONSUMER,
    STREAMS,
    Batch,
    Entry,
    OutboxError,
    OutboxStats,
    OutboxWriteError,
    Row,
    Stream,
    event_body,
    event_entry,
)
from agent.store.sqlite import OLDEST_EVERY, Store

__all__ = [
    "DEFAULT_CONSUMER",
    "STREAMS",
    "Batch",
    "Entry",
    "Outbox",
    "OutboxConsumer",
    "OutboxError",
    "OutboxStats",
    "OutboxWriteError",
    "Row",
    "Stream",
    "event_body",
    "event_entry",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
UNLIMITED = 1 << 40


class Outbox:
    """SQLite store-and-forward queue; see the module docstring for the contract."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        *,
        sync_interval: float = 10.0,
        consumers: tuple[str, ...] = (DEFAULT_CONSUMER,),
        oldest_every: float = OLDEST_EVERY,
    ) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._store = Store(self.path, max_bytes, sync_interval, consumers, oldest_every)
        self.consumers = self._store.consumers
        self._executor: ThreadPoolExecutor | None = None
        self._last: Future[object] | None = None  # the worker's last job (FIFO: all before it)
        self._undeleted: list[Batch] = []  # acknowledged, still leased: the delete failed
        self._wakes = {c: asyncio.Event() for c in self.consumers}  # each consumer's wake-up

    def consumer(self, name: str) -> OutboxConsumer:
        """The handle through which the consumer `name` drains this outbox."""
        self._store.view(name)  # raises OutboxError for a name not configured
        return OutboxConsumer(self, name)

    def _wake(self) -> None:
        for event in self._wakes.values():
            event.set()

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
            self._wake()

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._submit(self._store.close)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None
            self._store.clear_leases()
            self._undeleted = []  # not deleted: sent again after the next open

    # -- producer side -----------------------------------------------------------------------

    async def put(self, entries: Sequence[Entry]) -> None:
        """Store the entries (empty ones are skipped); returns after COMMIT.

        If the caller is cancelled while waiting, the transaction still runs to its end on
        the worker thread (committed or not: the caller cannot tell).
        """
        todo = [e for e in entries if e.n > 0]
        if not todo:
            return
        await self._run(self._store.put, todo, inline=not self._store.needs_sync(todo))
        if self._undeleted:  # the disk takes writes again: delete what was acknowledged
            with contextlib.suppress(OutboxWriteError):
                await self.ack()
        self._wake()

    # -- consumer side -----------------------------------------------------------------------

    async def set_live_boundary(
        self, live_since: float | None, *, consumer: str | None = None
    ) -> int:
        """Rows stored before `live_since` (None: all rows stored so far) become backlog."""
        return await self._run(self._store.set_boundary, live_since, consumer)

    async def begin(
        self,
        max_records: int,
        max_bytes: int = UNLIMITED,
        *,
        backlog: bool = True,
        consumer: str | None = None,
    ) -> Batch | None:
        """Lease the next batch (see the module docstring for the order)."""
        # clear before the query: a put committed after it sets the event again
        self._wakes[consumer or self.consumers[0]].clear()
        return await self._run(
            self._store.begin,
            max(1, max_records),
            max_bytes,
            backlog,
            consumer,
            inline=not self._store.backlogged(),
        )

    async def ack(self, *batches: Batch) -> None:
        """Delete the batches' rows (one transaction) and release their leases.

        When the disk refuses the delete (OutboxWriteError: full, read-only), the rows stay
        leased, so this process does not send them again, and their delete is retried with
        every later ack and successful put; only a restart before that sends them again.
        """
        todo = [*self._undeleted, *batches]
        try:
            await self._run(self._store.delete, todo, inline=not self._store.backlogged())
        except OutboxWriteError as exc:
            if not self._undeleted:
                log.warning(
                    "acknowledged rows stay in %s until it can be written: %s", self.path, exc
                )
            # keep only what the retry needs (ids, counts), not the bodies
            self._undeleted = [
                replace(b, rows=tuple(replace(r, body=b"") for r in b.rows)) for b in todo
            ]
            return
        except BaseException:
            self._undeleted = []
            for b in todo:
                self._store.release(b, rewind=False)
            raise
        if self._undeleted:
            log.info("acknowledged rows deleted from %s", self.path)
        self._undeleted = []
        for b in todo:
            self._store.release(b, rewind=False)

    def keep(self, batch: Batch) -> None:
        """Put the batch back: its rows are handed out again by a later begin()."""
        self._store.release(batch, rewind=True)
        self._wakes[batch.consumer or self.consumers[0]].set()

    async def wait_for_data(
        self,
        timeout: float,  # noqa: ASYNC109 (the agreed API)
        *,
        consumer: str | None = None,
    ) -> bool:
        """Wait until a put (or keep) may have made rows available; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._wakes[consumer or self.consumers[0]].wait()
        except TimeoutError:
            return False
        return True

    async def stats(self) -> OutboxStats:
        return await self._run(self._store.stats)

    # -- worker-thread side ------------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: object, inline: bool = False) -> _T:
        """`fn` through Store.call: inline if allowed and the worker is idle, else queued."""
        if (
            inline
            and self._executor is not None
            and (self._last is None or self._last.done())
            and self._store.unavailable is None
        ):
            return self._store.call(fn, *args)
        return await self._submit(self._store.call, fn, *args)

    async def _submit(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            raise OutboxError(f"outbox {self.path} is not open")
        job = self._executor.submit(fn, *args)
        self._last = cast("Future[object]", job)
        # done() turns true only after fn returned: the worker no longer uses the connection
        return await asyncio.wrap_future(job)


class OutboxConsumer:
    """One consumer's (uplink's) side of an Outbox: the consumer methods, for that consumer."""

    def __init__(self, outbox: Outbox, name: str) -> None:
        self.outbox, self.name = outbox, name

    async def set_live_boundary(self, live_since: float | None) -> int:
        return await self.outbox.set_live_boundary(live_since, consumer=self.name)

    async def begin(
        self, max_records: int, max_bytes: int = UNLIMITED, *, backlog: bool = True
    ) -> Batch | None:
        return await self.outbox.begin(max_records, max_bytes, backlog=backlog, consumer=self.name)

    async def ack(self, *batches: Batch) -> None:
        await self.outbox.ack(*batches)

    def keep(self, batch: Batch) -> None:
        self.outbox.keep(batch)

    async def wait_for_data(self, timeout: float) -> bool:  # noqa: ASYNC109
        return await self.outbox.wait_for_data(timeout, consumer=self.name)

    async def pending(self) -> dict[str, int]:
        """Records per stream this consumer has not acknowledged yet."""
        stats = await self.outbox.stats()
        return stats.pending_by_consumer[self.name]
