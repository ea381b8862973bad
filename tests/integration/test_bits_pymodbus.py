"""Coils and discrete inputs read through the project's drivers and poller, checked bit by bit
against pymodbus's own servers: Modbus TCP, RTU on a socat pty pair, and RTU over TCP.

The oracle is pymodbus: the bit patterns are written into its datastore with its own API
(tests/modbus_server.PymodbusBits) and it packs them into its replies, so the RTU master's
unpacking (drivers.rtu_frame.unpack_bits, whose inverse the simulator shares) is checked
against an implementation the project did not write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest

from agent.core.model import BusSpec, Frame, PointSpec
from agent.source.plan import compile_plan
from agent.source.poller import BusPoller
from drivers.registry import make_source
from tests.factories import point
from tests.modbus_server import Framing, PymodbusBits
from tests.pty import PtyPair

pytestmark = pytest.mark.integration

UNITS = (1, 7)
SIZE = 48
# addresses read: a run that is not a whole number of bytes, a gap, a lone bit, a run
# crossing byte boundaries at an odd start
ADDRESSES = [*range(0, 19), *range(23, 24), *range(29, 47)]


def pattern(unit: int, table: str) -> list[bool]:
    """A different irregular pattern per unit and table (no period of 8 or 16)."""
    salt = unit * 5 + (3 if table == "coil" else 0)
    return [((i * i + salt) % 7 in (0, 3)) != (i % 13 == salt % 13) for i in range(SIZE)]


def points(bus: str) -> list[PointSpec]:
    out: list[PointSpec] = []
    for unit in UNITS:
        for table in ("coil", "discrete"):
            for a in ADDRESSES:
                out.append(
                    point(
                        len(out), device=f"U{unit}", key=f"{table}{a}", code=f"U{unit}.{table}{a}",
                        bus=bus, unit_id=unit, table=table, address=a, type="uint16",
                    )
                )  # fmt: skip
    return out


def bus_spec(framing: Framing, where: str | int) -> BusSpec:
    if framing == "rtu":
        return BusSpec("line", "rtu", "", 0, timeout=0.3, retries=0, poll_interval=1.0,
                       serial_port=str(where), baud=19200)  # fmt: skip
    return BusSpec(
        "plc", framing, "127.0.0.1", int(where), timeout=1.0, retries=0, poll_interval=1.0
    )


@asynccontextmanager
async def served(framing: Framing, tmp: Path) -> AsyncIterator[BusSpec]:
    """pymodbus serving the patterns; the bus settings that reach it."""
    server = PymodbusBits(framing, UNITS, SIZE)
    pty = PtyPair(tmp) if framing == "rtu" else None
    if pty is not None:
        pty.start()
    await server.start(serial_port=pty.a if pty else "")
    try:
        for unit in UNITS:
            for table in ("coil", "discrete"):
                await server.set_bits(unit, table, 0, pattern(unit, table))
        yield bus_spec(framing, pty.b if pty else server.port)
    finally:
        await server.stop()
        if pty is not None:
            pty.kill()


async def poll(bus: BusSpec, pts: Sequence[PointSpec]) -> Frame:
    frames: list[Frame] = []

    async def emit(frame: Frame) -> None:
        frames.append(frame)

    (plan,) = compile_plan(list(pts), [bus])
    poller = BusPoller(plan, make_source(bus), emit)
    await poller.source.connect()
    try:
        return await poller.poll_once()
    finally:
        await poller.source.close()


@pytest.mark.parametrize(
    "framing",
    [
        "tcp",
        "rtu",
        "rtu_tcp",
    ],
)
async def test_bits_match_pymodbus_bit_by_bit(framing: Framing, tmp_path: Path) -> None:
    async with served(framing, tmp_path) as bus:
        pts = points(bus.name)
        frame = await poll(bus, pts)
    got = dict(zip(frame.index.tolist(), frame.value.tolist(), strict=True))
    quality = dict(zip(frame.index.tolist(), frame.quality.tolist(), strict=True))
    assert sorted(got) == [p.index for p in pts]
    wrong = [
        (p.code, got[p.index], int(pattern(p.unit_id, p.table)[p.address]))
        for p in pts
        if quality[p.index] != 0 or got[p.index] != pattern(p.unit_id, p.table)[p.address]
    ]
    assert wrong == [], f"{len(wrong)} of {len(pts)} bits differ (code, read, pymodbus)"
    # the patterns are not trivial: both values, in every unit and table
    for unit in UNITS:
        for table in ("coil", "discrete"):
            vals = {got[p.index] for p in pts if (p.unit_id, p.table) == (unit, table)}
            assert vals == {0.0, 1.0}
    assert not np.isnan(frame.value).any()
