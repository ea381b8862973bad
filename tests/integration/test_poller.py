"""BusPoller + ModbusTcpSource against a real in-process pymodbus server on loopback."""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import numpy as np
import pytest

from agent.core.backoff import Backoff
from agent.core.model import BusSpec, DataType, Frame, PointSpec, Quality, WordOrder
from agent.source.plan import compile_plan
from agent.source.poller import BusPoller, DeviceChange, LinkChange
from drivers.base import SourceLinkError, Table
from drivers.modbus_tcp import ModbusTcpSource
from tests.factories import point
from tests.modbus_server import ModbusTestServer

DEADLINE = 10.0  # generous upper bound for any condition; tests pass far sooner
GOOD, COMM, PROTO, BUSY = 0, int(Quality.COMM_FAIL), int(Quality.PROTOCOL), int(Quality.BUSY)


def pt(
    index: int,
    unit: int,
    address: int,
    type: DataType = "uint16",
    order: WordOrder = "ABCD",
    *,
    table: Table = "holding",
    scale: float = 1.0,
    offset: float = 0.0,
) -> PointSpec:
    return point(
        index, device=f"dc{unit}", code=f"C{index}", bus="line", unit_id=unit, table=table,
        address=address, type=type, order=order, scale=scale, offset=offset, kind="",
    )  # fmt: skip


POINTS = [
    pt(0, 1, 0, "float32"),  # unit 1 holding block 0-4
    pt(1, 1, 2, "int16"),
    pt(2, 1, 3, "uint32", "CDAB"),
    pt(3, 1, 20, "float32", "DCBA"),  # unit 1 second block 20-21
    pt(4, 1, 5, "uint16", table="input", scale=0.1, offset=-10.0),
    pt(5, 2, 0),  # unit 2
    pt(6, 2, 1, "int32", "BADC"),
    pt(7, 3, 0),  # unit 3
]


def f32_regs(value: float, order: WordOrder = "ABCD") -> list[int]:
    b = struct.pack(">f", value)  # bytes A B C D
    perm = {"ABCD": b, "CDAB": b[2:] + b[:2], "BADC": b[1::-1] + b[:1:-1], "DCBA": b[::-1]}
    wire = perm[order]
    return [int.from_bytes(wire[0:2], "big"), int.from_bytes(wire[2:4], "big")]


def load_values(srv: ModbusTestServer) -> None:
    srv.set(1, "holding", 0, f32_regs(21.5))
    srv.set(1, "holding", 2, [0xFFFE])  # int16 -2
    srv.set(1, "holding", 3, [0x0002, 0x0001])  # CDAB: 0x0001_0002 = 65538
    srv.set(1, "holding", 20, f32_regs(-3.25, "DCBA"))
    srv.set(1, "input", 5, [1234])  # 123.4 - 10
    srv.set(2, "holding", 0, [42])
    srv.set(2, "holding", 1, [0xFFFF, 0xF6FF])  # BADC: bytes FF FF FF F6 = -10
    srv.set(3, "holding", 0, [7])


EXPECTED = [21.5, -2.0, 65538.0, -3.25, 113.4, 42.0, -10.0, 7.0]


@pytest.fixture
async def server() -> AsyncIterator[ModbusTestServer]:
    srv = ModbusTestServer(units=(1, 2, 3))
    load_values(srv)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


class Frames:
    """Collects emitted frames; tests wait on conditions over them with a deadline."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._changed = asyncio.Condition()
        self.gate = asyncio.Event()  # clear it to make the consumer stall
        self.gate.set()
        self.stalled = asyncio.Event()  # set when emit starts waiting on a closed gate

    async def emit(self, frame: Frame) -> None:
        if not self.gate.is_set():
            self.stalled.set()
            await self.gate.wait()
        async with self._changed:
            self.frames.append(frame)
            self._changed.notify_all()

    async def wait_for(
        self, pred: Callable[[Frame], bool], after: int = 0, within: float = DEADLINE
    ) -> Frame:
        """The first frame numbered >= `after` that satisfies `pred`."""
        async with asyncio.timeout(within), self._changed:
            while True:
                for f in self.frames[after:]:
                    if pred(f):
                        return f
                after = max(after, len(self.frames))
                await self._changed.wait()

    async def wait_count(self, n: int, within: float = DEADLINE) -> None:
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: len(self.frames) >= n)


@asynccontextmanager
async def running(
    port: int,
    points: list[PointSpec] = POINTS,
    *,
    bus_timeout: float = 0.3,
    poll: float = 0.05,
    clock_synced: Callable[[], bool] = lambda: True,
    on_link: Callable[[LinkChange], None] | None = None,
    on_device: Callable[[DeviceChange], None] | None = None,
) -> AsyncIterator[tuple[BusPoller, Frames]]:
    bus = BusSpec("line", "tcp", "127.0.0.1", port, bus_timeout, 0, poll)
    (plan,) = compile_plan(points, [bus])
    source = ModbusTcpSource("127.0.0.1", port, timeout=bus_timeout, retries=0, name="line")
    frames = Frames()
    poller = BusPoller(
        plan,
        source,
        frames.emit,
        clock_synced=clock_synced,
        backoff=Backoff(base=0.05, cap=0.2, stable_after=1.0, jitter="equal"),
        on_link=on_link,
        on_device=on_device,
    )
    task = asyncio.create_task(poller.run(), name="test-poller")
    try:
        yield poller, frames
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not source.connected


def q(frame: Frame) -> list[int]:
    return [int(x) for x in frame.quality]


def all_good(f: Frame) -> bool:
    return not f.quality.any()


async def test_values_decode_right(server: ModbusTestServer) -> None:
    async with running(server.port) as (poller, frames):
        t0 = time.time()
        f = await frames.wait_for(all_good)
    assert f.index.tolist() == list(range(8)) and f.bus == "line"
    assert f.value.tolist() == pytest.approx(EXPECTED)
    assert f.value.dtype == np.float64 and f.quality.dtype == np.uint8
    assert np.all(np.abs(f.ts - t0) < DEADLINE)
    assert poller.stats.reads_ok >= 4 and poller.stats.timeouts == 0
    assert len(poller.plan.blocks) == 5


async def test_exception_response_flags_only_that_block(
    server: ModbusTestServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.source.poller")
    async with running(server.port) as (poller, frames):
        await frames.wait_for(all_good)
        server.fail(2, exception=3)  # illegal data value
        n = len(frames.frames)
        f = await frames.wait_for(lambda f: f.quality[5] != GOOD, after=n)
        assert q(f) == [GOOD] * 5 + [PROTO, PROTO, GOOD]
        assert math.isnan(f.value[5]) and math.isnan(f.value[6])  # the old 42 is never resent
        assert f.value[[0, 7]].tolist() == pytest.approx([21.5, 7.0])
        await frames.wait_count(len(frames.frames) + 3)  # several failing cycles...
        server.clear_faults()
        n = len(frames.frames)
        f = await frames.wait_for(all_good, after=n)
        assert f.value[5] == 42.0
    assert poller.stats.protocol_errors >= 3
    ours = [r for r in caplog.records if r.name == "agent.source.poller"]
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # ...logged once when it started
    assert "unit 2 holding 0-2" in warnings[0].getMessage()
    assert "exception 3 (illegal data value)" in warnings[0].getMessage()
    recovered = [r for r in ours if "recovered" in r.getMessage()]
    assert len(recovered) == 1 and recovered[0].levelno == logging.INFO


async def test_busy_is_retried_then_flagged_busy_and_degraded(server: ModbusTestServer) -> None:
    """Exception 6 on every try: the request is sent 1 + busy_retries times in the cycle, then
    its points carry BUSY (not PROTOCOL), the unit is degraded, never quarantined."""
    async with running(server.port) as (poller, frames):
        await frames.wait_for(all_good)
        server.fail(2, exception=6)
        n = len(frames.frames)
        f = await frames.wait_for(lambda f: f.quality[5] != GOOD, after=n)
        assert q(f) == [GOOD] * 5 + [BUSY, BUSY, GOOD]
        assert math.isnan(f.value[5])
        assert poller.health.degraded(2) and not poller.health.degraded(1)
        assert poller.stats.busy_replies == 3 * poller.stats.busy_failures  # 1 + 2 retries
        await frames.wait_count(len(frames.frames) + 3)
        assert not poller.health.quarantined(2)
        server.clear_faults()
        f = await frames.wait_for(all_good, after=len(frames.frames))
        await frames.wait_count(len(frames.frames) + 1)
        assert not poller.health.degraded(2) and f.value[5] == 42.0
    assert poller.stats.protocol_errors == 0


@pytest.mark.parametrize("code", [4, 10, 11])
async def test_device_and_gateway_failures_quarantine(server: ModbusTestServer, code: int) -> None:
    """Exceptions 4, 10, 11: a failure of that device (COMM_FAIL, toward quarantine)."""
    changes: list[DeviceChange] = []
    async with running(server.port, on_device=changes.append) as (poller, frames):
        await frames.wait_for(all_good)
        server.fail(3, exception=code)
        f = await frames.wait_for(lambda f: f.quality[7] != GOOD, after=len(frames.frames))
        assert q(f) == [GOOD] * 7 + [COMM]
        await frames.wait_for(lambda f: poller.health.quarantined(3))
    (lost,) = changes
    assert lost.unit == 3 and lost.lost and f"exception {code}" in lost.reason
    if code != 4:
        assert "the gateway cannot reach the device behind it" in lost.reason
    assert poller.stats.device_failures >= 3 and poller.stats.protocol_errors == 0


async def test_silent_unit_gives_comm_fail_within_timeout(server: ModbusTestServer) -> None:
    server.fail(3, silent=True)
    timeout = 0.3
    async with running(server.port, bus_timeout=timeout) as (poller, frames):
        t0 = time.monotonic()
        f = await frames.wait_for(lambda f: True)
        elapsed = time.monotonic() - t0
        assert q(f) == [GOOD] * 7 + [COMM]
        assert math.isnan(f.value[7])
        assert timeout * 0.9 <= elapsed < timeout + 2.0
        # the silent unit does not take the shared connection down for the others
        await frames.wait_count(4)
        assert all(q(f) == [GOOD] * 7 + [COMM] for f in frames.frames)
    # quarantined after 3 timeouts (BusSpec.quarantine_after): later cycles skip it
    assert poller.stats.timeouts == 3 and poller.stats.link_errors == 0
    assert poller.stats.overruns >= 1  # each 0.3 s cycle overruns the 0.05 s interval


async def test_first_connect_failure_keeps_emitting(server: ModbusTestServer) -> None:
    port = server.port
    await server.stop()
    async with running(port) as (poller, frames):
        await frames.wait_count(3)
        assert all(np.all(f.quality == COMM) for f in frames.frames)
        await server.start()
        await frames.wait_for(all_good, after=len(frames.frames))
    assert poller.stats.reconnects == 0  # the first successful connect is not a reconnect


async def test_link_outages_reported_once_each_way(server: ModbusTestServer) -> None:
    """Down at start-up and lost later: one down and one up per outage, however many retries,
    and the up carries the outage's duration."""
    changes: list[LinkChange] = []
    port = server.port
    await server.stop()
    t0 = time.monotonic()
    async with running(port, on_link=changes.append) as (_, frames):
        await frames.wait_count(5)  # several failed reconnects
        assert [(c.down, c.bus) for c in changes] == [(True, "line")]
        assert "connection refused" in changes[0].reason
        t_start = time.monotonic()
        await server.start()
        await frames.wait_for(all_good, after=len(frames.frames))
        t_up = time.monotonic()
        await server.stop()
        await frames.wait_for(lambda f: bool(np.all(f.quality == COMM)), after=len(frames.frames))
        await frames.wait_count(len(frames.frames) + 5)
        await server.start()
        await frames.wait_for(all_good, after=len(frames.frames))
    assert [c.down for c in changes] == [True, False, True, False]
    assert t_start - t0 - 1.0 <= changes[1].outage_s <= t_up - t0
    assert changes[3].outage_s > 0 and changes[2].reason


async def test_bad_value_and_clock_flags(server: ModbusTestServer) -> None:
    server.set(1, "holding", 0, [0x7FC0, 0x0000])  # float32 NaN from the device
    async with running(server.port, clock_synced=lambda: False) as (_, frames):
        f = await frames.wait_for(lambda f: True)
    unsynced = int(Quality.CLOCK_UNSYNCED)
    assert q(f)[0] == int(Quality.BAD_VALUE) | unsynced
    assert q(f)[1:] == [unsynced] * 7


async def test_slow_consumer_backpressure_counts_overruns(server: ModbusTestServer) -> None:
    async with running(server.port, poll=0.05) as (poller, frames):
        await frames.wait_for(all_good)
        overruns = poller.stats.overruns
        frames.gate.clear()
        async with asyncio.timeout(DEADLINE):
            await frames.stalled.wait()
        cycles, n = poller.stats.cycles, len(frames.frames)
        asyncio.get_running_loop().call_later(0.2, frames.gate.set)  # stuck for 4 intervals
        await frames.wait_count(n + 1)
        assert poller.stats.overruns > overruns
        assert poller.stats.cycles == cycles  # no reads pile up behind a blocked emit


async def test_connect_error_message_is_for_installers(server: ModbusTestServer) -> None:
    port = server.port
    await server.stop()
    src = ModbusTcpSource("127.0.0.1", port, timeout=0.5, retries=0, name="plant")
    with pytest.raises(SourceLinkError) as err:
        await src.connect()
    assert str(err.value) == (
        f"cannot connect to Modbus TCP 127.0.0.1:{port} (bus 'plant'): connection refused"
        " — check the address, the port and that the device is powered"
    )
    assert not src.connected
    await src.close()


@pytest.mark.parametrize(
    ("addresses", "bad", "extra"),
    [
        ((7, 8, 10, 11), None, 2),  # register 9 unmapped, inside the gap: 2 extra requests
        ((0, 1, 2, 3, 4, 5), 3, 3),  # point 3 on an unmapped register, no gap to blame
    ],
    ids=["hole-in-gap", "bad-point"],
)
async def test_illegal_address_search_cost(
    server: ModbusTestServer, addresses: tuple[int, ...], bad: int | None, extra: int
) -> None:
    hole = 9 if bad is None else bad
    server.fail(1, exception=2, addresses=range(hole, hole + 1))
    for a in addresses:
        server.set(1, "holding", a, [100 + a])
    pts = [pt(i, 1, a) for i, a in enumerate(addresses)]
    async with running(server.port, pts) as (poller, frames):
        f = await frames.wait_for(lambda f: not np.isnan(f.value[0]))
    assert poller.stats.split_requests == extra
    want = [float("nan") if a == bad else 100.0 + a for a in addresses]
    np.testing.assert_array_equal(f.value, want)
    assert [op.block.address for op in poller._ops] == ([7, 10] if bad is None else [0, 4])
