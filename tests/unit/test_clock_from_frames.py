"""The wall clock is compared at each stored frame (no 1 Hz timer of its own): a jump seen
there reaches the outbox as a clock_jump event at once, and the clock task still compares
on its own when no frame comes. Injected clocks, a real config and plan; no sleeps."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import orjson

from agent.config import load_config
from agent.core.model import Frame
from agent.service.clock import ClockMonitor
from agent.service.ops import CLOCK_IDLE, Ops
from agent.source.plan import compile_config_plan
from tests.e2e import agent_config


class FakeClock:
    def __init__(self) -> None:
        self.wall, self.mono = 1_700_000_000.0, 100.0


class Recorder:
    def __init__(self) -> None:
        self.kinds: list[str] = []
        self.changed = asyncio.Event()

    async def put(self, entries: list[Any]) -> None:
        for e in entries:
            self.kinds += [event["kind"] for event in orjson.loads(e.body)]
        self.changed.set()


def _ops(tmp: Path, clock: FakeClock) -> tuple[Ops, Recorder, Frame]:
    cfg = load_config(agent_config(tmp, 1502, 1883))
    plans = compile_config_plan(cfg)
    store = Recorder()
    host: Any = SimpleNamespace(cfg=cfg, plans=plans, store=store, platforms=[])
    monitor = ClockMonitor(
        wall=lambda: clock.wall, mono=lambda: clock.mono, probe=lambda: (False, "test")
    )
    plan = plans[0]
    n = len(plan.point_index)
    frame = Frame(
        index=plan.point_index,
        ts=np.full(n, clock.wall),
        value=np.zeros(n),
        quality=np.zeros(n, dtype=np.uint8),
        bus=plan.bus.name,
    )
    return Ops(host, monitor), store, frame


async def _until(store: Recorder, kind: str) -> None:
    async with asyncio.timeout(CLOCK_IDLE / 2):  # well before the task's own timer
        while kind not in store.kinds:
            store.changed.clear()
            await store.changed.wait()


async def test_a_jump_seen_at_a_frame_is_reported_without_waiting_for_a_timer(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    ops, store, frame = _ops(tmp_path, clock)
    task = asyncio.create_task(ops._clock_loop())
    try:
        await _until(store, "clock_sync")  # the first probe (unsynced: reported); then it waits
        clock.mono += 0.5
        clock.wall += 0.5
        ops.observe(frame)  # within CLOCK_CHECK of the last comparison: not compared
        clock.mono += 0.6
        clock.wall += 3600.6  # stepped an hour ahead
        ops.observe(frame)
        await _until(store, "clock_jump")
        assert store.kinds.count("clock_jump") == 1
        assert ops.clock.jumps == 1
        clock.mono += 1.0
        clock.wall += 1.0
        ops.observe(frame)  # steady again: nothing more
        await asyncio.sleep(0)
        assert store.kinds.count("clock_jump") == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
