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


T0 = 1_714_521_600.0


async def test_oldest_unsent_is_per_consumer(tmp_path: Path) -> None:
    """Each uplink's oldest unacknowledged row, not the stream's oldest row: hebei lags."""
    box = Outbox(tmp_path / "o.db", 10_000_000, consumers=TWO, oldest_every=0.0)
    await box.open()
    mqtt, hebei = box.consumer("mqtt"), box.consumer("hebei")
    await box.put([Entry("telemetry", 1, b"x", T0 + 10 * i) for i in range(3)])
    await box.put([Entry("alarm", 1, b"a", T0 + 15)])
    stats = await box.stats()
    assert stats.oldest_by_consumer == {
        "mqtt": {"alarm": T0 + 15, "telemetry": T0},
        "hebei": {"alarm": T0 + 15, "telemetry": T0},
    }
    b = await hebei.begin(1)  # the alarm first (drain priority), then the first telemetry row
    assert b is not None and b.stream == "alarm"
    await hebei.ack(b)
    b = await hebei.begin(1)
    assert b is not None and [r.seq_first for r in b.rows] == [1]
    await hebei.ack(b)
    b = await mqtt.begin(1)
    assert b is not None and b.stream == "alarm"
    await mqtt.ack(b)  # the alarm is gone: both acked it
    b = await mqtt.begin(2)  # telemetry rows 1 and 2: row 1 goes, row 2 waits for hebei
    assert b is not None and [r.seq_first for r in b.rows] == [1, 2]
    await mqtt.ack(b)
    stats = await box.stats()
    assert stats.oldest_ts == {"telemetry": T0 + 10}  # the stream's oldest row
    assert stats.oldest_by_consumer == {
        "mqtt": {"telemetry": T0 + 20},  # row 2 is acknowledged by mqtt
        "hebei": {"telemetry": T0 + 10},  # the lagging one
    }
    assert await drain(mqtt) == [("telemetry", 3)]
    stats = await box.stats()
    assert stats.oldest_by_consumer == {"mqtt": {}, "hebei": {"telemetry": T0 + 10}}
    assert await drain(hebei) == [("telemetry", 2), ("telemetry", 3)]
    stats = await box.stats()
    assert stats.oldest_by_consumer == {"mqtt": {}, "hebei": {}} and stats.oldest_ts == {}
    await box.close()


async def test_oldest_unsent_is_queried_at_most_every_oldest_every(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 10_000_000, consumers=TWO, oldest_every=3600.0)
    await box.open()
    await box.put([Entry("telemetry", 1, b"x", T0 + i) for i in range(2)])
    assert (await box.stats()).oldest_by_consumer["mqtt"] == {"telemetry": T0}
    assert await drain(box.consumer("mqtt")) == [("telemetry", 1), ("telemetry", 2)]
    stats = await box.stats()  # within the hour: the figure of the last query
    assert stats.oldest_by_consumer["mqtt"] == {"telemetry": T0}
    assert stats.pending_by_consumer["mqtt"] == {"alarm": 0, "event": 0, "telemetry": 0}
    await box.close()
    reopened = Outbox(tmp_path / "o.db", 10_000_000, consumers=TWO, oldest_every=3600.0)
    await reopened.open()
    assert (await reopened.stats()).oldest_by_consumer == {"mqtt": {}, "hebei": {"telemetry": T0}}
    await reopened.close()


async def test_one_consumer_oldest_unsent_is_the_oldest_row(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", 10_000_000)
    await box.open()
    await box.put([Entry("event", 1, b"e", T0 + 5), Entry("telemetry", 1, b"x", T0)])
    stats = await box.stats()
    assert stats.oldest_by_consumer == {"default": {"event": T0 + 5, "telemetry": T0}}
    await box.close()
