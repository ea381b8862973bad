"""The central ingest against a real PostgreSQL and a real mosquitto, as real processes.

Two `dust-ingest` instances share one subscription; one is killed with SIGKILL mid-stream
and restarted with its client id (what systemd does); every record lands exactly once, a
republished message adds nothing, a gap is recorded and explained by a `data_dropped` event,
and a malformed message is rejected without stopping the instance.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import psycopg
import pytest

from firmware_sim.harness import Broker
from ingest.testing import PgServer, PgServerError
from tests.conftest import REPO

pytestmark = pytest.mark.integration

GATEWAYS = 12
MESSAGES = 40  # telemetry messages per gateway
PER_MESSAGE = 250  # records per message
DROPPED = (0, 5)  # gateway 0 drops message 5 (storage cap), announced by data_dropped
LOST = (1, 7)  # gateway 1 loses message 7 without explanation (a recorded, open gap)


@pytest.fixture
def pg() -> Iterator[PgServer]:
    """A private PostgreSQL; fails (never skips) with install advice when it is missing."""
    try:
        server = PgServer(settings={"fsync": "off"})
        server.start()
    except PgServerError as exc:
        pytest.fail(str(exc))
    try:
        yield server
    finally:
        server.stop()


class Instance:
    """One `dust-ingest` process; its log is a file, read to wait for its connection."""

    def __init__(self, tmp: Path, name: str, pg: PgServer, broker: Broker) -> None:
        self.log = tmp / f"{name}.log"
        self.args = [
            sys.executable, "-m", "ingest.cli", "--dsn", pg.dsn, "--port", str(broker.port),
            "--client-id", name, "--batch-records", "2000", "--receive-maximum", "20",
            "--gap-interval", "0.3", "--stats-interval", "1",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.args, stderr=log, cwd=REPO)
        marks = self.log.read_text().count("connected to")
        wait_for(lambda: self.log.read_text().count("connected to") > marks, 20, "connect")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.terminate()
        return self.proc.wait(timeout=20)


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def envelope(gw: int, stream: str, records: Any) -> dict[str, Any]:
    return {
        "v": 1, "enterprise": "E1", "gateway": f"gw-{gw}", "stream": stream, "backfill": False,
        "clock_synced": True, "sent": 1_700_000_000_000, "records": records,
    }  # fmt: skip


def telemetry(gw: int, msg: int) -> bytes:
    seqs = list(range(msg * PER_MESSAGE + 1, (msg + 1) * PER_MESSAGE + 1))
    cols = {
        "seq": seqs,
        "point": [f"DC-{s % 5}.p{s % 3}" for s in seqs],
        "device": [f"DC-{s % 5}" for s in seqs],
        "key": [f"p{s % 3}" for s in seqs],
        "ts": [1_700_000_000_000 + s * 100 for s in seqs],
        "value": [None if s % 50 == 0 else s / 4 for s in seqs],
        "quality": [1 if s % 50 == 0 else 0 for s in seqs],
        "unit": ["Pa" for _ in seqs],
    }
    return orjson.dumps(envelope(gw, "telemetry", cols))


def data_dropped(gw: int, msg: int) -> bytes:
    first, last = msg * PER_MESSAGE + 1, (msg + 1) * PER_MESSAGE
    data = {"stream": "telemetry", "reason": "storage_cap", "records": PER_MESSAGE, "rows": 1,
            "seq_first": first, "seq_last": last, "from_ts": 0, "to_ts": 0,
            "dropped_total": PER_MESSAGE, "max_bytes": 1}  # fmt: skip
    rec = [{"seq": 1, "kind": "data_dropped", "ts": 1_700_000_000_000, "data": data}]
    return orjson.dumps(envelope(gw, "event", rec))


def alarm(gw: int) -> bytes:
    rec = [{"seq": 1, "alarm_id": "DC-1.p0:high", "point": "DC-1.p0", "device": "DC-1",
            "key": "p0", "kind": "threshold", "direction": "high", "transition": "raise",
            "level": "alarm", "prev_level": None, "value": 9.5, "threshold": 9.0, "unit": "Pa",
            "ts": 1_700_000_000_000, "text_zh": "高", "text_en": "high"}]  # fmt: skip
    return orjson.dumps(envelope(gw, "alarm", rec))


def expected() -> set[tuple[str, int]]:
    out: set[tuple[str, int]] = set()
    for gw in range(GATEWAYS):
        for msg in range(MESSAGES):
            if (gw, msg) in ((0, DROPPED[1]), (1, LOST[1])):
                continue
            out.update((f"gw-{gw}", msg * PER_MESSAGE + i + 1) for i in range(PER_MESSAGE))
    return out


async def publish(port: int, items: list[tuple[str, bytes]]) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="test-pub") as client:
        for topic, payload in items:
            await client.publish(topic, payload, qos=1)


def feed() -> list[tuple[str, bytes]]:
    items: list[tuple[str, bytes]] = []
    for msg in range(MESSAGES):
        for gw in range(GATEWAYS):
            if (gw, msg) not in ((0, DROPPED[1]), (1, LOST[1])):
                items.append((f"dust/E1/gw-{gw}/telemetry", telemetry(gw, msg)))
    items.insert(len(items) // 3, ("dust/E1/gw-0/event", data_dropped(0, DROPPED[1])))
    items.insert(len(items) // 2, ("dust/E1/gw-2/alarm", alarm(2)))
    items.insert(len(items) // 4, ("dust/E1/gw-3/telemetry", b'{"v": 1, "records": 7}'))
    return items


def query(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql.encode()).fetchall()


def count(dsn: str) -> int:
    try:
        return int(query(dsn, "SELECT count(*) FROM telemetry")[0][0])
    except psycopg.errors.UndefinedTable:
        return 0


def sentinel(n: int) -> bytes:
    cols = {"seq": [n], "point": ["S"], "device": ["S"], "key": ["s"],
            "ts": [1_700_000_000_000], "value": [1.0], "quality": [0], "unit": [""]}  # fmt: skip
    return orjson.dumps({**envelope(0, "telemetry", cols), "gateway": "sentinel"})


def rows(dsn: str) -> set[tuple[str, int]]:
    sql = "SELECT g.gateway, t.seq FROM telemetry t JOIN gateways g ON g.id = t.gateway_id"
    return {(str(gw), int(seq)) for gw, seq in query(dsn, sql)}


GAPS = (
    "SELECT g.gateway, x.stream, x.seq_first, x.seq_last, x.explained_kind FROM gaps x"
    " JOIN gateways g ON g.id = x.gateway_id ORDER BY 1"
)


def test_two_instances_one_killed_every_record_once(
    pg: PgServer, tmp_path: Path, broker: Broker
) -> None:
    a, b = (Instance(tmp_path, n, pg, broker) for n in ("ingest-a", "ingest-b"))
    a.start()
    b.start()
    try:
        want = expected()
        items = feed()
        first, second = items[: len(items) // 2], items[len(items) // 2 :]
        pub = threading.Thread(target=lambda: asyncio.run(publish(broker.port, first)))
        pub.start()
        # SIGKILL A once some rows are in; the second half of the stream comes after.
        wait_for(lambda: count(pg.dsn) >= len(want) // 8, 30, "an eighth of the records")
        a.kill()
        pub.join()
        asyncio.run(publish(broker.port, second))  # A's share waits in its session
        a.start()  # systemd's Restart=: same client id, so its session's messages come back
        wait_for(lambda: count(pg.dsn) >= len(want), 30, "every record")
        assert count(pg.dsn) == len(want)
        assert rows(pg.dsn) == want

        # A message sent again (a redelivery) adds nothing. Two copies and then four new
        # one-record messages go round-robin to both instances, each in order: once the new
        # ones are stored, both copies were processed.
        again = [("dust/E1/gw-4/telemetry", telemetry(4, 3))] * 2
        new = [("dust/E1/sentinel/telemetry", sentinel(n)) for n in range(1, 5)]
        asyncio.run(publish(broker.port, again + new))
        wait_for(lambda: count(pg.dsn) == len(want) + 4, 10, "the four new records")
        assert rows(pg.dsn) == want | {("sentinel", n) for n in range(1, 5)}

        # The gap pass recorded both holes; the dropped one is explained by its event.
        gaps = [
            ("gw-0", "telemetry", DROPPED[1] * PER_MESSAGE + 1, (DROPPED[1] + 1) * PER_MESSAGE,
             "data_dropped"),
            ("gw-1", "telemetry", LOST[1] * PER_MESSAGE + 1, (LOST[1] + 1) * PER_MESSAGE, None),
        ]  # fmt: skip
        wait_for(lambda: query(pg.dsn, GAPS) == gaps, 10, f"gaps {gaps}")
        # Every gateway's watermark reaches its last seq: all stored or listed as a gap.
        low = ("SELECT count(*) FROM stream_state WHERE stream = 'telemetry'"
               f" AND low = {MESSAGES * PER_MESSAGE}")  # fmt: skip
        wait_for(lambda: query(pg.dsn, low) == [(GATEWAYS,)], 10, "every watermark at the end")
        assert query(pg.dsn, "SELECT alarm_id, transition, level FROM alarm_state") == [
            ("DC-1.p0:high", "raise", "alarm")
        ]
        assert query(pg.dsn, "SELECT topic, reason FROM rejects") == [
            ("dust/E1/gw-3/telemetry", "enterprise/gateway")
        ]
    finally:
        codes = [a.stop(), b.stop()]
    assert codes == [0, 0]
