"""Gap detection: per gateway and stream, which seqs are missing, and which events explain them.

One pass, set-based, at most one instance at a time (a transaction-level advisory lock that
the others skip): for each stream table it

1. records the missing ranges between `low` and `horizon` (the highest seq seen one pass
   earlier, so that a message committed a moment late by another instance is not a gap) and
   moves `low` up to the highest stored seq below the horizon;
2. re-checks the recorded gaps: a range that late records (a backlog) filled is removed, one
   partly filled is split;
3. marks the gaps covered by a `data_dropped` event (seq_first..seq_last) or preceding an
   `outbox_replaced` event's next_seq as explained;
4. moves `high` and the horizon to the highest stored seq.

Rows above `low` are read once per pass, so a pass costs what arrived since the last one.
"""

from __future__ import annotations

from typing import Any

import psycopg

GAP_LOCK = 0x64757375  # pg_try_advisory_xact_lock key: one gap pass at a time

TABLES = {"telemetry": "telemetry", "alarm": "alarms", "event": "events"}

NEW_GAPS = """
WITH s AS (SELECT gateway_id, low, horizon FROM stream_state
           WHERE stream = %(stream)s AND horizon > low),
r AS (SELECT s.gateway_id, t.seq FROM s JOIN {table} t
        ON t.gateway_id = s.gateway_id AND t.seq > s.low AND t.seq <= s.horizon
      UNION ALL SELECT gateway_id, low FROM s),
w AS (SELECT gateway_id, seq, lead(seq) OVER (PARTITION BY gateway_id ORDER BY seq) AS nxt
      FROM r),
ins AS (INSERT INTO gaps (gateway_id, stream, seq_first, seq_last)
        SELECT gateway_id, %(stream)s, seq + 1, nxt - 1 FROM w WHERE nxt > seq + 1
        ON CONFLICT DO NOTHING RETURNING 1)
UPDATE stream_state st SET low = m.top, updated_at = now()
FROM (SELECT gateway_id, max(seq) AS top FROM r GROUP BY gateway_id) m
WHERE st.gateway_id = m.gateway_id AND st.stream = %(stream)s AND m.top > st.low
"""

FILLED = """
SELECT g.gateway_id, g.seq_first, g.seq_last, g.detected_at FROM gaps g
WHERE g.stream = %(stream)s AND EXISTS (
    SELECT 1 FROM {table} t WHERE t.gateway_id = g.gateway_id
    AND t.seq BETWEEN g.seq_first AND g.seq_last)
"""

STORED_IN = """
SELECT seq FROM {table} WHERE gateway_id = %s AND seq BETWEEN %s AND %s ORDER BY seq
"""

EXPLAIN_DROPPED = """
UPDATE gaps g SET explained_kind = 'data_dropped', explained_seq = e.seq
FROM events e
WHERE g.explained_kind IS NULL AND g.stream = 'telemetry' AND e.gateway_id = g.gateway_id
  AND e.kind = 'data_dropped' AND jsonb_typeof(e.data -> 'seq_first') = 'number'
  AND jsonb_typeof(e.data -> 'seq_last') = 'number'
  AND (e.data ->> 'seq_first')::bigint <= g.seq_first
  AND (e.data ->> 'seq_last')::bigint >= g.seq_last
"""

EXPLAIN_REPLACED = """
UPDATE gaps g SET explained_kind = 'outbox_replaced', explained_seq = e.seq
FROM events e
WHERE g.explained_kind IS NULL AND e.gateway_id = g.gateway_id AND e.kind = 'outbox_replaced'
  AND jsonb_typeof(e.data -> 'next_seq' -> g.stream) = 'number'
  AND (e.data -> 'next_seq' ->> g.stream)::bigint > g.seq_last
"""

MOVE_HIGH = """
UPDATE stream_state s SET high = m.top, horizon = m.top, updated_at = now()
FROM (SELECT st.gateway_id,
             (SELECT max(seq) FROM {table} t WHERE t.gateway_id = st.gateway_id) AS top
      FROM stream_state st WHERE st.stream = %(stream)s) m
WHERE s.gateway_id = m.gateway_id AND s.stream = %(stream)s
  AND (m.top > s.high OR s.horizon < s.high)
"""


def gap_pass(conn: psycopg.Connection[Any]) -> bool:
    """One pass over every stream; False when another instance is running one."""
    with conn.transaction():
        row = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (GAP_LOCK,)).fetchone()
        if not row or not row[0]:
            return False
        for stream, table in TABLES.items():
            args = {"stream": stream}
            conn.execute(NEW_GAPS.format(table=table).encode(), args)
            _refill(conn, stream, table)
            conn.execute(MOVE_HIGH.format(table=table).encode(), args)
        conn.execute(EXPLAIN_DROPPED)
        conn.execute(EXPLAIN_REPLACED)
    return True


def _refill(conn: psycopg.Connection[Any], stream: str, table: str) -> None:
    """Remove or split the recorded gaps that late records filled."""
    filled = conn.execute(FILLED.format(table=table).encode(), {"stream": stream}).fetchall()
    for gid, first, last, detected in filled:
        stored = [
            r[0] for r in conn.execute(STORED_IN.format(table=table).encode(), (gid, first, last))
        ]
        conn.execute(
            "DELETE FROM gaps WHERE gateway_id = %s AND stream = %s AND seq_first = %s",
            (gid, stream, first),
        )
        for a, b in _holes(first, last, stored):
            conn.execute(
                "INSERT INTO gaps (gateway_id, stream, seq_first, seq_last, detected_at)"
                " VALUES (%s, %s, %s, %s, %s)",
                (gid, stream, a, b, detected),
            )


def _holes(first: int, last: int, stored: list[int]) -> list[tuple[int, int]]:
    """The ranges of first..last not in `stored` (sorted)."""
    out: list[tuple[int, int]] = []
    nxt = first
    for s in stored:
        if s > nxt:
            out.append((nxt, s - 1))
        nxt = s + 1
    if nxt <= last:
        out.append((nxt, last))
    return out
