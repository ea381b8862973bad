"""Store-and-forward outbox: SQLite (WAL) rows per stream with gap-free sequence numbers.

Every SQLite call runs on one dedicated worker thread (a sqlite3 connection belongs to the
thread that made it); the async methods hand work to it and return after COMMIT.

Contract:

- `put(entries)` stores chunks of records in one transaction and gives each chunk a
  contiguous range of per-stream sequence numbers (`streams.next_seq` is updated in the
  same transaction, so seq is monotonic, gap-free and survives restarts and kill -9).
- `begin(max_records)` leases the oldest pending rows of the highest-priority stream that has
  any (alarm > event > telemetry). A leased row is not handed out again until the batch is
  `keep`-ed (put back for retry) or `ack`-ed (deleted). Leases live in memory: one consumer
  per outbox.
- Byte cap: after a put, while the live pages of the database, (page_count - freelist_count)
  * page_size, exceed `max_bytes`, the oldest un-leased TELEMETRY rows are deleted (never
  alarm or event rows) until the database is under 90 % of the cap (the low-water mark keeps
  the drop events rare). The dropped records are counted persistently and reported, in the
  same transaction, as a `data_dropped` record on the "event" stream. Freed pages are reused,
  so the file stays near the cap; the -wal file is bounded by journal_size_limit.

Exceptions: OutboxError (the database cannot be opened, read or written; names the file).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, TypeVar, get_args

import orjson

Stream = Literal["alarm", "event", "telemetry"]
STREAMS: Final[tuple[Stream, ...]] = get_args(Stream)  # also the drain priority, highest first
SCHEMA_VERSION: Final = 1
LOW_WATER: Final = 0.9  # after a drop, the database is brought under this share of max_bytes
JOURNAL_SIZE_LIMIT: Final = 8 * 1024 * 1024

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS streams(stream TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox(
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    seq_first INTEGER NOT NULL,
    n INTEGER NOT NULL,
    ts REAL NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_stream_id ON outbox(stream, id);
"""


class OutboxError(RuntimeError):
    """The outbox database cannot be opened, read or written."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A chunk of `n` encoded records of one stream (e.g. one poll cycle's telemetry).

    `body` holds the records without seq numbers (agent.payload defines the encoding);
    `ts` is the wall-clock epoch seconds when the chunk was produced.
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
    """Leased rows of one stream, oldest first; hand back with ack() or keep()."""

    stream: Stream
    rows: tuple[Row, ...]

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


def event_body(kind: str, data: dict[str, object], ts: float) -> bytes:
    """The body of a one-record "event" entry (agent.payload.encode_event uses this too)."""
    return orjson.dumps([{"kind": kind, "ts": round(ts * 1000), "data": data}])


class Outbox:
    """SQLite store-and-forward queue; see the module docstring for the contract."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self._executor: ThreadPoolExecutor | None = None
        self._con: sqlite3.Connection | None = None
        self._leased: set[int] = set()
        self._lease_lock = threading.Lock()  # leases are read on the worker, changed on the loop
        self._data = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def open(self) -> None:
        if self._executor is not None:
            raise OutboxError(f"outbox {self.path} is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        try:
            await self._run(self._open)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise
        if await self._run(self._has_pending):
            self._data.set()

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self._run(self._close)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None
            with self._lease_lock:
                self._leased.clear()

    # -- producer side -----------------------------------------------------------------------

    async def put(self, entries: Sequence[Entry]) -> None:
        """Store the entries (empty ones are skipped); returns after COMMIT.

        If the caller is cancelled while waiting, the transaction still runs to its end on
        the worker thread (committed or not: the caller cannot tell).
        """
        todo = [e for e in entries if e.n > 0]
        if not todo:
            return
        await self._run(self._put, todo)
        self._data.set()

    # -- consumer side -----------------------------------------------------------------------

    async def begin(self, max_records: int) -> Batch | None:
        """Lease the oldest pending rows of the highest-priority stream that has any.

        At least one row; more while the record total stays <= max_records.
        """
        self._data.clear()  # before the query: a put committed after it sets the event again
        return await self._run(self._begin, max(1, max_records))

    async def ack(self, batch: Batch) -> None:
        """Delete the batch's rows (one transaction) and release the lease."""
        try:
            await self._run(self._delete, [r.id for r in batch.rows])
        finally:
            self._release(batch)

    def keep(self, batch: Batch) -> None:
        """Put the batch back: its rows are handed out again by a later begin()."""
        self._release(batch)
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
        return await self._run(self._stats)

    # -- worker-thread side ------------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        if self._executor is None:
            raise OutboxError(f"outbox {self.path} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox database {self.path}: {exc}") from exc

    @property
    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            raise OutboxError(f"outbox {self.path} is not open")
        return self._con

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
        except sqlite3.Error as exc:
            raise OutboxError(f"cannot open outbox database {self.path}: {exc}") from exc
        try:
            for pragma in (
                "journal_mode=WAL",
                "synchronous=NORMAL",
                "busy_timeout=5000",
                f"journal_size_limit={JOURNAL_SIZE_LIMIT}",
            ):
                con.execute(f"PRAGMA {pragma}")
            con.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            version = con.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
            if version is None:
                con.execute(
                    "INSERT INTO meta VALUES ('schema', ?), ('dropped', 0)", (SCHEMA_VERSION,)
                )
            elif version[0] != SCHEMA_VERSION:
                raise OutboxError(
                    f"outbox database {self.path} has schema version {version[0]}, "
                    f"this agent reads version {SCHEMA_VERSION}"
                )
            con.executemany("INSERT OR IGNORE INTO streams VALUES (?, 1)", [(s,) for s in STREAMS])
            con.execute("COMMIT")
        except (sqlite3.Error, OutboxError) as exc:
            con.close()
            if isinstance(exc, OutboxError):
                raise
            raise OutboxError(
                f"outbox database {self.path} is unreadable or corrupt ({exc}); stop the "
                "agent and move the file aside (its undelivered records are lost) to start anew"
            ) from exc
        self._con = con

    def _close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _has_pending(self) -> bool:
        return self._db.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is not None

    def _put(self, entries: list[Entry]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for e in entries:
                self._insert(e)
            if self._used_bytes() > self.max_bytes:
                self._enforce_cap()
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _insert(self, e: Entry) -> None:
        db = self._db
        (seq,) = db.execute("SELECT next_seq FROM streams WHERE stream=?", (e.stream,)).fetchone()
        db.execute("UPDATE streams SET next_seq=? WHERE stream=?", (seq + e.n, e.stream))
        db.execute(
            "INSERT INTO outbox(stream, seq_first, n, ts, body) VALUES (?, ?, ?, ?, ?)",
            (e.stream, seq, e.n, e.ts, e.body),
        )

    def _used_bytes(self) -> int:
        db = self._db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _enforce_cap(self) -> None:
        """Delete the oldest un-leased telemetry rows until under the low-water mark."""
        db = self._db
        target = int(self.max_bytes * LOW_WATER)
        with self._lease_lock:
            leased = set(self._leased)
        dropped: list[tuple[int, int, int, float]] = []  # id, seq_first, n, ts
        last_id = 0
        while self._used_bytes() > target:
            excess = self._used_bytes() - target
            chunk: list[tuple[int, int, int, float]] = []
            freed = 0
            cur = db.execute(
                "SELECT id, seq_first, n, ts, length(body) FROM outbox "
                "WHERE stream='telemetry' AND id > ? ORDER BY id",
                (last_id,),
            )
            for row_id, seq_first, n, ts, size in cur:
                last_id = row_id
                if row_id in leased:
                    continue
                chunk.append((row_id, seq_first, n, ts))
                freed += size + 32
                if freed >= excess:
                    break
            cur.close()
            if not chunk:
                break  # only alarms/events (or leased rows) left: they are never dropped
            db.executemany("DELETE FROM outbox WHERE id=?", [(c[0],) for c in chunk])
            dropped.extend(chunk)
        if not dropped:
            return
        records = sum(d[2] for d in dropped)
        db.execute("UPDATE meta SET value = value + ? WHERE key='dropped'", (records,))
        (total,) = db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
        now = time.time()
        data: dict[str, object] = {
            "stream": "telemetry",
            "records": records,
            "rows": len(dropped),
            "seq_first": min(d[1] for d in dropped),
            "seq_last": max(d[1] + d[2] - 1 for d in dropped),
            "from_ts": round(min(d[3] for d in dropped) * 1000),
            "to_ts": round(max(d[3] for d in dropped) * 1000),
            "dropped_total": total,
            "max_bytes": self.max_bytes,
        }
        self._insert(Entry("event", 1, event_body("data_dropped", data, now), now))

    def _begin(self, max_records: int) -> Batch | None:
        with self._lease_lock:
            leased = set(self._leased)
        for stream in STREAMS:
            rows: list[Row] = []
            total = 0
            cur = self._db.execute(
                "SELECT id, seq_first, n, body, ts FROM outbox WHERE stream=? ORDER BY id",
                (stream,),
            )
            for row_id, seq_first, n, body, ts in cur:
                if row_id in leased:
                    continue
                if rows and total + n > max_records:
                    break
                rows.append(Row(row_id, seq_first, n, bytes(body), ts))
                total += n
            cur.close()
            if rows:
                with self._lease_lock:
                    self._leased.update(r.id for r in rows)
                return Batch(stream, tuple(rows))
        return None

    def _delete(self, ids: list[int]) -> None:
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("DELETE FROM outbox WHERE id=?", [(i,) for i in ids])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _release(self, batch: Batch) -> None:
        with self._lease_lock:
            self._leased.difference_update(r.id for r in batch.rows)

    def _stats(self) -> OutboxStats:
        db = self._db
        rows: dict[str, int] = dict.fromkeys(STREAMS, 0)
        records: dict[str, int] = dict.fromkeys(STREAMS, 0)
        for stream, count, n in db.execute(
            "SELECT stream, count(*), coalesce(sum(n), 0) FROM outbox GROUP BY stream"
        ):
            rows[stream], records[stream] = count, n
        next_seq = {s: q for s, q in db.execute("SELECT stream, next_seq FROM streams")}
        (dropped,) = db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
        size = 0
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(FileNotFoundError):
                size += p.stat().st_size
        return OutboxStats(
            pending_rows=dict(rows),
            pending_records=dict(records),
            next_seq=next_seq,
            db_bytes=size,
            dropped_records=int(dropped),
        )
