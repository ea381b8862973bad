"""The Store contract (Outbox + StoreGuard), one suite over a normal disk, a disk that fills up
and a filesystem that is read-only at start (tests.store_disk).

Every case makes the disk refuse writes the mode's way (a no-op on the normal disk), goes on
producing, repairs the disk and checks what the consumers get: nothing acknowledged comes back,
no alarm is lost, order and seq hold per stream, every lost telemetry record is counted and
reported. Only the public APIs are used (put/begin/ack/keep/wait_for_data/stats/consumer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from agent.uplink.payload import encode_event
from tests.store_disk import CONSUMERS, Disk, Store, events, marks, rows, seqs

MODES = ("normal", "full", "readonly")


@pytest.fixture(params=MODES)
def disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Disk]:
    d = Disk(request.param, tmp_path)
    d.prepare()
    try:
        yield d
    finally:
        d.unmount()


@pytest.fixture
async def store(disk: Disk) -> AsyncIterator[Store]:
    s = Store(disk)
    await s.outbox.open()
    try:
        yield s
    finally:
        await s.outbox.close()


async def outage(store: Store, alarms: int = 3, telemetry: int = 3) -> None:
    """The disk refuses writes (its mode's way) while alarms and telemetry keep coming, then
    works again and the guard catches up."""
    await store.disk.refuse(store.filler)
    for _ in range(max(alarms, telemetry)):
        if alarms:
            await store.put("alarm")
            alarms -= 1
        if telemetry:
            await store.put("telemetry", 4)
            telemetry -= 1
    if store.disk.refusing_mode:
        assert store.guard.error is not None and store.guard.held  # alarms held in memory
    store.disk.repair()
    await store.settle()


async def test_batch_is_handed_out_again_after_keep_and_never_after_ack(store: Store) -> None:
    await outage(store)
    await store.put("alarm")
    c = store.consumer()
    first = await c.begin(1000)
    assert first is not None and first.stream == "alarm"  # alarms drain first
    second = await c.begin(1000)  # a leased batch is not handed out twice
    if second is not None:
        assert not {r.id for r in first.rows} & {r.id for r in second.rows}
        c.keep(second)
    c.keep(first)
    again = await c.begin(1000)
    assert again is not None and rows(again) == rows(first)  # the same rows, the same seqs
    await c.ack(again)
    rest = await store.drain()
    acked = {(g.stream, g.seq_first) for g in rows(again)}
    assert not acked & {(g.stream, g.seq_first) for g in rest}
    assert await c.begin(1000) is None
    await store.reopen()  # acked rows do not come back after a restart either
    assert await store.drain() == []


async def test_alarms_are_never_dropped_and_keep_their_order(store: Store) -> None:
    await store.put("alarm")
    await outage(store, alarms=20, telemetry=20)
    await store.put("alarm")
    got = await store.drain()
    assert marks(got, "alarm") == store.ledger.put["alarm"]
    alarm_seqs = seqs(got, "alarm")
    assert alarm_seqs == list(range(alarm_seqs[0], alarm_seqs[0] + len(alarm_seqs)))
    put_order = store.ledger.put["telemetry"]
    tele = marks(got, "telemetry")
    assert tele == [m for m in put_order if m in set(tele)]  # a subset, in order
    if store.disk.refused:
        assert events(got, "storage_recovered")


async def test_seq_is_monotonic_and_never_reused_across_a_reopen(store: Store) -> None:
    await outage(store)
    got = await store.drain()
    await store.reopen()
    await store.put("alarm")
    await store.put("telemetry", 5)
    await store.guard.put([encode_event("agent_started", {})])
    got += await store.drain()
    for stream in ("alarm", "telemetry", "event"):
        s = seqs(got, stream)
        assert s == sorted(s) and len(set(s)) == len(s), stream
        assert s == list(range(s[0], s[0] + len(s))), stream  # gap-free: drops take no seq
    stats = await store.outbox.stats()
    assert stats.next_seq["alarm"] == seqs(got, "alarm")[-1] + 1


async def test_telemetry_drops_are_counted_and_reported_with_ranges(disk: Disk) -> None:
    store = Store(disk, max_bytes=96 << 10)  # a small cap: drops on every disk
    await store.outbox.open()
    try:
        await outage(store, alarms=2, telemetry=10)
        for _ in range(60):  # over the cap: the oldest telemetry goes
            await store.put("telemetry", 10, pad=2000)
        await store.put("alarm")
        got = await store.drain()
        stats = await store.outbox.stats()
    finally:
        await store.outbox.close()
    put = store.ledger.put["telemetry"]
    delivered = marks(got, "telemetry")
    reports = events(got, "data_dropped")
    assert reports and all(r["stream"] == "telemetry" and r["records"] > 0 for r in reports)
    assert sum(r["records"] for r in reports) == len(put) - len(delivered)
    assert stats.dropped_records + store.guard.dropped_records == len(put) - len(delivered)
    assert all(r["from_ts"] <= r["to_ts"] for r in reports)
    tele_seqs = set(seqs(got, "telemetry"))
    for r in reports:  # stored, then dropped by the cap: the report names the seq range
        if "seq_first" in r:
            dropped = set(range(r["seq_first"], r["seq_last"] + 1))
            assert not dropped & tele_seqs
            tele_seqs |= dropped
    assert tele_seqs == set(range(min(tele_seqs), max(tele_seqs) + 1))  # no unexplained gap
    assert marks(got, "alarm") == store.ledger.put["alarm"]  # never dropped for room


async def test_each_consumer_gets_everything_until_it_acks(store: Store) -> None:
    await outage(store)
    await store.put("alarm")
    plant = await store.drain(CONSUMERS[0])
    assert marks(plant, "alarm") == store.ledger.put["alarm"]
    province = await store.drain(CONSUMERS[1], ack=False)  # down: kept for retry
    assert [g.seq_first for g in province] == [g.seq_first for g in plant]
    assert await store.drain(CONSUMERS[0]) == []
    assert await store.drain(CONSUMERS[1]) == province  # handed out again after keep
    assert sum((await store.outbox.stats()).pending_records.values()) == 0


async def test_wait_for_data_wakes_on_put(store: Store) -> None:
    await outage(store, alarms=1, telemetry=0)
    await store.drain()
    c = store.consumer()
    assert await c.begin(10) is None
    assert await c.wait_for_data(0.02) is False  # nothing new: it times out
    waiter = asyncio.create_task(c.wait_for_data(5.0))
    await store.put("alarm")
    assert await waiter is True
    batch = await c.begin(10)
    assert batch is not None and marks(rows(batch), "alarm") == store.ledger.put["alarm"][-1:]
    c.keep(batch)
    assert await c.wait_for_data(0.0) is True  # a kept batch is data again
    await store.drain()
