"""ingest's PostgreSQL side in one process (real PostgreSQL, no broker): migrations, a value
PostgreSQL refuses, gaps that late records fill, an outbox_replaced explanation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import psycopg
import pytest

from ingest.gaps import gap_pass
from ingest.mqtt import Delivery
from ingest.schema import MIGRATIONS, migrate
from ingest.service import Ingest, Settings
from ingest.testing import PgServer, PgServerError

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server() -> Iterator[PgServer]:
    try:
        pg = PgServer(settings={"fsync": "off"})
        pg.start()
    except PgServerError as exc:
        pytest.fail(str(exc))
    try:
        yield pg
    finally:
        pg.stop()


@pytest.fixture
def ingest(server: PgServer) -> Iterator[Ingest]:
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    inst = Ingest(Settings(dsn=server.dsn, port=1))  # never started: no broker needed
    try:
        yield inst
    finally:
        inst.conn.close()


def tele(seqs: list[int], values: list[Any] | None = None, gw: str = "g") -> Delivery:
    n = len(seqs)
    cols = {"seq": seqs, "point": ["p"] * n, "device": ["d"] * n, "key": ["k"] * n,
            "ts": [1_700_000_000_000] * n, "value": values or [1.0] * n, "quality": [0] * n,
            "unit": ["Pa"] * n}  # fmt: skip
    return delivery(gw, "telemetry", cols)


def delivery(gw: str, stream: str, records: Any) -> Delivery:
    doc = {"v": 1, "enterprise": "E", "gateway": gw, "stream": stream, "backfill": False,
           "clock_synced": True, "sent": 1, "records": records}  # fmt: skip
    # generation -1: never acknowledged (there is no connection)
    return Delivery(f"dust/E/{gw}/{stream}", orjson.dumps(doc), 1, 1, -1, 0.0)


def rows(inst: Ingest, sql: str) -> list[tuple[Any, ...]]:
    return inst.conn.execute(sql.encode()).fetchall()


def test_migrations_apply_once(ingest: Ingest) -> None:
    assert migrate(ingest.conn) == []
    assert rows(ingest, "SELECT version FROM schema_version") == [(m[0],) for m in MIGRATIONS]


def test_a_refused_value_rejects_only_its_message(ingest: Ingest) -> None:
    bad = tele([3, 4], values=[1.0, "hot"])
    written = ingest.handle([tele([1, 2]), bad, tele([5]), tele([1, 2])])
    assert (written.records, written.stored) == (5, 3)
    assert rows(ingest, "SELECT seq FROM telemetry ORDER BY 1") == [(1,), (2,), (5,)]
    assert rows(ingest, "SELECT reason, payload FROM rejects") == [("values", bad.payload)]
    assert ingest.stats.rejected == {"values": 1}


def test_gaps_are_recorded_split_by_late_records_and_explained(ingest: Ingest) -> None:
    ingest.handle([tele([1, 2, 10])])
    gap_pass(ingest.conn)  # horizon: what was seen one pass ago
    gap_pass(ingest.conn)
    gaps = "SELECT seq_first, seq_last, explained_kind FROM gaps ORDER BY 1"
    assert rows(ingest, gaps) == [(3, 9, None)]
    ingest.handle([tele([5, 6])])  # part of a backlog arrives late
    gap_pass(ingest.conn)
    assert rows(ingest, gaps) == [(3, 4, None), (7, 9, None)]
    replaced = [{"seq": 1, "kind": "outbox_replaced", "ts": 1,
                 "data": {"next_seq": {"telemetry": 7, "alarm": 1, "event": 2}}}]  # fmt: skip
    ingest.handle([delivery("g", "event", replaced)])
    gap_pass(ingest.conn)
    assert rows(ingest, gaps) == [(3, 4, "outbox_replaced"), (7, 9, None)]
    ingest.handle([tele([7, 8, 9])])
    gap_pass(ingest.conn)
    assert rows(ingest, gaps) == [(3, 4, "outbox_replaced")]
    state = "SELECT stream, low, high FROM stream_state ORDER BY 1"
    assert rows(ingest, state) == [("alarm", 0, 0), ("event", 1, 1), ("telemetry", 10, 10)]


def test_alarms_are_announced_at_commit(ingest: Ingest, server: PgServer) -> None:
    rec = {"seq": 4, "alarm_id": "p:high", "point": "p", "device": "d", "key": "k",
           "kind": "threshold", "direction": "high", "transition": "raise", "level": "warning",
           "prev_level": None, "value": 2.0, "threshold": 1.5, "unit": "Pa", "ts": 1,
           "text_zh": "高", "text_en": "high", "chattering": True}  # fmt: skip
    with psycopg.connect(server.dsn, autocommit=True) as listener:
        listener.execute("LISTEN dust_alarm")
        ingest.handle([delivery("g", "alarm", [rec])])
        note = next(listener.notifies(timeout=5))
    assert orjson.loads(note.payload) == {"enterprise": "E", "gateway": "g", "seq": [4]}
    assert rows(ingest, "SELECT alarm_id, level, extra FROM alarms") == [
        ("p:high", "warning", {"chattering": True})
    ]
