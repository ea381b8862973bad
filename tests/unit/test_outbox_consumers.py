"""Several uplinks over one outbox: own progress each; a row goes when all have acked it."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from agent.store.outbox import Entry, Outbox, OutboxConsumer, Stream

TWO = ("mqtt", "hebei")


def entry(stream: Stream, n: int, size: int = 16) -> Entry:
    return Entry(stream, n, b"x" * size, time.time())


async def drain(c: Outbox | OutboxConsumer, n: int = 1000) -> list[tuple[str, int]]:
    """(stream, seq_first) of every row handed out, acked as it comes."""
    out: list[tuple[str, int]] = []
    while (b := await c.begin(n)) is not None:
        out += [(b.stream, r.seq_first) for r in b.rows]
        await c.ack(b)
    return out


async def test_rows_stay_until_every_consumer_acked(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 10_000_000, consumers=TWO)
    await box.open()
    hebei = box.consumer("hebei")
    await box.put([entry("telemetry", 5), entry("alarm", 1), entry("telemetry", 5)])
    assert await drain(box) == [("alarm", 1), ("telemetry", 1), ("telemetry", 6)]
    assert await drain(box) == []  # mqtt is done with them
    stats = await box.stats()
    assert stats.pending_records == {"alarm": 1, "event": 0, "telemetry": 10}  # hebei needs them
    assert stats.pending_by_consumer["mqtt"] == {"alarm": 0, "event": 0, "telemetry": 0}
    assert await hebei.pending() == {"alarm": 1, "event": 0, "telemetry": 10}
    # hebei fails once: the kept batch comes back, in order
    b = await hebei.begin(1)
    assert b is not None and b.stream == "alarm"
    hebei.keep(b)
    assert await drain(hebei, 5) == [("alarm", 1), ("telemetry", 1), ("telemetry", 6)]
    stats = await box.stats()
    assert stats.pending_records == {"alarm": 0, "event": 0, "telemetry": 0}
    await box.close()


async def test_progress_survives_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, 10_000_000, consumers=TWO)
    await box.open()
    await box.put([entry("telemetry", 3) for _ in range(4)])
    hebei = box.consumer("hebei")
    b = await hebei.begin(3)  # one row acked by hebei only
    assert b is not None
    await hebei.ack(b)
    assert len(await drain(box)) == 4  # all acked by mqtt: row 1 is gone, 2..4 wait for hebei
    await box.close()

    box = Outbox(path, 10_000_000, consumers=TWO)
    await box.open()
    assert await drain(box) == []
    assert await drain(box.consumer("hebei")) == [
        ("telemetry", 4),
        ("telemetry", 7),
        ("telemetry", 10),
    ]
    assert (await box.stats()).pending_rows["telemetry"] == 0
    await box.close()


async def test_removing_a_consumer_forgets_its_progress(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    box = Outbox(path, 10_000_000, consumers=TWO)
    await box.open()
    await box.put([entry("telemetry", 1) for _ in range(3)])
    b = await box.begin(1)
    assert b is not None
    await box.ack(b)  # mqtt acked row 1; hebei acked nothing
    await box.close()
    box = Outbox(path, 10_000_000, consumers=("mqtt",))  # hebei taken out of the config
    await box.open()
    assert await drain(box) == [("telemetry", 2), ("telemetry", 3)]
    await box.close()


async def test_byte_cap_applies_and_reports_with_a_lagging_consumer(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 400_000, consumers=TWO)
    await box.open()
    for _ in range(100):
        await box.put([entry("telemetry", 10, size=8_000)])
        await drain(box)  # mqtt keeps up; hebei is down
    stats = await box.stats()
    assert stats.dropped_records > 0
    assert stats.pending_by_consumer["mqtt"]["telemetry"] == 0
    assert stats.pending_by_consumer["hebei"]["telemetry"] == stats.pending_records["telemetry"]
    events = []
    while (b := await box.consumer("hebei").begin(1000)) is not None and b.stream == "event":
        events += [orjson.loads(r.body)[0]["kind"] for r in b.rows]
        await box.ack(b)
    assert "data_dropped" in events
    await box.close()
