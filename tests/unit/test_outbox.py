"""Outbox: per-stream gap-free seq across restarts and kill -9, priority, leases, byte cap."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from agent.store.outbox import Entry, Outbox, OutboxWriteError, Row, Stream

REPO = Path(__file__).resolve().parents[2]


def entry(stream: Stream, n: int, size: int = 16, ts: float | None = None) -> Entry:
    return Entry(stream, n, b"x" * size, time.time() if ts is None else ts)


def all_rows(path: Path) -> dict[str, list[tuple[int, int]]]:
    """(seq_first, n) of every stored row per stream, read with a separate connection."""
    con = sqlite3.connect(path)
    try:
        out: dict[str, list[tuple[int, int]]] = {}
        for stream, seq, n in con.execute("SELECT stream, seq_first, n FROM outbox ORDER BY id"):
            out.setdefault(stream, []).append((seq, n))
        return out
    finally:
        con.close()


def assert_contiguous(rows: list[tuple[int, int]], first: int = 1) -> int:
    """Rows tile seq first.. with no gap or overlap; returns the next seq."""
    expect = first
    for seq, n in rows:
        assert seq == expect, f"gap or overlap at seq {seq}, expected {expect}"
        expect += n
    return expect


async def drain(box: Outbox) -> list[tuple[str, list[Row]]]:
    out: list[tuple[str, list[Row]]] = []
    while (batch := await box.begin(1000)) is not None:
        out.append((batch.stream, list(batch.rows)))
        await box.ack(batch)
    return out


async def test_seq_is_contiguous_per_stream_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, 10_000_000)
    await box.open()
    await box.put([entry("telemetry", 5), entry("alarm", 2), entry("telemetry", 3)])
    await box.put([entry("event", 1)])
    await box.close()

    box = Outbox(path, 10_000_000)
    await box.open()
    stats = await box.stats()
    assert stats.next_seq == {"alarm": 3, "event": 2, "telemetry": 9}
    assert stats.pending_records == {"alarm": 2, "event": 1, "telemetry": 8}
    await drain(box)  # acked rows are gone, but their seq numbers are never reused
    await box.put([entry("telemetry", 4), entry("alarm", 1)])
    await box.close()

    rows = all_rows(path)
    assert rows["telemetry"] == [(9, 4)]
    assert rows["alarm"] == [(3, 1)]


async def test_priority_alarm_then_event_then_telemetry(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 10_000_000)
    await box.open()
    try:
        await box.put([entry("telemetry", 10), entry("event", 1)])
        await box.put([entry("telemetry", 10), entry("alarm", 1)])
        got = await drain(box)
        assert [s for s, _ in got] == ["alarm", "event", "telemetry"]
        assert [r.seq_first for r in got[2][1]] == [1, 11]
    finally:
        await box.close()


async def test_batch_respects_max_records_but_takes_at_least_one_row(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 10_000_000)
    await box.open()
    try:
        await box.put([entry("telemetry", 3) for _ in range(5)])
        batch = await box.begin(10)
        assert batch is not None and batch.records == 9 and len(batch.rows) == 3
        await box.ack(batch)
        await box.put([entry("telemetry", 50)])
        batch = await box.begin(10)  # the 2 remaining rows of 3; the 50-row waits
        assert batch is not None and batch.records == 6
        await box.ack(batch)
        batch = await box.begin(10)
        assert batch is not None and batch.records == 50  # alone, over the limit
        await box.ack(batch)
    finally:
        await box.close()


async def test_lease_keep_ack(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, 10_000_000)
    await box.open()
    try:
        await box.put([entry("telemetry", 2) for _ in range(4)])
        first = await box.begin(4)
        assert first is not None and [r.seq_first for r in first.rows] == [1, 3]
        second = await box.begin(4)  # leased rows are not handed out twice
        assert second is not None and [r.seq_first for r in second.rows] == [5, 7]
        assert await box.begin(4) is None

        box.keep(first)
        assert await box.wait_for_data(0.01)
        again = await box.begin(4)
        assert again is not None and again.rows == first.rows

        await box.ack(again)
        box.keep(second)
        stats = await box.stats()
        assert stats.pending_rows["telemetry"] == 2
    finally:
        await box.close()
    assert all_rows(path)["telemetry"] == [(5, 2), (7, 2)]


async def test_reopen_with_pending_rows_signals_data(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, 10_000_000)
    await box.open()
    await box.put([entry("alarm", 1)])
    await box.close()
    box = Outbox(path, 10_000_000)
    await box.open()
    try:
        assert await box.wait_for_data(0.0)
    finally:
        await box.close()


async def test_cap_drops_oldest_telemetry_never_alarms(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    cap = 256 * 1024
    box = Outbox(path, cap)
    await box.open()
    try:
        await box.put([entry("alarm", 1, size=1000), entry("event", 1, size=1000)])
        for i in range(200):  # ~400 KiB of telemetry bodies: well over the cap
            await box.put([entry("telemetry", 10, size=2000, ts=1_700_000_000.0 + i)])
            if i % 50 == 0:
                await box.put([entry("alarm", 1, size=1000)])
        stats = await box.stats()
    finally:
        await box.close()

    rows = all_rows(path)
    assert stats.dropped_records > 0
    assert stats.dropped_records % 10 == 0
    assert [seq for seq, _ in rows["alarm"]] == [1, 2, 3, 4, 5]  # every alarm kept
    kept = rows["telemetry"]
    assert kept[-1] == (1991, 10)  # the newest telemetry is kept, the oldest went first
    assert_contiguous(kept, first=kept[0][0])
    assert kept[0][0] == stats.dropped_records + 1
    assert stats.pending_records["telemetry"] + stats.dropped_records == 2000

    con = sqlite3.connect(path)
    try:
        bodies = [
            orjson.loads(b)[0]
            for (b,) in con.execute("SELECT body FROM outbox WHERE stream='event' ORDER BY id")
            if not b.startswith(b"x")  # the filler event put by this test
        ]
        pages, free, size = (
            con.execute(f"PRAGMA {p}").fetchone()[0]
            for p in ("page_count", "freelist_count", "page_size")
        )
    finally:
        con.close()
    assert (pages - free) * size <= cap
    drops = [b for b in bodies if b["kind"] == "data_dropped"]
    assert drops, bodies
    assert sum(d["data"]["records"] for d in drops) == stats.dropped_records
    assert drops[0]["data"]["seq_first"] == 1
    assert drops[-1]["data"]["dropped_total"] == stats.dropped_records
    assert drops[0]["data"]["from_ts"] == 1_700_000_000_000
    # a drop is rare (low-water mark), not one event per put
    assert len(drops) < 20


async def test_cap_never_drops_leased_rows(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 128 * 1024)
    await box.open()
    try:
        await box.put([entry("telemetry", 1, size=2000)])
        leased = await box.begin(1)
        assert leased is not None
        for _ in range(100):
            await box.put([entry("telemetry", 1, size=2000)])
        dropped = (await box.stats()).dropped_records
        rows = all_rows(tmp_path / "o.db")["telemetry"]
        assert dropped > 0
        assert rows[0] == (1, 1)  # the leased row, the oldest of all, is still stored
        assert (2, 1) not in rows  # the oldest un-leased row went in its place
        assert dropped == 101 - len(rows)  # the leased row is not counted as dropped
        await box.ack(leased)  # still there to be acked
        assert all_rows(tmp_path / "o.db")["telemetry"] == rows[1:]
    finally:
        await box.close()


async def test_corrupt_database_is_moved_aside_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "bad.db"
    path.write_bytes(b"this is not an sqlite database at all" * 100)
    box = Outbox(path, 10_000_000)
    await box.open()
    try:
        aside = sorted(p.name for p in os.scandir(tmp_path) if ".corrupt-" in p.name)
        assert len(aside) == 1 and aside[0].startswith("bad.db.corrupt-")
        batch = await box.begin(10)
        assert batch is not None and batch.stream == "event"
        (event,) = orjson.loads(batch.rows[0].body)
        assert event["kind"] == "outbox_replaced" and event["data"]["seq_salvaged"] is False
        # seqs can no longer be salvaged: they jump to the epoch in ms, never repeat old ones
        await box.put([entry("telemetry", 3)])
        stats = await box.stats()
        assert stats.next_seq["telemetry"] > 1_600_000_000_000 and stats.replaced == 1
    finally:
        await box.close()


async def test_disk_full_is_a_write_error_naming_the_file(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "full.db", 10_000_000)
    await box.open()
    try:
        con = box._store.db
        await box._submit(con.execute, "PRAGMA max_page_count=1")  # like ENOSPC to SQLite
        with pytest.raises(OutboxWriteError, match="disk is full") as info:
            await box.put([entry("telemetry", 1, size=50_000)])
        assert str(tmp_path / "full.db") in str(info.value)
        await box._submit(con.execute, "PRAGMA max_page_count=1000000")
        await box.put([entry("alarm", 1)])  # recovers once there is room again
        assert (await box.stats()).pending_records["alarm"] == 1
    finally:
        await box.close()


async def test_live_before_backlog_and_batches_in_flight(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 100_000_000)
    await box.open()
    try:
        await box.put([entry("telemetry", 10, ts=1.0) for _ in range(5)])  # old: backlog
        await box.set_live_boundary(None)
        await box.put([entry("telemetry", 10)])  # produced after the (re)connect: live
        first = await box.begin(100)
        assert first is not None and not first.backfill and first.rows[0].seq_first == 51
        assert await box.begin(100, backlog=False) is None  # backlog held back (rate limit)
        a = await box.begin(20)  # two batches of backlog leased at once
        b = await box.begin(20)
        assert a is not None and b is not None and a.backfill and b.backfill
        assert [r.seq_first for r in a.rows + b.rows] == [1, 11, 21, 31]
        box.keep(a)  # a failed publish: rows go out again, oldest first
        again = await box.begin(100, max_bytes=2 * (16 + 12 * 10))
        assert again is not None and [r.seq_first for r in again.rows] == [1, 11]
        last = await box.begin(100)
        assert last is not None and [r.seq_first for r in last.rows] == [41]
        await box.ack(first, b, again, last)
        stats = await box.stats()
        assert stats.pending_records["telemetry"] == 0 and stats.oldest_ts == {}
    finally:
        await box.close()


CHILD = """
import asyncio, sys, time
from pathlib import Path
from agent.store.outbox import Entry, Outbox

async def main() -> None:
    box = Outbox(Path(sys.argv[1]), 100_000_000)
    await box.open()
    i = 0
    while True:
        i += 1
        entries = [Entry("telemetry", 1 + i % 7, b"t" * 200, time.time())]
        if i % 5 == 0:
            entries.append(Entry("alarm", 1, b"a" * 50, time.time()))
        await box.put(entries)
        # committed: report the records of each stream put so far in this run
        print(" ".join(f"{e.stream}:{e.n}" for e in entries), flush=True)

asyncio.run(main())
"""


def run_and_kill(path: Path, lines_wanted: int) -> dict[str, int]:
    """Run a child that puts in a loop; SIGKILL it mid-stream; records it saw committed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdout is not None
    committed = {"telemetry": 0, "alarm": 0}
    lines = 0
    deadline = time.monotonic() + 30
    try:
        while lines < lines_wanted:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"child reported only {lines} commits"
            ready, _, _ = select.select([proc.stdout], [], [], remaining)
            if not ready:
                continue
            line = proc.stdout.readline()
            assert line, f"child exited early with {proc.poll()}"
            for part in line.split():
                stream, n = part.decode().split(":")
                committed[stream] += int(n)
            lines += 1
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-put: it never stops putting
        proc.wait(10)
        proc.stdout.close()
    return committed


async def test_kill_9_loses_no_committed_row_and_seq_resumes(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    reported = {"telemetry": 0, "alarm": 0}
    for lines in (300, 200):
        got = await asyncio.to_thread(run_and_kill, path, lines)
        for k, v in got.items():
            reported[k] += v
        rows = all_rows(path)
        for stream in ("telemetry", "alarm"):
            stored_next = assert_contiguous(rows[stream])
            # every commit the child reported is there (maybe one more, killed before print)
            assert stored_next - 1 >= reported[stream]
            reported[stream] = stored_next - 1

    box = Outbox(path, 100_000_000)
    await box.open()
    try:
        stats = await box.stats()
        assert stats.next_seq["telemetry"] == reported["telemetry"] + 1
        assert stats.next_seq["alarm"] == reported["alarm"] + 1
        await box.put([entry("alarm", 1)])
        batch = await box.begin(10_000)
        assert batch is not None and batch.stream == "alarm"
        assert batch.rows[-1].seq_first == reported["alarm"] + 1
        box.keep(batch)
    finally:
        await box.close()
    con = sqlite3.connect(path)
    try:
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        con.close()
