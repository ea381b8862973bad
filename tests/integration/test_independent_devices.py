"""Field buses against devices the project did not write: pymodbus's own servers.

pymodbus's `ModbusSerialServer` (RTU framer) on a socat pty pair answers unpaced, in a
millisecond or two, far sooner than the wire would carry the frames; its `ModbusTcpServer` with
the RTU framer stands in for a serial device server (RTU over TCP). Register values are written
into pymodbus's datastore with `struct` here, never with the project's encoders. An `action`
hook makes a unit answer exception 6 (busy) every other request, or only exception 11 (a
gateway that cannot reach the device behind it).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import re
import struct
import subprocess
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
import pytest
from pymodbus.constants import ExcCodes
from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from agent.core.model import BusSpec, Frame, PointSpec, Table, WordOrder
from agent.core.model import DataType as PointType
from agent.source.plan import compile_plan
from agent.source.poller import BusPoller
from drivers.modbus_rtu import ModbusRtuSource
from drivers.registry import make_source
from firmware_sim.harness import Broker
from tests.e2e import BIN, Collector, start_agent, wait_for
from tests.factories import point
from tests.integration.test_rtu_e2e import alarms, records, write_config
from tests.pty import PtyPair

UNITS = (1, 2, 3)
DEADLINE = 60.0
GOOD, COMM = 0, 1
_ORDERS: dict[WordOrder, tuple[int, int, int, int]] = {
    "ABCD": (0, 1, 2, 3),
    "CDAB": (2, 3, 0, 1),
    "BADC": (1, 0, 3, 2),
    "DCBA": (3, 2, 1, 0),
}


def regs32(value: float | int, fmt: str, order: WordOrder) -> list[int]:
    """Two registers as a device in `order` holds a 32-bit value (bytes A B C D big-endian)."""
    raw = struct.pack(">" + fmt, value)
    b = bytes(raw[i] for i in _ORDERS[order])
    return [b[0] << 8 | b[1], b[2] << 8 | b[3]]


# (address, type, word order, value per unit) of the holding and input registers
Row = tuple[int, PointType, WordOrder, Callable[[int], float]]
HOLDING: list[Row] = [
    (0, "float32", "ABCD", lambda u: 21.5 + u),
    (2, "float32", "CDAB", lambda u: -3.25 * u),
    (4, "float32", "BADC", lambda u: 1013.25 + u),
    (6, "float32", "DCBA", lambda u: 0.125 * u),
    (8, "int16", "ABCD", lambda u: -123.0 * u),
    (9, "uint32", "CDAB", lambda u: 70000.0 + u),
    (11, "float32", "CDAB", lambda u: 63.153 + u),  # not exact in float32
]
INPUT: list[Row] = [
    (0, "uint16", "ABCD", lambda u: 1000.0 + u),
    (1, "int32", "DCBA", lambda u: -70000.0 * u),
]
BITS = 12


def coil(unit: int, i: int) -> bool:
    return (unit + i) % 3 == 0


def discrete(unit: int, i: int) -> bool:
    return (unit * i) % 2 == 1


def _words(
    table: list[tuple[int, PointType, WordOrder, Callable[[int], float]]], unit: int
) -> list[int]:
    out: list[int] = []
    for address, typ, order, value in table:
        assert address == len(out)
        v = value(unit)
        if typ == "int16":
            out.append(int(v) & 0xFFFF)
        elif typ == "uint16":
            out.append(int(v))
        else:
            fmt = {"float32": "f", "int32": "i", "uint32": "I"}[typ]
            out += regs32(v if fmt == "f" else int(v), fmt, order)
    return out


Action = Callable[
    [int, int, int, int, list[int], list[int] | list[bool] | None],
    Coroutine[None, None, ExcCodes | None],
]


def sim_device(
    unit: int, action: Action | None = None, inputs: list[int] | None = None
) -> SimDevice:
    def bits(f: Callable[[int, int], bool]) -> list[SimData]:
        return [SimData(0, 1, [f(unit, i) for i in range(16)], DataType.BITS)]

    regs = inputs if inputs is not None else _words(INPUT, unit)
    return SimDevice(
        id=unit,
        action=action,
        simdata=(
            bits(coil),
            bits(discrete),
            [SimData(0, 1, _words(HOLDING, unit), DataType.REGISTERS)],
            [SimData(0, 1, regs, DataType.REGISTERS)],
        ),
    )


def bit_value(f: Callable[[int, int], bool], i: int) -> Callable[[int], float]:
    return lambda unit: float(f(unit, i))


def spec_points(units: tuple[int, ...] = UNITS) -> tuple[list[PointSpec], list[float]]:
    pts: list[PointSpec] = []
    want: list[float] = []

    def add(unit: int, table: Table, row: Row) -> None:
        address, typ, order, value = row
        code = f"U{unit}.{table}{address}"
        pts.append(
            point(
                len(pts), device=f"U{unit}", key=f"{table}{address}", code=code, bus="line",
                unit_id=unit, table=table, address=address, type=typ, order=order,
            )
        )  # fmt: skip
        v = value(unit)
        want.append(float(np.float32(v)) if typ == "float32" else v)

    for u in units:
        for row in HOLDING:
            add(u, "holding", row)
        for row in INPUT:
            add(u, "input", row)
        for i in range(BITS):
            add(u, "coil", (i, "uint16", "ABCD", bit_value(coil, i)))
            add(u, "discrete", (i, "uint16", "ABCD", bit_value(discrete, i)))
    return pts, want


class Server(Protocol):
    async def serve_forever(self, *, background: bool = False) -> None: ...

    async def shutdown(self) -> None: ...


@pytest.fixture(autouse=True)
def _quiet_pymodbus() -> None:
    logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)


async def poll_cycles(bus: BusSpec, pts: list[PointSpec], n: int) -> tuple[list[Frame], BusPoller]:
    (plan,) = compile_plan(pts, [bus])
    poller = BusPoller(plan, make_source(bus), _drop)
    frames = [await poller.poll_once() for _ in range(n)]
    await poller.source.close()
    return frames, poller


async def _drop(frame: Frame) -> None:
    return None


def assert_all_read(frames: list[Frame], want: list[float]) -> None:
    for f in frames:
        bad = np.flatnonzero(f.quality)
        assert not len(bad), f"points {bad.tolist()} quality {f.quality[bad].tolist()}"
        np.testing.assert_allclose(f.value, want, rtol=1e-7)


@pytest.mark.parametrize("baud", [9600, 19200])
async def test_pymodbus_rtu_slave_on_an_unpaced_pty(tmp_path: Path, baud: int) -> None:
    pty = PtyPair(tmp_path)
    pty.start()
    server = ModbusSerialServer(
        [sim_device(u) for u in UNITS], port=pty.a, framer=FramerType.RTU, baudrate=baud
    )
    await server.serve_forever(background=True)
    try:
        bus = BusSpec(
            "line", "rtu", "", 0, timeout=0.3, retries=0, poll_interval=1.0,
            serial_port=pty.b, baud=baud,
        )  # fmt: skip
        pts, want = spec_points()
        frames, poller = await poll_cycles(bus, pts, 5)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
        pty.kill()
    assert_all_read(frames, want)
    assert poller.stats.timeouts == poller.stats.frame_errors == 0
    src = poller.source
    assert isinstance(src, ModbusRtuSource)
    assert src.stats.late_bytes == src.stats.stray_bytes == src.stats.guards == 0


async def test_pymodbus_rtu_over_tcp(tmp_path: Path) -> None:
    server = ModbusTcpServer(
        [sim_device(u) for u in UNITS], address=("127.0.0.1", 0), framer=FramerType.RTU
    )
    await server.serve_forever(background=True)
    listener = server.transport
    assert isinstance(listener, asyncio.Server)
    port = listener.sockets[0].getsockname()[1]
    try:
        bus = BusSpec("gw", "rtu_tcp", "127.0.0.1", port, timeout=0.3, retries=0, poll_interval=1.0)
        pts, want = spec_points()
        pts = [dataclasses.replace(p, bus="gw") for p in pts]
        frames, poller = await poll_cycles(bus, pts, 5)
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]
    assert_all_read(frames, want)
    assert poller.stats.timeouts == poller.stats.frame_errors == 0


class ThreadedServer:
    """A pymodbus server on its own event loop in a thread, for tests that run the agent and
    `dust-agent scan` as processes."""

    def __init__(self, make: Callable[[], Server]) -> None:
        self._make = make
        self._loop = asyncio.new_event_loop()
        self._server: Server | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pymodbus-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._start())
        finally:
            self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._server = self._make()  # pymodbus servers are made inside a running loop
        await self._server.serve_forever(background=True)

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        assert self._ready.wait(10) and self._server, "the pymodbus server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None
        fut = asyncio.run_coroutine_threadsafe(self._server.shutdown(), self._loop)
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


def every_other(code: ExcCodes) -> Action:
    n = [0]

    async def action(*args: object) -> ExcCodes | None:
        n[0] += 1
        return code if n[0] % 2 else None

    return action


def always(code: ExcCodes) -> Action:
    async def action(*args: object) -> ExcCodes | None:
        return code

    return action


def dry_collector_inputs(airlock: int) -> list[int]:
    """The input registers of config/profiles/dry_collector.toml, written by hand."""
    return [
        *regs32(35.0, "f", "ABCD"),  # hopper_temp
        *regs32(800.0, "f", "CDAB"),  # diff_pressure
        250, 260, 600,  # inlet 25.0, outlet 26.0 (x0.1), pulse 0.6 MPa (x0.001)
        1,  # fan_running
        airlock,  # airlock_state: 2 = fault
        *regs32(0, "I", "CDAB"),  # spark_count
    ]  # fmt: skip


def plant_devices() -> list[SimDevice]:
    return [
        sim_device(1, every_other(ExcCodes.DEVICE_BUSY), dry_collector_inputs(airlock=2)),
        sim_device(2, always(ExcCodes.GATEWAY_NO_RESPONSE), dry_collector_inputs(airlock=1)),
        sim_device(3, None, dry_collector_inputs(airlock=1)),
    ]


@pytest.fixture
def pty(tmp_path: Path) -> Iterator[PtyPair]:
    pair = PtyPair(tmp_path)
    pair.start()
    yield pair
    pair.kill()


def test_busy_and_gateway_units_end_to_end(tmp_path: Path, broker: Broker, pty: PtyPair) -> None:
    """Unit 1 answers exception 6 to every other request, unit 2 only exception 11, unit 3 is
    healthy: every point of unit 1 gets values and its air-lock fault is alarmed; unit 2 is
    quarantined with exactly one comm_loss alarm, named as the gateway not reaching it."""
    col = Collector(broker.port)
    col.start()
    rtu = {"name": "line", "type": "rtu", "port": pty.b, "baud": 19200, "timeout": 0.2,
           "poll_interval": 0.5}  # fmt: skip
    fast_state = {"airlock_state": {"rule": {"state_delay": 0.0}}}
    devices = [
        {"name": f"DC-{u}", "bus": "line", "unit": u, "profile": "dry_collector",
         "override": fast_state} for u in UNITS
    ]  # fmt: skip
    cfg = write_config(tmp_path, broker, [rtu], devices)
    make = lambda: ModbusSerialServer(plant_devices(), port=pty.a, framer=FramerType.RTU)  # noqa: E731
    with ThreadedServer(make):
        agent = start_agent(cfg, tmp_path / "agent.log")
        try:
            keys = {"hopper_temp", "diff_pressure", "inlet_temp", "outlet_temp",
                    "pulse_pressure", "fan_running", "airlock_state", "spark_count"}  # fmt: skip
            wait_for(
                lambda: all(
                    sum(r["quality"] == GOOD for r in records(col, "DC-1", k)) >= 4 for k in keys
                ),
                DEADLINE,
                "good readings of every DC-1 point",
            )
            wait_for(
                lambda: any(
                    a["transition"] == "raise" for a in alarms(col, "DC-1.airlock_state:state")
                ),
                DEADLINE,
                "the air-lock fault alarm of the busy unit",
            )
            wait_for(lambda: len(alarms(col, "DC-2:comm_loss")) >= 1, DEADLINE, "DC-2 comm_loss")
            n3 = len(records(col, "DC-3", "hopper_temp"))
            wait_for(lambda: len(records(col, "DC-3", "hopper_temp")) >= n3 + 4, DEADLINE, "cycles")
        finally:
            assert agent.stop() == 0, agent.text()[-3000:]
    col.stop()
    dc1 = records(col, "DC-1")
    assert {r["key"] for r in dc1} >= keys
    good = [r for r in dc1 if r["quality"] == GOOD]
    assert len(good) >= 0.9 * len(dc1), [r for r in dc1 if r["quality"] != GOOD][:3]
    assert all(r["value"] == 35.0 for r in good if r["key"] == "hopper_temp")
    assert {r["value"] for r in good if r["key"] == "airlock_state"} == {2}
    (raised,) = alarms(col, "DC-2:comm_loss")
    assert raised["transition"] == "raise"
    assert all(r["quality"] == COMM and r["value"] is None for r in records(col, "DC-2"))
    log = agent.text()
    assert log.count("unit 2 (DC-2) not answering") == 1, log[-3000:]
    assert "the gateway cannot reach the device behind it" in log
    assert "unit 1 (DC-1) not answering" not in log
    assert not alarms(col, "DC-1:comm_loss") and not alarms(col, "DC-3:comm_loss")
    assert all(r["quality"] == GOOD for r in records(col, "DC-3"))


@pytest.mark.parametrize("baud", [9600, 19200])
def test_scan_finds_the_pymodbus_units(pty: PtyPair, baud: int) -> None:
    """Units 1 and 3 answer; unit 2 is a gateway's "cannot reach" (11) and 4-6 are unknown to
    pymodbus (it answers exception 4): none of those is a device that answers."""
    make = lambda: ModbusSerialServer(plant_devices(), port=pty.a, framer=FramerType.RTU)  # noqa: E731
    with ThreadedServer(make):
        res = subprocess.run(
            [str(BIN / "dust-agent"), "scan", "--port", pty.b, "--baud", str(baud),
             "--units", "1-6", "--timeout", "0.3"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    found = [int(u) for u in re.findall(r"^unit (\d+): answers$", res.stdout, re.MULTILINE)]
    assert found == [1, 3], res.stdout
    assert res.stdout.rstrip().endswith("responding unit ids: 1, 3")


def test_float32_helper_is_independent() -> None:
    """The registers written above match the byte layouts by hand (0x41AC0000 = 21.5)."""
    assert regs32(21.5, "f", "ABCD") == [0x41AC, 0x0000]
    assert regs32(21.5, "f", "CDAB") == [0x0000, 0x41AC]
    assert regs32(21.5, "f", "BADC") == [0xAC41, 0x0000]
    assert regs32(21.5, "f", "DCBA") == [0x0000, 0xAC41]
    assert math.isclose(struct.unpack(">f", bytes.fromhex("41AC0000"))[0], 21.5)
