"""The outbox database file: schema, opening, error translation, moving a corrupt file aside.

Worker thread only (a sqlite3 connection belongs to the thread that made it).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from agent.store import reclaim
from agent.store.progress import settle
from agent.store.records import STREAMS, OutboxError, OutboxWriteError

SCHEMA_VERSION: Final = 1
JOURNAL_SIZE_LIMIT: Final = 8 * 1024 * 1024

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
# `acked` holds, with several consumers, the rows that some consumers have acknowledged and
# others not yet (agent.store.progress). With one consumer it stays empty.

# SQLite primary result codes (extended codes carry them in the low byte)
CORRUPT: Final = frozenset({11, 26})  # SQLITE_CORRUPT, SQLITE_NOTADB
_WRITE_FAIL = {
    13: "the disk is full",  # SQLITE_FULL
    8: "the filesystem is read-only or the file is not writable",  # SQLITE_READONLY
    10: "an I/O error",  # SQLITE_IOERR
    14: "the file cannot be opened",  # SQLITE_CANTOPEN
    23: "permission denied",  # SQLITE_AUTH
}


def code(exc: sqlite3.Error) -> int:
    return int(getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF


def translate(path: Path, exc: sqlite3.Error) -> OutboxError:
    """The OutboxError for a sqlite3 error (OutboxWriteError when the disk is to blame)."""
    reason = _WRITE_FAIL.get(code(exc))
    if reason is not None:
        return OutboxWriteError(
            f"cannot write the outbox database {path}: {reason} ({exc}); records are "
            "kept in memory (alarms) and retried. Free space on that filesystem or make it "
            "writable",
            reason,
        )
    return OutboxError(f"outbox database {path}: {exc}")


def connect(
    path: Path, consumers: Sequence[str], first_seq: dict[str, int] | None = None
) -> tuple[sqlite3.Connection, dict[str, list[int]]]:
    """Open (create, migrate-check) the database; returns it and [rows, records] per stream."""
    # Used by one thread at a time: the outbox's worker, or the event loop while the worker is
    # idle (agent.store.outbox). Store.put checkpoints after each synchronous (FULL) put, on
    # the worker; SQLite's automatic checkpoint (1000 pages) stays as the backstop.
    con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        reclaim.enable(con, path)  # first: auto_vacuum must precede the first table
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
            con.execute("INSERT INTO meta VALUES ('schema', ?), ('dropped', 0)", (SCHEMA_VERSION,))
        elif version[0] != SCHEMA_VERSION:
            raise OutboxError(
                f"outbox database {path} has schema version {version[0]}, "
                f"this agent reads version {SCHEMA_VERSION}"
            )
        seqs = first_seq or {}
        con.executemany(
            "INSERT OR IGNORE INTO streams VALUES (?, ?)", [(s, seqs.get(s, 1)) for s in STREAMS]
        )
        settle(con, consumers)
        con.execute("COMMIT")
        pending: dict[str, list[int]] = {s: [0, 0] for s in STREAMS}
        for stream, rows, records in con.execute(
            "SELECT stream, count(*), coalesce(sum(n), 0) FROM outbox GROUP BY stream"
        ):
            pending[stream] = [int(rows), int(records)]
    except BaseException:
        con.close()
        raise
    return con, pending


def salvage_seq(path: Path) -> dict[str, int] | None:
    """The next seq per stream of a (corrupt) database, if its streams table is readable."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            got = {str(s): int(q) for s, q in con.execute("SELECT stream, next_seq FROM streams")}
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return got if set(got) >= set(STREAMS) else None


def move_aside(path: Path, now: float) -> Path:
    """Rename the database and its -wal/-shm to `<name>.corrupt-<epoch>`; returns the new name."""
    aside = path.with_name(f"{path.name}.corrupt-{int(now)}")
    for suffix in ("", "-wal", "-shm"):
        src = path.with_name(path.name + suffix)
        with contextlib.suppress(FileNotFoundError):
            src.rename(aside.with_name(aside.name + suffix))
    return aside


CORRUPT_KEEP: Final = 3  # corrupt copies kept for inspection, newest first
CORRUPT_SHARE: Final = 0.25  # of the storage cap the copies may take together


def _copy_bytes(base: Path) -> int:
    size = 0
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            size += base.with_name(base.name + suffix).stat().st_size
    return size


def _epoch(copy: Path) -> int:
    tail = copy.name.rsplit("corrupt-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def prune_corrupt(path: Path, max_bytes: int) -> tuple[int, list[Path]]:
    """Delete the oldest `<name>.corrupt-<epoch>` copies (with their -wal/-shm) until at most
    CORRUPT_KEEP remain and they take at most CORRUPT_SHARE of `max_bytes`; returns the bytes
    the kept copies take (they count against the cap) and the copies deleted."""
    copies = sorted(
        (
            p
            for p in path.parent.glob(f"{path.name}.corrupt-*")
            if p.name.rsplit("corrupt-", 1)[-1].isdigit()
        ),
        key=_epoch,
        reverse=True,
    )
    kept, deleted, total = 0, [], 0
    for copy in copies:
        size = _copy_bytes(copy)
        if kept < CORRUPT_KEEP and total + size <= max_bytes * CORRUPT_SHARE:
            kept += 1
            total += size
            continue
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                copy.with_name(copy.name + suffix).unlink()
        deleted.append(copy)
    return total, deleted


def file_bytes(path: Path) -> int:
    """The database file plus its -wal file."""
    size = 0
    for p in (path, path.with_name(path.name + "-wal")):
        with contextlib.suppress(FileNotFoundError):
            size += p.stat().st_size
    return size
