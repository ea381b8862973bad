"""The outbox gives space back: after a large backlog drains, the file shrinks in small
incremental-vacuum steps (agent.store.reclaim); an existing small database is switched."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

from agent.store.outbox import Entry, Outbox


def telemetry(size: int) -> Entry:
    return Entry("telemetry", 10, os.urandom(size), time.time())


def auto_vacuum(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute("PRAGMA auto_vacuum").fetchone()[0])
    finally:
        con.close()


async def test_a_drained_backlog_gives_its_space_back(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, 200 * 2**20)
    await box.open()
    try:
        for _ in range(40):  # a 32 MB backlog
            await box.put([telemetry(8000) for _ in range(100)])
        high = (await box.stats()).db_bytes
        assert high > 30 * 2**20, high
        while (batch := await box.begin(1000, 512 * 1024)) is not None:
            await box.ack(batch)
        assert (await box.stats()).pending_records["telemetry"] == 0

        # live flow goes on (a cycle a tick): each acknowledgement may run one bounded step
        deadline = time.monotonic() + 30
        while (stats := await box.stats()).db_bytes > high // 4:
            assert time.monotonic() < deadline, f"still {stats.db_bytes} of {high} bytes"
            await box.put([telemetry(2000)])
            batch = await box.begin(1000)
            assert batch is not None
            await box.ack(batch)
            await asyncio.sleep(0.05)
        assert stats.used_bytes < 2 * 2**20, stats.used_bytes
        assert stats.reclaimed_bytes > high // 2, stats.reclaimed_bytes
    finally:
        await box.close()
    assert path.stat().st_size < high // 4


async def test_an_existing_small_database_is_switched_to_incremental_vacuum(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, 10 * 2**20)
    await box.open()
    await box.put([telemetry(100)])
    await box.close()
    con = sqlite3.connect(path, isolation_level=None)  # as written by an older agent
    con.execute("PRAGMA auto_vacuum=NONE")
    con.execute("VACUUM")
    con.close()
    assert auto_vacuum(path) == 0

    box = Outbox(path, 10 * 2**20)
    await box.open()
    try:
        assert (await box.stats()).pending_records["telemetry"] == 10  # nothing lost
    finally:
        await box.close()
    assert auto_vacuum(path) == 2
