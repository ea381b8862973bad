"""The simulator over real loopback sockets: values, faults, absent units, the CLI."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from collections.abc import AsyncIterator

import pytest
from pymodbus.client import AsyncModbusTcpClient as Client
from pymodbus.exceptions import ModbusIOException

from firmware_sim.plant import Plant
from firmware_sim.server import Fault, PlantServer, parse_fault_arg, quiet_pymodbus

pytestmark = pytest.mark.integration

TIMEOUT = 0.3  # client response timeout: the "no answer" tests wait this long


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def server() -> AsyncIterator[PlantServer]:
    quiet_pymodbus()
    srv = PlantServer(Plant(seed=3, scenario="smoulder"), units=(1, 2), holding_registers=20)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def clocked(clock: FakeClock) -> AsyncIterator[PlantServer]:
    """A server whose plant time the test sets."""
    quiet_pymodbus()
    srv = PlantServer(Plant(seed=3, scenario="smoulder"), holding_registers=20, clock=clock)
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


async def connect(port: int, response_timeout: float = TIMEOUT) -> Client:
    client = Client("127.0.0.1", port=port, timeout=response_timeout, retries=0, reconnect_delay=0)
    client.set_max_no_responses(1000)  # keep the connection across silent units
    assert await client.connect()
    return client


@pytest.fixture
async def client(server: PlantServer) -> AsyncIterator[Client]:
    c = await connect(server.port)
    try:
        yield c
    finally:
        c.close()


async def read_collector(client: Client, unit: int) -> dict[str, float]:
    rr = await client.read_input_registers(0, count=11, device_id=unit)
    assert not rr.isError(), rr
    r = rr.registers
    f32, u16, i16, u32 = (
        Client.DATATYPE.FLOAT32,
        Client.DATATYPE.UINT16,
        Client.DATATYPE.INT16,
        Client.DATATYPE.UINT32,
    )
    conv = Client.convert_from_registers
    return {
        "hopper_temp": float(conv(r[0:2], f32)),  # type: ignore[arg-type]
        "diff_pressure": float(conv(r[2:4], f32, word_order="little")),  # type: ignore[arg-type]
        "inlet_temp": float(conv(r[4:5], i16)) * 0.1,  # type: ignore[arg-type]
        "outlet_temp": float(conv(r[5:6], i16)) * 0.1,  # type: ignore[arg-type]
        "pulse_pressure": float(conv(r[6:7], u16)) * 0.001,  # type: ignore[arg-type]
        "fan_running": float(conv(r[7:8], u16)),  # type: ignore[arg-type]
        "airlock_state": float(conv(r[8:9], u16)),  # type: ignore[arg-type]
        "spark_count": float(conv(r[9:11], u32, word_order="little")),  # type: ignore[arg-type]
    }


# --- values ----------------------------------------------------------------------------------


async def test_demo_units_read_in_range(server: PlantServer, client: Client) -> None:
    for unit in (1, 2):
        v = await read_collector(client, unit)
        assert 35.0 <= v["hopper_temp"] <= 40.0  # the smoulder starts at 10 s
        assert 880.0 <= v["diff_pressure"] <= 1320.0
        assert 24.0 <= v["inlet_temp"] <= 26.0
        assert 26.0 <= v["outlet_temp"] <= 28.0
        assert 0.50 <= v["pulse_pressure"] <= 0.65
        assert (v["fan_running"], v["airlock_state"], v["spark_count"]) == (1, 1, 0)
    assert server.reads[1] >= 1 and server.reads[2] >= 1


async def test_values_follow_the_real_clock(client: Client) -> None:
    first = (await client.read_input_registers(0, count=11, device_id=1)).registers
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        now = (await client.read_input_registers(0, count=11, device_id=1)).registers
        if now != first:
            return
    pytest.fail("registers did not change within 3 s")


async def test_smoulder_over_modbus(clocked: PlantServer, clock: FakeClock) -> None:
    c = await connect(clocked.port)
    try:
        temps = {}
        for t in (0.0, 20.0, 40.0, 60.0, 120.0):
            clock.t = t
            temps[t] = (await read_collector(c, 1))["hopper_temp"]
            assert 35.0 <= (await read_collector(c, 2))["hopper_temp"] <= 40.0
        assert temps[0.0] < 40.0 < temps[20.0] < 60.0 < temps[40.0] < 70.0 < temps[60.0]
        assert 82.0 <= temps[120.0] <= 88.0
    finally:
        c.close()


async def test_bench_holding_registers_change(clocked: PlantServer, clock: FakeClock) -> None:
    c = await connect(clocked.port)
    try:
        snaps = []
        for t in (0.0, 1.0, 5.0):
            clock.t = t
            rr = await c.read_holding_registers(0, count=20, device_id=2)
            assert not rr.isError(), rr
            assert len(rr.registers) == 20
            snaps.append(rr.registers)
        assert snaps[0] != snaps[1] != snaps[2]
        assert [s[0] for s in snaps] == [0, 1, 5]  # register 0 counts seconds
        rr = await c.read_holding_registers(0, count=21, device_id=2)
        assert rr.isError() and rr.exception_code == 2  # past the configured registers
    finally:
        c.close()


async def test_out_of_map_and_writes_are_refused(client: Client) -> None:
    rr = await client.read_input_registers(5, count=7, device_id=1)
    assert rr.isError() and rr.exception_code == 2
    rr = await client.write_register(0, 5, device_id=1)
    assert rr.isError() and rr.exception_code == 1


# --- absent units and faults ------------------------------------------------------------------


async def test_unknown_unit_does_not_answer(server: PlantServer, client: Client) -> None:
    t0 = time.monotonic()
    with pytest.raises(ModbusIOException):
        await client.read_input_registers(0, count=11, device_id=9)
    assert time.monotonic() - t0 >= TIMEOUT * 0.9
    assert server.dropped == 1
    # the connection still serves the units that are there
    assert 35.0 <= (await read_collector(client, 1))["hopper_temp"] <= 40.0


async def test_fault_exception_code(server: PlantServer, client: Client) -> None:
    server.set_fault(2, exception=2)
    rr = await client.read_input_registers(0, count=11, device_id=2)
    assert rr.isError() and rr.exception_code == 2
    await read_collector(client, 1)  # unit 1 is not affected
    server.set_fault(2, Fault(exception=6))
    rr = await client.read_holding_registers(0, count=20, device_id=2)
    assert rr.isError() and rr.exception_code == 6
    server.clear_fault(2)
    await read_collector(client, 2)


async def test_fault_no_answer_times_out(server: PlantServer, client: Client) -> None:
    server.set_fault(2, no_answer=True)
    with pytest.raises(ModbusIOException):
        await client.read_input_registers(0, count=11, device_id=2)
    await read_collector(client, 1)
    server.clear_fault()
    assert server.faults == {}
    await read_collector(client, 2)


async def test_fault_delay(server: PlantServer) -> None:
    c = await connect(server.port, response_timeout=2.0)
    try:
        server.set_fault(1, delay=0.2)
        t0 = time.monotonic()
        await read_collector(c, 1)
        assert time.monotonic() - t0 >= 0.2
        server.set_fault(1, Fault(delay=0.1, exception=4))
        t0 = time.monotonic()
        rr = await c.read_input_registers(0, count=11, device_id=1)
        assert rr.isError() and rr.exception_code == 4
        assert time.monotonic() - t0 >= 0.1
    finally:
        c.close()


async def test_faults_given_at_construction() -> None:
    quiet_pymodbus()
    async with PlantServer(Plant(), faults={1: Fault(no_answer=True)}) as srv:
        c = await connect(srv.port)
        try:
            with pytest.raises(ModbusIOException):
                await c.read_input_registers(0, count=11, device_id=1)
            await read_collector(c, 2)
        finally:
            c.close()


def test_fault_specs() -> None:
    assert parse_fault_arg("2:no_answer") == (2, Fault(no_answer=True))
    assert parse_fault_arg("2:exception=2") == (2, Fault(exception=2))
    assert parse_fault_arg("7:delay=0.5,exception=6") == (7, Fault(delay=0.5, exception=6))
    assert not parse_fault_arg("1:none")[1].active
    for bad in ("x:no_answer", "2", "0:no_answer", "2:exception=99", "2:delay=-1", "2:boom"):
        with pytest.raises(ValueError):
            parse_fault_arg(bad)


async def test_two_servers_stop_independently() -> None:
    quiet_pymodbus()
    a, b = PlantServer(Plant()), PlantServer(Plant())
    await a.start()
    await b.start()
    await a.stop()
    c = await connect(b.port)
    try:
        await read_collector(c, 1)
    finally:
        c.close()
        await b.stop()


# --- the CLI ----------------------------------------------------------------------------------


async def start_cli(*args: str) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "firmware_sim.cli",
        "serve",
        "--port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        line = (await asyncio.wait_for(proc.stdout.readline(), 15.0)).decode()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        pytest.fail("dust-sim serve printed no start line within 15 s")
    return proc, line


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_cli_serves_and_stops_cleanly(sig: signal.Signals) -> None:
    proc, line = await start_cli("--fault", "2:exception=3")
    try:
        assert line.startswith("dust-sim: serving demo plant (units 1,2) on 127.0.0.1:")
        assert "scenario smoulder" in line and "faster than a real smoulder" in line
        match = re.search(r"127\.0\.0\.1:(\d+);", line)
        assert match
        c = await connect(int(match.group(1)))
        try:
            await read_collector(c, 1)
            rr = await c.read_input_registers(0, count=11, device_id=2)
            assert rr.isError() and rr.exception_code == 3
        finally:
            c.close()
    finally:
        proc.send_signal(sig)
        _, err = await asyncio.wait_for(proc.communicate(), 15.0)
    assert proc.returncode == 0, err.decode()


async def test_cli_bench_plant() -> None:
    proc, line = await start_cli("--bench-devices", "50", "--bench-registers", "20")
    try:
        assert "bench plant (units 1..50, 20 holding registers each)" in line
        assert "scenario none" in line
        match = re.search(r"127\.0\.0\.1:(\d+);", line)
        assert match
        c = await connect(int(match.group(1)))
        try:
            for unit in (1, 50):
                rr = await c.read_holding_registers(0, count=20, device_id=unit)
                assert not rr.isError() and len(rr.registers) == 20
            with pytest.raises(ModbusIOException):
                await c.read_holding_registers(0, count=20, device_id=51)
        finally:
            c.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.communicate(), 15.0)
    assert proc.returncode == 0
