"""Per-consumer cursors over the outbox: leases, live boundary and the batch query. Worker thread.

Each consumer (uplink) has a `View`: the row ids it has leased and not yet acked or kept,
scan cursors that skip the leased prefix of each stream, and its live boundary (rows with
id <= boundary are its backlog). `take` is the one query that hands rows out.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Container
from dataclasses import dataclass, field
from typing import Final

from agent.store.records import STREAMS, Batch, Row, Stream

SEQ_BYTES: Final = 12  # what one record's seq costs in a message, for the byte budget
MAX_ID: Final = 1 << 62


@dataclass(slots=True)
class Leases:
    """Row ids handed out and not yet acked or kept; cursors skip the leased prefix."""

    ids: set[int] = field(default_factory=set)
    cursor: dict[tuple[str, int], int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def clear(self) -> None:
        with self.lock:
            self.ids.clear()
            self.cursor.clear()


@dataclass(slots=True)
class View:
    """One consumer's leases and live boundary."""

    name: str
    leases: Leases = field(default_factory=Leases)
    boundary: int = 0


def set_boundary(db: sqlite3.Connection, view: View, live_since: float | None) -> int:
    """Rows stored before `live_since` (wall clock; None: every row so far) are backlog."""
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
    db: sqlite3.Connection,
    view: View,
    budget: tuple[int, int],
    *,
    backlog: bool,
    shared: bool,
    gen: int,
    stored: Container[str] = STREAMS,
) -> Batch | None:
    """Alarms, then events, then live telemetry, then (if `backlog`) older telemetry.

    `budget` is (max_records, max_bytes); `shared`: several consumers, so rows this one has
    acknowledged (table `acked`) are skipped. `stored`: the streams that hold any row at all
    (the store counts them); the others are not queried.
    """
    b = view.boundary
    for stream in ("alarm", "event"):
        if stream not in stored:
            continue
        rows = take(db, view, stream, (0, MAX_ID), budget, shared=shared)
        if rows:
            return Batch(stream, rows, backfill=rows[0].id <= b, gen=gen, consumer=view.name)
    if "telemetry" not in stored:
        return None
    rows = take(db, view, "telemetry", (b, MAX_ID), budget, shared=shared)
    if rows:
        return Batch("telemetry", rows, backfill=False, gen=gen, consumer=view.name)
    if backlog and b:
        rows = take(db, view, "telemetry", (0, b), budget, shared=shared)
        if rows:
            return Batch("telemetry", rows, backfill=True, gen=gen, consumer=view.name)
    return None


def take(
    db: sqlite3.Connection,
    view: View,
    stream: Stream,
    span: tuple[int, int],
    budget: tuple[int, int],
    *,
    shared: bool,
) -> tuple[Row, ...]:
    """The oldest un-leased rows with lo < id <= hi, within the record and byte budget."""
    (lo, hi), (max_records, max_bytes) = span, budget
    leases = view.leases
    with leases.lock:
        start = max(lo, leases.cursor.get((stream, lo), 0))
        leased = leases.ids
        rows: list[Row] = []
        total = size = 0
        if shared:
            cur = db.execute(
                "SELECT id, seq_first, n, body, ts FROM outbox "
                "WHERE stream=? AND id > ? AND id <= ? AND NOT EXISTS "
                "(SELECT 1 FROM acked a WHERE a.uplink=? AND a.id=outbox.id) "
                "ORDER BY id LIMIT ?",
                (stream, start, hi, view.name, max_records + len(leased)),
            )
        else:
            cur = db.execute(
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


def release(view: View, batch: Batch, *, rewind: bool) -> None:
    """Forget the batch's leases; `rewind`: its rows go out again (scan from the start)."""
    leases = view.leases
    with leases.lock:
        leases.ids.difference_update(r.id for r in batch.rows)
        if rewind:
            for key in [k for k in leases.cursor if k[0] == batch.stream]:
                del leases.cursor[key]
