"""An outbox whose database cannot be opened for writing at start: empty until it can."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.store import sqlite as store
from agent.store.outbox import Outbox, OutboxWriteError
from agent.uplink.payload import encode_event


async def test_open_is_deferred_until_the_database_can_be_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "REOPEN_EVERY", 0.0)
    blocked = tmp_path / "state"
    blocked.write_text("a file where the storage dir should be")  # fails as root too
    box = Outbox(blocked / "outbox.db", 10_000_000)
    await box.open()  # does not raise: the agent must keep running
    try:
        with pytest.raises(OutboxWriteError):
            await box.put([encode_event("agent_started", {})])
        assert await box.begin(100) is None
        assert sum((await box.stats()).pending_records.values()) == 0
        blocked.unlink()
        blocked.mkdir()
        await box.put([encode_event("agent_started", {})])  # opened now
        batch = await box.begin(100)
        assert batch is not None and batch.stream == "event" and batch.records == 1
        await box.ack(batch)
        assert sum((await box.stats()).pending_records.values()) == 0
    finally:
        await box.close()
