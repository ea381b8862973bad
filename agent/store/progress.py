"""Delivery progress per consumer: deleting acknowledged rows. Worker thread only.

With one consumer an ack deletes its rows directly (the fast path). With several, table
`acked` holds the rows some consumers have acknowledged and others not yet; a row is
deleted once every configured consumer has acknowledged it, so one uplink being down
neither blocks nor loses another's data.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator, Sequence

from agent.store.records import STREAMS, Batch

Counts = dict[str, list[int]]  # stream -> [rows, records]
Change = tuple[str, str, int]  # (consumer, stream, records of one row)


def settle(con: sqlite3.Connection, consumers: Sequence[str]) -> None:
    """After a change of the configured consumers: forget acks of consumers that are gone
    and delete the rows that every configured consumer has acknowledged."""
    marks = ",".join("?" * len(consumers))
    con.execute(f"DELETE FROM acked WHERE uplink NOT IN ({marks})", tuple(consumers))
    con.execute(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM acked GROUP BY id HAVING count(*) >= ?)",
        (len(consumers),),
    )
    con.execute("DELETE FROM acked WHERE id NOT IN (SELECT id FROM outbox)")


def count_acked(db: sqlite3.Connection, consumers: Sequence[str]) -> dict[str, Counts]:
    """Per consumer and stream: rows and records it acknowledged that are still stored."""
    out: dict[str, Counts] = {c: {s: [0, 0] for s in STREAMS} for c in consumers}
    if len(consumers) < 2:
        return out
    for uplink, stream, rows, records in db.execute(
        "SELECT a.uplink, o.stream, count(*), coalesce(sum(o.n), 0) "
        "FROM acked a JOIN outbox o ON o.id = a.id GROUP BY a.uplink, o.stream"
    ):
        if uplink in out:
            out[uplink][stream] = [int(rows), int(records)]
    return out


def oldest_unacked(db: sqlite3.Connection, consumers: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per consumer and stream: the wall-clock time of the oldest stored row that consumer has
    not acknowledged (streams it has fully acknowledged are left out). Per (consumer, stream)
    one walk of index outbox_stream_id in id order that stops at the first row without a
    primary-key hit in `acked`: instant for a lagging consumer, as long as the lagging ones'
    backlog for one ahead of them. With one consumer, the first row of each stream."""
    out: dict[str, dict[str, float]] = {c: {} for c in consumers}
    for c in consumers:
        for stream in STREAMS:
            got = db.execute(
                "SELECT o.ts FROM outbox o WHERE o.stream=? AND NOT EXISTS "
                "(SELECT 1 FROM acked a WHERE a.uplink=? AND a.id=o.id) ORDER BY o.id LIMIT 1",
                (stream, c),
            ).fetchone()
            if got is not None:
                out[c][stream] = float(got[0])
    return out


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")
        raise


def delete_all(db: sqlite3.Connection, batches: Sequence[Batch]) -> None:
    """One consumer: delete the batches' rows in one transaction."""
    with transaction(db):
        for b in batches:
            db.executemany("DELETE FROM outbox WHERE id=?", [(r.id,) for r in b.rows])


def ack_shared(
    db: sqlite3.Connection, batches: Sequence[Batch], consumers: Sequence[str]
) -> tuple[list[Change], list[Change]]:
    """Several consumers: mark the rows acknowledged; delete those the others had too.

    Returns (deleted, marked): one (consumer, stream, records) per row.
    """
    others = len(consumers) - 1
    gone: list[Change] = []
    marked: list[Change] = []
    with transaction(db):
        for b in batches:
            name = b.consumer or consumers[0]
            for r in b.rows:
                (k,) = db.execute(
                    "SELECT count(*) FROM acked WHERE id=? AND uplink<>?", (r.id, name)
                ).fetchone()
                if k >= others:
                    db.execute("DELETE FROM outbox WHERE id=?", (r.id,))
                    db.execute("DELETE FROM acked WHERE id=?", (r.id,))
                    gone.append((name, b.stream, r.n))
                elif db.execute("INSERT OR IGNORE INTO acked VALUES (?, ?)", (name, r.id)).rowcount:
                    marked.append((name, b.stream, r.n))
    return gone, marked
