"""The outbox's SQLite worker: puts with the byte cap, leases per consumer, acks, recovery.

agent.store.outbox wraps this in an async facade; every method here runs on its single worker
thread. Read agent.store.outbox for the contract. The pieces: `records` (types, errors),
`schema` (the file: open, translate errors, move a corrupt file aside), `leases` (each
consumer's cursor and the batch query), `progress` (acks: delete, or mark while other
consumers still need the rows), `cap` (the byte cap). No consumer is special: each has its
own View; with a single consumer, acks delete rows directly (a fast path).

A corrupt database (SQLITE_CORRUPT / SQLITE_NOTADB) is not raised: it is moved aside to
`<name>.corrupt-<epoch>`, a new one is started and an `outbox_replaced` event is stored.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final, TypeVar

from agent.store import leases, progress, reclaim, schema
from agent.store.cap import enforce_cap, used_bytes
from agent.store.leases import View
from agent.store.records import (
    DEFAULT_CONSUMER,
    STREAMS,
    Batch,
    Entry,
    OutboxError,
    OutboxStats,
    OutboxWriteError,
    event_entry,
)

log = logging.getLogger("agent.store.outbox")

# seconds between queries of each consumer's oldest unacknowledged row (several consumers)
OLDEST_EVERY: Final = 5.0
REOPEN_EVERY: Final = 1.0  # seconds between attempts to open a database that cannot be written
# rows pending above which begin and ack leave the loop (a backlog drain; agent.store.outbox)
INLINE_MAX_PENDING: Final = 64

_T = TypeVar("_T")


class Store:
    """The SQLite database behind an Outbox. Not thread-safe: one worker thread calls it."""

    def __init__(
        self,
        path: Path,
        max_bytes: int,
        sync_interval: float = 10.0,
        consumers: tuple[str, ...] = (DEFAULT_CONSUMER,),
        oldest_every: float = OLDEST_EVERY,
    ) -> None:
        if not consumers or len(set(consumers)) != len(consumers) or "" in consumers:
            raise ValueError(f"consumers must be distinct non-empty names, got {consumers!r}")
        self.path, self.max_bytes, self.sync_interval = path, max_bytes, sync_interval
        self.gen = 0
        self.replaced = 0
        self.corrupt_bytes = 0  # kept corrupt copies: they count against max_bytes
        self.consumers = consumers
        self.views = {c: View(c) for c in consumers}
        self.shared = len(consumers) > 1
        # records acknowledged by a consumer whose rows others still need: [rows, records]
        self._acked: dict[str, progress.Counts] = {}
        self._recount = False
        # per consumer oldest unacknowledged row (progress.oldest_unacked), and when it was
        # last queried (monotonic): stats() may be called often, this walks an index
        self.oldest_every = oldest_every
        self._oldest_by: dict[str, dict[str, float]] = {}
        self._oldest_at = -math.inf
        self._con: sqlite3.Connection | None = None
        self._pending: dict[str, list[int]] = {s: [0, 0] for s in STREAMS}
        self._last_full_sync = 0.0
        # set while the database cannot be opened for writing (read-only or full disk at
        # start); every call retries the open, at most every REOPEN_EVERY seconds
        self.unavailable: OutboxWriteError | None = None
        self._reopen_at = 0.0
        self.reclaimer = reclaim.Reclaimer()  # gives free pages back after a drain

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
            if schema.code(exc) in schema.CORRUPT:
                self._replace(exc)
                return fn(*args)
            raise schema.translate(self.path, exc) from exc

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
            if schema.code(exc) not in schema.CORRUPT:
                err = schema.translate(self.path, exc)
                if not isinstance(err, OutboxWriteError):
                    raise err from exc
                self._open_failed(err)
                return
            self._replace(exc)

    def _open(self, first_seq: dict[str, int] | None = None) -> None:
        self._prune_corrupt()
        self._con, self._pending = schema.connect(self.path, self.consumers, first_seq)
        self._acked = progress.count_acked(self._con, self.consumers)
        mode = self._con.execute("PRAGMA auto_vacuum").fetchone()[0]
        self.reclaimer.enabled = mode == reclaim.INCREMENTAL

    def _prune_corrupt(self) -> None:
        try:
            self.corrupt_bytes, gone = schema.prune_corrupt(self.path, self.max_bytes)
        except OSError as exc:  # a directory we cannot list: the open reports the disk
            log.warning("cannot prune corrupt outbox copies beside %s: %s", self.path, exc)
            return
        if gone:
            log.warning(
                "deleted %d corrupt outbox cop%s (%s): at most %d are kept, within %d %% of "
                "the storage cap",
                len(gone),
                "y" if len(gone) == 1 else "ies",
                ", ".join(p.name for p in gone[:5]),
                schema.CORRUPT_KEEP,
                int(schema.CORRUPT_SHARE * 100),
            )

    @property
    def cap(self) -> int:
        """The database's share of max_bytes: what the kept corrupt copies leave."""
        return max(1, self.max_bytes - self.corrupt_bytes)

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

    def view(self, consumer: str | None) -> View:
        """The consumer's View; None or "" is the first configured consumer."""
        try:
            return self.views[consumer or self.consumers[0]]
        except KeyError:
            raise OutboxError(
                f"outbox {self.path} has no consumer {consumer!r} (configured: "
                f"{', '.join(self.consumers)})"
            ) from None

    def clear_leases(self) -> None:
        for v in self.views.values():
            v.leases.clear()

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _replace(self, exc: sqlite3.Error) -> None:
        """Move a corrupt database aside, start a new one whose seqs continue, report it."""
        self.close()
        salvaged = schema.salvage_seq(self.path)
        now = time.time()
        aside = schema.move_aside(self.path, now)
        # _open prunes the copies: the new one among them, within CORRUPT_KEEP / CORRUPT_SHARE
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
        self.put([event_entry("outbox_replaced", data, now)])

    @property
    def db(self) -> sqlite3.Connection:
        if self._con is None:
            raise OutboxError(f"outbox {self.path} is not open")
        return self._con

    # -- producer side -----------------------------------------------------------------------

    def has_pending(self) -> bool:
        return any(rows for rows, _ in self._pending.values())

    def needs_sync(self, entries: Sequence[Entry]) -> bool:
        """Would `put(entries)` fsync (and checkpoint)? Such calls stay on the outbox's worker
        thread; the others may run inline (agent.store.outbox)."""
        return (
            any(e.stream != "telemetry" for e in entries)
            or time.monotonic() - self._last_full_sync >= self.sync_interval
        )

    def backlogged(self) -> bool:
        """More rows pending than steady operation leaves: begin and ack go to the worker."""
        return sum(rows for rows, _ in self._pending.values()) > INLINE_MAX_PENDING

    def put(self, entries: list[Entry]) -> None:
        """One transaction; alarms/events (and telemetry every sync_interval) fsync'ed. The
        periodic telemetry sync also checkpoints the WAL (on the worker): that keeps SQLite's
        automatic checkpoint, which runs in whichever commit crosses 1000 pages, mostly off
        the event loop."""
        db = self.db
        now = time.monotonic()
        full = self.needs_sync(entries)
        if full:
            db.execute("PRAGMA synchronous=FULL")
        try:
            with progress.transaction(db):
                added: list[tuple[str, int, int]] = [(e.stream, 1, e.n) for e in entries]
                for e in entries:
                    self._insert(e)
                if used_bytes(db) > self.cap:
                    added += self._enforce_cap()
        finally:
            if full:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("PRAGMA synchronous=NORMAL")
        if full:
            self._last_full_sync = now
            if all(e.stream == "telemetry" for e in entries):  # an alarm's put stays short
                self.checkpoint()
        for stream, rows, n in added:
            p = self._pending[stream]
            p[0] += rows
            p[1] += n

    def _insert(self, e: Entry) -> None:
        db = self.db
        (seq,) = db.execute("SELECT next_seq FROM streams WHERE stream=?", (e.stream,)).fetchone()
        db.execute("UPDATE streams SET next_seq=? WHERE stream=?", (seq + e.n, e.stream))
        db.execute(
            "INSERT INTO outbox(stream, seq_first, n, ts, body) VALUES (?, ?, ?, ?, ?)",
            (e.stream, seq, e.n, e.ts, e.body),
        )

    def _enforce_cap(self) -> list[tuple[str, int, int]]:
        """Drop telemetry (agent.store.cap); the pending-count changes (stream, rows, n)."""
        leased: set[int] = set()
        for v in self.views.values():
            with v.leases.lock:
                leased |= v.leases.ids
        dropped = enforce_cap(self.db, self.cap, leased, shared=self.shared)
        if dropped is None:
            return []
        self._recount = self.shared
        self._insert(dropped.event)
        return [("telemetry", -1, -n) for n in dropped.records] + [("event", 1, 1)]

    # -- consumer side -----------------------------------------------------------------------

    def set_boundary(self, live_since: float | None, consumer: str | None = None) -> int:
        """Rows stored before `live_since` (wall clock) are the consumer's backlog from now on."""
        return leases.set_boundary(self.db, self.view(consumer), live_since)

    def begin(
        self, max_records: int, max_bytes: int, backlog: bool, consumer: str | None = None
    ) -> Batch | None:
        """Alarms, then events, then live telemetry, then (if `backlog`) older telemetry."""
        return leases.begin(
            self.db,
            self.view(consumer),
            (max_records, max_bytes),
            backlog=backlog,
            shared=self.shared,
            gen=self.gen,
            stored=[s for s, (rows, _) in self._pending.items() if rows],
        )

    def release(self, batch: Batch, *, rewind: bool) -> None:
        leases.release(self.view(batch.consumer), batch, rewind=rewind)

    def checkpoint(self) -> None:
        """Copy the WAL into the database (PASSIVE: never waits)."""
        with contextlib.suppress(sqlite3.Error):
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def delete(self, batches: Sequence[Batch]) -> None:
        """Record the acknowledgement of the batches (one transaction)."""
        live = [b for b in batches if b.gen == self.gen]
        if not live:
            return
        if not self.shared:  # the fast path: the only consumer acknowledged, delete
            progress.delete_all(self.db, live)
            for b in live:
                p = self._pending[b.stream]
                p[0] -= len(b.rows)
                p[1] -= b.records
            self.reclaimer.step(self.db)
            return
        gone, marked = progress.ack_shared(self.db, live, self.consumers)
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
        if gone:
            self.reclaimer.step(self.db)

    def stats(self) -> OutboxStats:
        db = self.db
        if self._recount:
            self._recount = False
            self._acked = progress.count_acked(db, self.consumers)
        next_seq = {s: q for s, q in db.execute("SELECT stream, next_seq FROM streams")}
        (dropped,) = db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
        oldest: dict[str, float] = {}
        for stream in STREAMS:
            if not self._pending[stream][0]:  # no row: nothing to look up
                continue
            got = db.execute(
                "SELECT ts FROM outbox WHERE stream=? ORDER BY id LIMIT 1", (stream,)
            ).fetchone()
            if got is not None:
                oldest[stream] = float(got[0])
        if not self.shared:  # the only consumer: its oldest unacknowledged row is the oldest
            self._oldest_by = {self.consumers[0]: dict(oldest)}
        elif time.monotonic() - self._oldest_at >= self.oldest_every:
            self._oldest_by = progress.oldest_unacked(db, self.consumers)
            self._oldest_at = time.monotonic()
        return OutboxStats(
            pending_rows={s: v[0] for s, v in self._pending.items()},
            pending_records={s: v[1] for s, v in self._pending.items()},
            next_seq=next_seq,
            db_bytes=schema.file_bytes(self.path),
            used_bytes=used_bytes(db),
            reclaimed_bytes=self.reclaimer.reclaimed_bytes,
            dropped_records=int(dropped),
            oldest_ts=oldest,
            replaced=self.replaced,
            pending_by_consumer={
                c: {s: self._pending[s][1] - acked[s][1] for s in STREAMS}
                for c, acked in self._acked.items()
            },
            oldest_by_consumer={c: dict(v) for c, v in self._oldest_by.items()},
        )
