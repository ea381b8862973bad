"""The byte cap: drop the oldest un-leased telemetry (never alarms or events). Worker thread.

After a put, while the live pages of the database exceed `max_bytes`, the oldest un-leased
TELEMETRY rows are deleted until the database is under LOW_WATER of the cap. The dropped
records are counted persistently (meta 'dropped') and reported, in the same transaction, by
a `data_dropped` event entry that the caller inserts.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from dataclasses import dataclass
from typing import Final

from agent.store.records import Entry, event_entry

log = logging.getLogger("agent.store.outbox")

LOW_WATER: Final = 0.9  # after a drop, the database is brought under this share of max_bytes
Victim = tuple[int, int, int, float]  # id, seq_first, n, ts of a dropped row


@dataclass(frozen=True, slots=True)
class Dropped:
    ids: list[int]
    records: list[int]  # records per dropped row
    event: Entry  # the data_dropped event to insert


# the three pragmas in one statement (each put and ack asks)
PAGES: Final = (
    "SELECT page_count, freelist_count, page_size"
    " FROM pragma_page_count(), pragma_freelist_count(), pragma_page_size()"
)


def pages(db: sqlite3.Connection) -> tuple[int, int, int]:
    """(page_count, freelist_count, page_size)."""
    count, free, size = db.execute(PAGES).fetchone()
    return int(count), int(free), int(size)


def used_bytes(db: sqlite3.Connection) -> int:
    count, free, size = pages(db)
    return (count - free) * size


def _victims(db: sqlite3.Connection, leased: set[int], target: int) -> list[Victim]:
    """Delete the oldest un-leased telemetry rows until under target; (id, seq, n, ts) each."""
    dropped: list[Victim] = []
    last_id = 0
    while used_bytes(db) > target:
        excess = used_bytes(db) - target
        chunk: list[Victim] = []
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
    return dropped


def enforce_cap(
    db: sqlite3.Connection, max_bytes: int, leased: set[int], *, shared: bool
) -> Dropped | None:
    """Inside the put's transaction: drop telemetry until under the low-water mark."""
    dropped = _victims(db, leased, int(max_bytes * LOW_WATER))
    if not dropped:
        return None
    if shared:  # rows some consumers had acknowledged may be among them
        db.executemany("DELETE FROM acked WHERE id=?", [(d[0],) for d in dropped])
    records = sum(d[2] for d in dropped)
    db.execute("UPDATE meta SET value = value + ? WHERE key='dropped'", (records,))
    (total,) = db.execute("SELECT value FROM meta WHERE key='dropped'").fetchone()
    data: dict[str, object] = {
        "stream": "telemetry",
        "records": records,
        "rows": len(dropped),
        "seq_first": min(d[1] for d in dropped),
        "seq_last": max(d[1] + d[2] - 1 for d in dropped),
        "from_ts": round(min(d[3] for d in dropped) * 1000),
        "to_ts": round(max(d[3] for d in dropped) * 1000),
        "dropped_total": total,
        "max_bytes": max_bytes,
        "reason": "storage_cap",
    }
    log.warning(
        "outbox over its cap of %d bytes: dropped %d oldest telemetry records (seq %s..%s)",
        max_bytes,
        records,
        data["seq_first"],
        data["seq_last"],
    )
    return Dropped(
        [d[0] for d in dropped],
        [d[2] for d in dropped],
        event_entry("data_dropped", data, time.time()),
    )
