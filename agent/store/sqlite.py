"""The outbox's SQLite side: schema, puts with the byte cap, leases, recovery. Worker thread only.

agent.store.outbox wraps this in an async facade; every method here runs on its single worker
thread (a sqlite3 connection belongs to the thread that made it). Read agent.store.outbox for the
contract; this module holds the types and the SQL.

Errors (all OutboxError):

    OutboxError             cannot open, read or write the database (names the file)
    └── OutboxWriteError    the write failed for a reason outside the agent: disk full,
                            read-only filesystem, I/O error; `reason` says which. Retrying
                            later may succeed; nothing was stored.

A corrupt database (SQLITE_CORRUPT / SQLITE_NOTADB) is not raised: it is moved aside to
`<name>.corrupt-<epoch>`, a new one is started and an `outbox_replaced` event is stored.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar, get_args

import orjson

log = logging.getLogger("agent.store.outbox")

Stream = Literal["alarm", "event", "telemetry"]
STREAMS: Final[tuple[Stream, ...]] = get_args(Stream)  # also the drain priority, highest first
SCHEMA_VERSION: Final = 1
LOW_WATER: Final = 0.9  # after a drop, the database is brought under this share of max_bytes
JOURNAL_SIZE_LIMIT: Final = 8 * 1024 * 1024
SEQ_BYTES: Final = 12  # what one record's seq costs in a message, for the byte budget
_MAX_ID: Final = 1 << 62
REOPEN_EVERY: Final = 1.0  # seconds between attempts to open a database that cannot be written

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
CREATE TABLE IF NOT EXISTS acked(
    uplink TEXT NOT NULL,
    id INTEGER NOT NULL,
    PRIMARY KEY (uplink, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS acked_id ON acked(id);
"""
# `acked` holds, with several consumers (uplinks), the rows that some consumers have
# acknowledged and others not yet; a row is deleted once every consumer has acknowledged it.
# With one consumer it stays empty and acks delete rows directly, as before.
PRIMARY: Final = "mqtt"  # the first consumer's name (the MQTT uplink)

# SQLite primary result codes (extended codes carry them in the low byte)
_CORRUPT = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_WRITE_FAIL = {
    13: "the disk is full",  # SQLITE_FULL
    8: "the filesystem is read-only or the file is not writable",  # SQLITE_READONLY
    10: "an I/O error",  # SQLITE_IOERR
    14: "the file cannot be opened",  # SQLITE_CANTOPEN
    23: "permission denied",  # SQLITE_AUTH
}


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

    `body` holds the records without seq numbers (agent.uplink.payload defines the encoding);
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
    """Leased rows of one stream, oldest first; hand back with ack() or keep().

    `backfill`: the rows were stored before the live boundary (queued during an outage or
    before a restart). `gen` is the database generation (a replaced database starts a new
    one; an ack from an older generation deletes nothing).
    """

    stream: Stream
    rows: tuple[Row, ...]
    backfill: bool = False
    gen: int = 0
    consumer: str = PRIMARY  # the uplink that leased it (see Outbox consumers)

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
    # records per stream not yet acknowledged by each consumer (only with several consumers)
    pending_by_consumer: dict[str, dict[str, int]] = field(default_factory=dict)


def event_body(kind: str, data: dict[str, object], ts: float) -> bytes:
    """The body of a one-record "event" entry (agent.uplink.payload.encode_event uses this too)."""
    return orjson.dumps([{"kind": kind, "ts": round(ts * 1000), "data": data}])


def _code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


@dataclass(slots=True)
class _Leases:
    """Row ids handed out and not yet acked or kept; cursors skip the leased prefix."""

    ids: set[int] = field(default_factory=set)
    cursor: dict[tuple[str, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass(slots=True)
class _View:
    """One consumer's leases and live boundary (rows with id <= boundary are its backlog)."""

    leases: _Leases = field(default_factory=_Leases)
    boundary: int = 0


class Store:
    """The SQLite database behind an Outbox. Not thread-safe: one worker thread calls it."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        sync_interval: float = 10.0,
        consumers: tuple[str, ...] = (PRIMARY,),
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.sync_interval = sync_interval
        self.gen = 0
        self.replaced = 0
        if not consumers or len(set(consumers)) != len(consumers):
            raise ValueError(f"consumers must be distinct names, got {consumers!r}")
        self.consumers = consumers
        self.views = {c: _View() for c in consumers}
        self.multi = len(consumers) > 1
        # records acknowledged by a consumer whose rows others still need: [rows, records]
        self._acked: dict[str, dict[str, list[int]]] = {}
        self._recount = False
        self._con: sqlite3.Connection | None = None
        self._pending: dict[str, list[int]] = {s: [0, 0] for s in STREAMS}
        self._last_full_sync = 0.0
        # set while the database cannot be opened for writing (read-only or full disk at
        # start); every call retries the open, at most every REOPEN_EVERY seconds
        self.unavailable: OutboxWriteError | None = None
        self._reopen_at = 0.0

    # -- guarded entry point -----------------------------------------------------------------

    def call(self, fn: Callable[..., _T], *args: object) -> _T:
        """Run one operation; translate errors; replace a corrupt database and retry once.

        While the database cannot be opened (see `open`), writes raise that OutboxWriteError
        and reads answer as for an empty outbox: nothing stored can be read either.
        """
        if self.unavailable is not None and not self._reopen():
            return self._unavailable(fn)
        try:
            return fn(*args)
        except sqlite3.Error as exc:
            if _code(exc) in _CORRUPT:
                self._replace(exc)
                return fn(*args)
            raise self._translate(exc) from exc

    def _translate(self, exc: sqlite3.Error) -> OutboxError:
        reason = _WRITE_FAIL.get(_code(exc))
        if reason is not None:
            return OutboxWriteError(
                f"cannot write the outbox database {self.path}: {reason} ({exc}); records are "
                "kept in memory (alarms) and retried. Free space on that filesystem or make it "
                "writable",
                reason,
            )
        return OutboxError(f"outbox database {self.path}: {exc}")

    # -- lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open (or create) the database. One that cannot be written (read-only filesystem,
        full disk) does not fail the open: the agent must keep polling and hold its alarms
        (agent.store.guard), so `unavailable` is set and every later call retries the open."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()
            self.unavailable = None
        except OSError as exc:
            self._open_failed(OutboxWriteError(f"cannot open {self.path}: {exc}", "os error"))
        except sqlite3.Error as exc:
            if _code(exc) not in _CORRUPT:
                err = self._translate(exc)
                if not isinstance(err, OutboxWriteError):
                    raise err from exc
                self._open_failed(err)
                return
            self._replace(exc)

    def _open_failed(self, err: OutboxWriteError) -> None:
        if self.unavailable is None:
            log.error("%s; opening it again every %g s", err, REOPEN_EVERY)
        self.unavailable = err
        self._reopen_at = time.monotonic() + REOPEN_EVERY

    def _reopen(self) -> bool:
        """Try the deferred open again (rate-limited); True once the database is open."""
        if time.monotonic() < self._reopen_at:
            return False
        self.open()
        if self.unavailable is not None:
            return False
        # every row in it was stored before this process could read it: all of it is backlog
        for consumer in self.consumers:
            self.set_boundary(None, consumer)
        log.warning("outbox database %s is open and writable now", self.path)
        return True

    def _unavailable(self, fn: Callable[..., _T]) -> _T:
        err = self.unavailable
        assert err is not None
        name = getattr(fn, "__name__", "")
        if name in ("put", "delete"):
            raise err
        empty: dict[str, object] = {
            "begin": None,
            "set_boundary": 0,
            "has_pending": False,
            "stats": OutboxStats(
                pending_rows=dict.fromkeys(STREAMS, 0),
                pending_records=dict.fromkeys(STREAMS, 0),
                next_seq={},
                db_bytes=0,
                dropped_records=0,
            ),
        }
        if name not in empty:
            raise err
        return empty[name]  # type: ignore[return-value]

    def _open(self, first_seq: dict[str, int] | None = None) -> None:
        con = sqlite3.connect(self.path, isolation_level=None, check_same_thread=True)
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
            seqs = first_seq or {}
            con.executemany(
                "INSERT OR IGNORE INTO streams VALUES (?, ?)",
                [(s, seqs.get(s, 1)) for s in STREAMS],
            )
            self._settle_acks(con)
            con.execute("COMMIT")
            pending: dict[str, list[int]] = {s: [0, 0] for s in STREAMS}
            for stream, rows, records in con.execute(
                "SELECT stream, count(*), coalesce(sum(n), 0) FROM outbox GROUP BY stream"
            ):
                pending[stream] = [int(rows), int(records)]
        except BaseException:
            con.close()
            raise
        self._con = con
        self._pending = pending
        self._count_acked()

    def _settle_acks(self, con: sqlite3.Connection) -> None:
        """After a change of the configured consumers: forget acks of consumers that are gone
        and delete the rows that every configured consumer has acknowledged."""
        marks = ",".join("?" * len(self.consumers))
        con.execute(f"DELETE FROM acked WHERE uplink NOT IN ({marks})", self.consumers)
        con.execute(
            "DELETE FROM outbox WHERE id IN "
            "(SELECT id FROM acked GROUP BY id HAVING count(*) >= ?)",
            (len(self.consumers),),
        )
        con.execute("DELETE FROM acked WHERE id NOT IN (SELECT id FROM outbox)")

    def _count_acked(self) -> None:
        self._acked = {c: {s: [0, 0] for s in STREAMS} for c in self.consumers}
        if not self.multi:
            return
        for uplink, stream, rows, records in self.db.execute(
            "SELECT a.uplink, o.stream, count(*), coalesce(sum(o.n), 0) "
            "FROM acked a JOIN outbox o ON o.id = a.id GROUP BY a.uplink, o.stream"
        ):
            self._acked[uplink][stream] = [int(rows), int(records)]

    @property
    def leases(self) -> _Leases:
        """The first consumer's leases."""
        return self.views[self.consumers[0]].leases

    @property
    def boundary(self) -> int:
        return self.views[self.consumers[0]].boundary

    def view(self, consumer: str | None) -> _View:
        try:
            return self.views[consumer or self.consumers[0]]
        except KeyError:
            raise OutboxError(
                f"outbox {self.path} has no consumer {consumer!r} (configured: "
                f"{', '.join(self.consumers)})"
            ) from None

    def clear_leases(self) -> None:
        for v in self.views.values():
            with v.leases.lock:
                v.leases.ids.clear()
                v.leases.cursor.clear()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _replace(self, exc: sqlite3.Error) -> None:
        """Move a corrupt database aside, start a new one whose seqs continue, report it."""
        self.close()
        salvaged = self._salvage_seq()
        now = time.time()
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(now)}")
        for suffix in ("", "-wal", "-shm"):
            src = self.path.with_name(self.path.name + suffix)
            with contextlib.suppress(FileNotFoundError):
                src.rename(aside.with_name(aside.name + suffix))
        # seqs must never repeat (platforms deduplicate on them): continue from the old
        # database when its streams table is readable, else jump to the epoch in ms
        first = salvaged or dict.fromkeys(STREAMS, int(now * 1000))
        self._open(first)
        self.gen += 1
        self.replaced += 1
        self.clear_leases()
        for v in self.views.values():
            v.boundary = 0
        log.error(
            "outbox database %s was corrupt (%s): moved aside to %s and started a new one; "
            "its undelivered records are lost",
            self.path,
            exc,
            aside,
        )
        data: dict[str, object] = {
            "error": str(exc),
            "moved_to": str(aside),
            "next_seq": first,
            "seq_salvaged": salvaged is not None,
        }
        self.put([Entry("event", 1, event_body("outbox_replaced", data, now), now)])

    def _salvage_seq(self) -> dict[str, int] | None:
        try:
            con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                got = {
                    str(s): int(q) for s, q in con.execute("SELECT stream, next_seq FROM streams")
                }
            finally:
                con.close()
        except sqlite3.Error:
            return None
        return got if set(got) >= set(STREAMS) else None

    @property
    def db(self) -> sqlite3.Connection:
        if self._con is None:
            raise OutboxError(f"outbox {self.path} is not open")
        return self._con

    # -- producer side -----------------------------------------------------------------------

    def has_pending(self) -> bool:
        return any(rows for rows, _ in self._pending.values())

    def put(self, entries: list[Entry]) -> None:
        """One transaction; alarms/events (and telemetry every sync_interval) fsync'ed."""
        db = self.db
        now = time.monotonic()
        full = any(e.stream != "telemetry" for e in entries) or (
            now - self._last_full_sync >= self.sync_interval
        )
        if full:
            db.execute("PRAGMA synchronous=FULL")
        try:
            db.execute("BEGIN IMMEDIATE")
            added: list[tuple[str, int]] = []
            try:
                for e in entries:
                    self._insert(e)
                    added.append((e.stream, e.n))
                if self._used_bytes() > self.max_bytes:
                    added.extend(self._enforce_cap())
                db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
                raise
        finally:
            if full:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA synchronous=NORMAL")
        if full:
            self._last_full_sync = now
        for stream, n in added:
            p = self._pending[stream]
            p[0] += 1 if n > 0 else -1
            p[1] += n

    def _insert(self, e: Entry) -> None:
        db = self.db
        (seq,) = db.execute("SELECT next_seq FROM streams WHERE stream=?", (e.stream,)).fetchone()
        db.execute("UPDATE streams SET next_seq=? WHERE stream=?", (seq + e.n, e.stream))
        db.execute(
            "INSERT INTO outbox(stream, seq_first, n, ts, body) VALUES (?, ?, ?, ?, ?)",
            (e.stream, seq, e.n, e.ts, e.body),
        )

    def _used_bytes(self) -> int:
        db = self.db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _enforce_cap(self) -> list[tuple[str, int]]:
        """Delete the oldest un-leased telemetry rows until under the low-water mark.

        Returns pending-count changes: (stream, -n) per dropped row, (+n) for the event.
        """
        db = self.db
        target = int(self.max_bytes * LOW_WATER)
        leased: set[int] = set()
        for v in self.views.values():
            with v.leases.lock:
                leased |= v.leases.ids
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
            return []
        if self.multi:  # rows some consumers had acknowledged may be among them
            db.executemany("DELETE FROM acked WHERE id=?", [(d[0],) for d in dropped])
            self._recount = True
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
            "reason": "storage_cap",
        }
        self._insert(Entry("event", 1, event_body("data_dropped", data, now), now))
        log.warning(
            "outbox over its cap of %d bytes: dropped %d oldest telemetry records (seq %s..%s)",
            self.max_bytes,
            records,
            data["seq_first"],
            data["seq_last"],
        )
        return [("telemetry", -d[2]) for d in dropped] + [("event", 1)]

    # -- consumer side -----------------------------------------------------------------------

    def set_boundary(self, live_since: float | None, consumer: str | None = None) -> int:
        """Rows stored before `live_since` (wall clock) are backlog from now on."""
        view = self.view(consumer)
        db = self.db
        if live_since is None:
            (b,) = db.execute("SELECT coalesce(max(id), 0) FROM outbox").fetchone()
        else:
            (b,) = db.execute(
                "SELECT coalesce(max(id), 0) FROM outbox WHERE ts < ?", (live_since,)
            ).fetchone()
        view.boundary = int(b)
        with view.leases.lock:
            view.leases.cursor.clear()
        return view.boundary

    def begin(
        self, max_records: int, max_bytes: int, backlog: bool, consumer: str | None = None
    ) -> Batch | None:
        """Alarms, then events, then live telemetry, then (if `backlog`) older telemetry."""
        view = self.view(consumer)
        name = consumer or self.consumers[0]
        b = view.boundary
        for stream in ("alarm", "event"):
            rows = self._take(stream, 0, _MAX_ID, max_records, max_bytes, view=view, consumer=name)
            if rows:
                return Batch(stream, rows, backfill=rows[0].id <= b, gen=self.gen, consumer=name)
        rows = self._take("telemetry", b, _MAX_ID, max_records, max_bytes, view=view, consumer=name)
        if rows:
            return Batch("telemetry", rows, backfill=False, gen=self.gen, consumer=name)
        if backlog and b:
            rows = self._take("telemetry", 0, b, max_records, max_bytes, view=view, consumer=name)
            if rows:
                return Batch("telemetry", rows, backfill=True, gen=self.gen, consumer=name)
        return None

    def _take(
        self,
        stream: str,
        lo: int,
        hi: int,
        max_records: int,
        max_bytes: int,
        *,
        view: _View,
        consumer: str,
    ) -> tuple[Row, ...]:
        """The oldest un-leased rows with lo < id <= hi, within the record and byte budget
        (with several consumers: rows this consumer has not acknowledged yet)."""
        leases = view.leases
        with leases.lock:
            start = max(lo, leases.cursor.get((stream, lo), 0))
            leased = leases.ids
            rows: list[Row] = []
            total = size = 0
            if self.multi:
                cur = self.db.execute(
                    "SELECT id, seq_first, n, body, ts FROM outbox "
                    "WHERE stream=? AND id > ? AND id <= ? AND NOT EXISTS "
                    "(SELECT 1 FROM acked a WHERE a.uplink=? AND a.id=outbox.id) "
                    "ORDER BY id LIMIT ?",
                    (stream, start, hi, consumer, max_records + len(leased)),
                )
            else:
                cur = self.db.execute(
                    "SELECT id, seq_first, n, body, ts FROM outbox "
                    "WHERE stream=? AND id > ? AND id <= ? ORDER BY id LIMIT ?",
                    (stream, start, hi, max_records + len(leased)),
                )
            for row_id, seq_first, n, body, ts in cur:
                if row_id in leased:
                    continue
                cost = len(body) + SEQ_BYTES * n
                if rows and (total + n > max_records or size + cost > max_bytes):
                    break
                rows.append(Row(row_id, seq_first, n, body, ts))
                total += n
                size += cost
            cur.close()
            if rows:
                leased.update(r.id for r in rows)
                leases.cursor[(stream, lo)] = rows[-1].id
            return tuple(rows)

    def release(self, batch: Batch, *, rewind: bool) -> None:
        leases = self.view(batch.consumer).leases
        with leases.lock:
            leases.ids.difference_update(r.id for r in batch.rows)
            if rewind:  # kept rows go out again: scan from the start of their stream
                for key in [k for k in leases.cursor if k[0] == batch.stream]:
                    del leases.cursor[key]

    def delete(self, batches: list[Batch]) -> None:
        """Delete the rows of acknowledged batches in one transaction."""
        live = [b for b in batches if b.gen == self.gen]
        if not live:
            return
        if self.multi:
            self._ack_shared(live)
            return
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for b in live:
                db.executemany("DELETE FROM outbox WHERE id=?", [(r.id,) for r in b.rows])
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        for b in live:
            p = self._pending[b.stream]
            p[0] -= len(b.rows)
            p[1] -= b.records

    def _ack_shared(self, batches: list[Batch]) -> None:
        """Several consumers: a row goes when the last of them acknowledges it."""
        db = self.db
        others = len(self.consumers) - 1
        gone: list[tuple[str, str, int]] = []  # (consumer, stream, n) of rows deleted
        marked: list[tuple[str, str, int]] = []  # acknowledged, still needed by others
        db.execute("BEGIN IMMEDIATE")
        try:
            for b in batches:
                for r in b.rows:
                    (k,) = db.execute(
                        "SELECT count(*) FROM acked WHERE id=? AND uplink<>?", (r.id, b.consumer)
                    ).fetchone()
                    if k >= others:
                        db.execute("DELETE FROM outbox WHERE id=?", (r.id,))
                        db.execute("DELETE FROM acked WHERE id=?", (r.id,))
                        gone.append((b.consumer, b.stream, r.n))
                    elif db.execute(
                        "INSERT OR IGNORE INTO acked VALUES (?, ?)", (b.consumer, r.id)
                    ).rowcount:
                        marked.append((b.consumer, b.stream, r.n))
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        for consumer, stream, n in gone:
            p = self._pending[stream]
            p[0] -= 1
            p[1] -= n
            for other in self.consumers:
                if other != consumer:
                    a = self._acked[other][stream]
                    a[0] -= 1
                    a[1] -= n
        for consumer, stream, n in marked:
            a = self._acked[consumer][stream]
            a[0] += 1
            a[1] += n

    def stats(self) -> OutboxStats:
        db = self.db
        if self._recount:
            self._recount = False
            self._count_acked()
        next_seq = {s: q for s, q in db.execute("SELECT stream, next_seq FROM streams")}
        (dropped,) = db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
        oldest: dict[str, float] = {}
        for stream in STREAMS:
            got = db.execute(
                "SELECT ts FROM outbox WHERE stream=? ORDER BY id LIMIT 1", (stream,)
            ).fetchone()
            if got is not None:
                oldest[stream] = float(got[0])
        size = 0
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(FileNotFoundError):
                size += p.stat().st_size
        return OutboxStats(
            pending_rows={s: v[0] for s, v in self._pending.items()},
            pending_records={s: v[1] for s, v in self._pending.items()},
            next_seq=next_seq,
            db_bytes=size,
            dropped_records=int(dropped),
            oldest_ts=oldest,
            replaced=self.replaced,
            pending_by_consumer={
                c: {s: self._pending[s][1] - acked[s][1] for s in STREAMS}
                for c, acked in self._acked.items()
            }
            if self.multi
            else {},
        )
