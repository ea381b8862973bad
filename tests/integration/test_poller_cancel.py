"""A poller whose cancel is swallowed by a read still stops (issue 16: a shutdown at 5,000
points waited forever). Python 3.11's asyncio.wait_for, inside pymodbus, returns the reply
instead of raising CancelledError when the reply comes in the same loop turn as the cancel;
the emit below swallows a cancel the same way, at a point the test controls."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from agent.core.model import BusSpec, Frame
from agent.source.plan import compile_plan
from agent.source.poller import BusPoller
from drivers.modbus_tcp import ModbusTcpSource
from tests.factories import point
from tests.modbus_server import ModbusTestServer

DEADLINE = 10.0


async def test_a_swallowed_cancel_still_stops_the_poller() -> None:
    srv = ModbusTestServer(units=(1,))
    srv.set(1, "holding", 0, [7])
    await srv.start()
    try:
        bus = BusSpec("line", "tcp", "127.0.0.1", srv.port, 0.3, 0, 0.05)
        pts = [point(0, device="dc1", bus="line", unit_id=1, table="holding", address=0)]
        (plan,) = compile_plan(pts, [bus])
        source = ModbusTcpSource("127.0.0.1", srv.port, timeout=0.3, retries=0, name="line")
        frames: list[Frame] = []

        async def emit(frame: Frame) -> None:
            frames.append(frame)
            if len(frames) == 2:
                task = asyncio.current_task()
                assert task is not None
                task.cancel()
                # swallowed, as wait_for does when the reply wins the race
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0)

        task = asyncio.create_task(BusPoller(plan, source, emit).run())
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, DEADLINE)
        assert len(frames) == 2  # it stopped right after the cycle that swallowed the cancel
    finally:
        await srv.stop()
