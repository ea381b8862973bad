"""Fixtures of the contract suites: one Source "field" per bus kind, and a frame collector."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from agent.core.model import Frame
from tests.source_field import Field, SerialField, TcpField

DEADLINE = 5.0  # upper bound for any awaited condition; tests pass far sooner
KINDS = ("tcp", "rtu", "rtu_tcp")


@pytest.fixture(params=KINDS)
async def field(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Field]:
    """The far end of the bus of kind `request.param`, serving units 1 and 2."""
    logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)
    kind = request.param
    f: Field = SerialField(tmp_path) if kind == "rtu" else TcpField(kind)
    await f.open()
    try:
        yield f
    finally:
        await f.close()


class Frames:
    """Collects a poller's frames; tests wait on conditions over them, with a deadline."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._changed = asyncio.Condition()

    async def emit(self, frame: Frame) -> None:
        async with self._changed:
            self.frames.append(frame)
            self._changed.notify_all()

    async def wait_for(self, pred: Callable[[Frame], bool], within: float = DEADLINE) -> Frame:
        """The first frame from now on that satisfies `pred`."""
        after = len(self.frames)
        async with asyncio.timeout(within), self._changed:
            while True:
                for f in self.frames[after:]:
                    if pred(f):
                        return f
                after = max(after, len(self.frames))
                await self._changed.wait()

    async def wait_count(self, n: int, within: float = DEADLINE) -> None:
        """Until `n` more frames have come."""
        target = len(self.frames) + n
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.frames) >= target)
