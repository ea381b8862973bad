"""The outbox runs the small SQLite calls of steady operation inline on the loop, and fsyncs
and backlog drains on its worker (issue 16): calls switching between the two lose, repeat
and reorder nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path

from agent.store.outbox import Entry, Outbox
from agent.store.sqlite import INLINE_MAX_PENDING


def telemetry(i: int) -> Entry:
    return Entry("telemetry", 1, b'{"i":%d,"pad":"%s"}' % (i, b"x" * 200), 1.75e9 + i)


async def test_a_backlog_drain_with_puts_between_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """Leases and acks leave the loop while a backlog drains (more than INLINE_MAX_PENDING
    rows) and come back inline once it is drained; telemetry puts made meanwhile run inline
    when the worker is idle. Every row comes out once, in order."""
    box = Outbox(tmp_path / "outbox.db", 100_000_000)
    await box.open()
    try:
        n_backlog = 3 * INLINE_MAX_PENDING
        await box.put([telemetry(i) for i in range(n_backlog)])
        seen: list[bytes] = []
        nxt = n_backlog
        while (batch := await box.begin(7)) is not None:
            seen += [r.body for r in batch.rows]
            await box.ack(batch)
            if nxt < n_backlog + 20:
                await box.put([telemetry(nxt)])
                nxt += 1
        assert seen == [telemetry(i).body for i in range(nxt)]
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
