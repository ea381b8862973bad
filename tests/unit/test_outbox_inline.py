"""The outbox runs small SQLite calls inline on the loop and keeps fsyncs and checkpoints on
its worker (issue 16). There is no automatic checkpoint: these tests show that the WAL stays
bounded by the outbox's own checkpoints, with puts and with a drain that makes no put, and
that alarm puts (fsync) and inline telemetry puts interleave without losing order or rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.store.outbox import Entry, Outbox
from agent.store.sqlite import CHECKPOINT_COMMITS


def telemetry(i: int) -> Entry:
    return Entry("telemetry", 1, b'{"i":%d,"pad":"%s"}' % (i, b"x" * 200), 1.75e9 + i)


def wal_bytes(db: Path) -> int:
    wal = db.with_name(db.name + "-wal")
    return wal.stat().st_size if wal.exists() else 0


FRAME = 4096 + 24  # a WAL frame: one page and its header


async def test_the_wal_stays_bounded_without_automatic_checkpoints(tmp_path: Path) -> None:
    """A drain that makes no put (acks only): 10 x CHECKPOINT_COMMITS commits of at least one
    frame each would grow the WAL past 10 x CHECKPOINT_COMMITS frames without checkpoints;
    the outbox checkpoints every CHECKPOINT_COMMITS commits (a commit here writes at most a
    leaf, a freelist page and the header page)."""
    db = tmp_path / "outbox.db"
    box = Outbox(db, 100_000_000, sync_interval=3600.0)  # checkpoints by commit count only
    await box.open()
    try:
        await box.put([telemetry(i) for i in range(10 * CHECKPOINT_COMMITS)])
        while (batch := await box.begin(1)) is not None:
            await box.ack(batch)
        assert wal_bytes(db) <= 3 * CHECKPOINT_COMMITS * FRAME
    finally:
        await box.close()


async def test_alarm_puts_on_the_worker_and_inline_puts_keep_their_order(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", 100_000_000)
    await box.open()
    try:
        alarm = Entry("alarm", 1, b'[{"a":1}]', 1.75e9)
        puts = [box.put([telemetry(i)] + ([alarm] if i % 3 == 0 else [])) for i in range(30)]
        await asyncio.gather(*puts)
        seen: list[bytes] = []
        while (batch := await box.begin(1000)) is not None:
            seen += [r.body for r in batch.rows if batch.stream == "telemetry"]
            await box.ack(batch)
        assert seen == [telemetry(i).body for i in range(30)]
    finally:
        await box.close()
