"""Write a batch of parsed messages into PostgreSQL in one transaction, idempotently.

Telemetry goes columnar through COPY into a temporary staging table, then
`INSERT ... SELECT ... ON CONFLICT DO NOTHING` into `telemetry`: a record already stored
(a redelivery, or another instance that got the same message) adds nothing. Alarms and
events are few: a pipelined INSERT ... ON CONFLICT DO NOTHING each. The caller acknowledges
the messages only after `write()` returned, that is after COMMIT. New alarms are announced
with NOTIFY dust_alarm (sent by PostgreSQL at COMMIT).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import psycopg
from psycopg.types.json import Jsonb

from ingest.wire import Message

log = logging.getLogger("ingest.store")

STAGE = """CREATE TEMP TABLE IF NOT EXISTS stage_telemetry (
    gateway_id int, seq bigint, ts_ms bigint, point text, value double precision,
    quality smallint, backfill boolean) ON COMMIT DELETE ROWS"""
COPY_STAGE = "COPY stage_telemetry FROM STDIN"
MERGE_STAGE = """INSERT INTO telemetry (gateway_id, seq, ts, point, value, quality, backfill)
SELECT gateway_id, seq, to_timestamp(ts_ms / 1000.0), point, value, quality, backfill
FROM stage_telemetry ON CONFLICT DO NOTHING"""
INSERT_ALARM = """INSERT INTO alarms (gateway_id, seq, alarm_id, point, device, key, kind,
    direction, transition, level, prev_level, value, threshold, unit, ts, text_zh, text_en,
    extra, backfill)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, to_timestamp(%s / 1000.0),
    %s, %s, %s, %s) ON CONFLICT DO NOTHING"""
INSERT_EVENT = """INSERT INTO events (gateway_id, seq, kind, ts, data, backfill)
VALUES (%s, %s, %s, to_timestamp(%s / 1000.0), %s, %s) ON CONFLICT DO NOTHING"""
UPSERT_POINT = """INSERT INTO points (gateway_id, point, device, key, unit)
VALUES (%s, %s, %s, %s, %s) ON CONFLICT (gateway_id, point) DO UPDATE
SET device = excluded.device, key = excluded.key, unit = excluded.unit
WHERE (points.device, points.key, points.unit)
    IS DISTINCT FROM (excluded.device, excluded.key, excluded.unit)"""
INSERT_REJECT = "INSERT INTO rejects (topic, reason, payload) VALUES (%s, %s, %s)"

ALARM_FIELDS = (
    "alarm_id", "point", "device", "key", "kind", "direction", "transition", "level",
    "prev_level", "value", "threshold", "unit",
)  # fmt: skip
ALARM_KNOWN = frozenset((*ALARM_FIELDS, "seq", "ts", "text_zh", "text_en"))
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


@dataclass(slots=True)
class Written:
    """What one batch did: records offered, new rows stored (the rest were duplicates)."""

    records: int = 0
    stored: int = 0
    by_stream: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True, frozen=True)
class Reject:
    topic: str
    reason: str
    payload: bytes


class Writer:
    """Owns one connection; gateway ids and point metadata are cached after they commit."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self._gateways: dict[tuple[str, str], int] = {}
        self._points: set[tuple[int, str, str, str, str]] = set()
        with conn.transaction():
            conn.execute(STAGE)

    def gateway_ids(self, msgs: Iterable[Message]) -> dict[tuple[str, str], int]:
        """Ids of the messages' gateways, creating them (and their stream_state) when new."""
        missing = {(m.enterprise, m.gateway) for m in msgs} - self._gateways.keys()
        if missing:
            with self.conn.transaction():
                for ent, gw in sorted(missing):
                    self._gateways[(ent, gw)] = self._create_gateway(ent, gw)
        return self._gateways

    def _create_gateway(self, enterprise: str, gateway: str) -> int:
        self.conn.execute(
            "INSERT INTO gateways (enterprise, gateway) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (enterprise, gateway),
        )
        row = self.conn.execute(
            "SELECT id FROM gateways WHERE enterprise = %s AND gateway = %s", (enterprise, gateway)
        ).fetchone()
        gid = int(row[0])  # type: ignore[index]
        self.conn.execute(
            "INSERT INTO stream_state (gateway_id, stream) SELECT %s, s FROM"
            " unnest(ARRAY['telemetry', 'alarm', 'event']) s ON CONFLICT DO NOTHING",
            (gid,),
        )
        return gid

    def write(self, msgs: list[Message], rejects: list[Reject]) -> Written:
        """Store the messages and the rejects in one transaction (committed on return)."""
        ids = self.gateway_ids(msgs)
        out = Written()
        new_points: set[tuple[int, str, str, str, str]] = set()
        with self.conn.transaction():
            tele = [m for m in msgs if m.stream == "telemetry"]
            if tele:
                new_points = self._write_points(tele, ids)
                self._copy_telemetry(tele, ids)
                out.by_stream["telemetry"] = self.conn.execute(MERGE_STAGE).rowcount
            alarms = [m for m in msgs if m.stream == "alarm"]
            if alarms:
                out.by_stream["alarm"] = self._insert(INSERT_ALARM, _alarm_rows(alarms, ids))
                self._notify_alarms(alarms)
            events = [m for m in msgs if m.stream == "event"]
            if events:
                out.by_stream["event"] = self._insert(INSERT_EVENT, _event_rows(events, ids))
            if rejects:
                with self.conn.cursor() as cur:
                    cur.executemany(
                        INSERT_REJECT, [(r.topic, r.reason, r.payload) for r in rejects]
                    )
        self._points |= new_points
        out.records = sum(m.count for m in msgs)
        out.stored = sum(out.by_stream.values())
        return out

    def _notify_alarms(self, msgs: list[Message]) -> None:
        """NOTIFY dust_alarm, delivered at COMMIT: a platform LISTENs instead of polling.
        A redelivered alarm notifies again: listeners read the rows by (gateway, seq)."""
        with self.conn.cursor() as cur:
            cur.executemany(
                "SELECT pg_notify('dust_alarm', %s)",
                [(_dumps({"enterprise": m.enterprise, "gateway": m.gateway, "seq": m.seqs}),)
                 for m in msgs],
            )  # fmt: skip

    def _insert(self, sql: str, rows: list[tuple[Any, ...]]) -> int:
        with self.conn.cursor() as cur:
            cur.executemany(sql, rows)
            return max(cur.rowcount, 0)

    def _write_points(
        self, msgs: list[Message], ids: dict[tuple[str, str], int]
    ) -> set[tuple[int, str, str, str, str]]:
        seen: set[tuple[int, str, str, str, str]] = set()
        for m in msgs:
            gid, r = ids[(m.enterprise, m.gateway)], m.records
            seen.update(
                (gid, *p) for p in zip(r["point"], r["device"], r["key"], r["unit"], strict=True)
            )
        new = seen - self._points
        if new:
            with self.conn.cursor() as cur:
                cur.executemany(UPSERT_POINT, sorted(new))  # sorted: one lock order
        return new

    def _copy_telemetry(self, msgs: list[Message], ids: dict[tuple[str, str], int]) -> None:
        with self.conn.cursor() as cur, cur.copy(COPY_STAGE) as copy:
            for m in msgs:
                copy.write(_telemetry_text(ids[(m.enterprise, m.gateway)], m))


def _telemetry_text(gid: int, m: Message) -> str:
    """One message's records as COPY text rows (tab-separated, \\N for null)."""
    r = m.records
    points: list[str] = r["point"]
    joined = "".join(points)
    if "\\" in joined or "\t" in joined or "\n" in joined or "\r" in joined:
        points = [p.translate(_ESCAPES) for p in points]
    values = ["\\N" if v is None else v for v in r["value"]]
    head, bf = f"{gid}\t", "t" if m.backfill else "f"
    return "".join(
        f"{head}{s}\t{t}\t{p}\t{v}\t{q}\t{bf}\n"
        for s, t, p, v, q in zip(r["seq"], r["ts"], points, values, r["quality"], strict=True)
    )


def _alarm_rows(msgs: list[Message], ids: dict[tuple[str, str], int]) -> list[tuple[Any, ...]]:
    rows = []
    for m in msgs:
        gid = ids[(m.enterprise, m.gateway)]
        for a in m.records:
            extra = {k: v for k, v in a.items() if k not in ALARM_KNOWN}
            fields = [a.get(k) for k in ALARM_FIELDS]
            rows.append(
                (gid, a["seq"], *fields, a["ts"], a.get("text_zh"), a.get("text_en"),
                 Jsonb(extra, dumps=_dumps), m.backfill)
            )  # fmt: skip
    return rows


def _event_rows(msgs: list[Message], ids: dict[tuple[str, str], int]) -> list[tuple[Any, ...]]:
    return [
        (ids[(m.enterprise, m.gateway)], e["seq"], e["kind"], e["ts"],
         Jsonb(e["data"], dumps=_dumps), m.backfill)
        for m in msgs
        for e in m.records
    ]  # fmt: skip


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()
