"""Bus benchmark: 8 devices on one RS-485 line (socat pty pair, dust-sim holding every reply for
its wire time) at 9600 and 19200 baud, polled by the agent's BusPoller and RTU driver.

Prints, per baud: achieved transactions/s against the theoretical maximum from frame lengths,
character time and 3.5-character gaps (target ratio >= 0.85), and the median cycle time of the
8 healthy devices without and with a 9th, dead device on the line once it is quarantined
(target: within 10 %). Then the same 8 devices served by pymodbus's own RTU slave
(`ModbusSerialServer`), which answers unpaced, far sooner than the wire: every read must
succeed (a master that judged replies by the clock would discard them all).

    .venv/bin/python bench/bus.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.core.model import BusSpec, Frame, PointSpec  # noqa: E402
from agent.source.plan import compile_plan  # noqa: E402
from agent.source.poller import BusPoller, PollerStats  # noqa: E402
from drivers.registry import make_source  # noqa: E402
from drivers.rtu_frame import FC_READ_HOLDING, LineTiming  # noqa: E402

DEVICES = 8
REGISTERS = 10
BIN = Path(sys.executable).parent


def points(units: range) -> list[PointSpec]:
    out: list[PointSpec] = []
    for u in units:
        for a in range(REGISTERS):
            out.append(
                PointSpec(
                    index=len(out), device=f"D{u}", key=f"r{a}", code=f"D{u}.r{a}",
                    name_zh="", name_en="", bus="line", unit_id=u, table="holding",
                    address=a, type="uint16", order="ABCD", scale=1.0, offset=0.0, unit="",
                    kind="generic", rule=None,
                )
            )  # fmt: skip
    return out


async def _noop(frame: Frame) -> None:
    return None


POLLER_STATS: list[PollerStats] = []


async def run(
    path: str, baud: int, units: range, seconds: float, warmup: int = 3
) -> tuple[float, list[float]]:
    bus = BusSpec(
        "line", "rtu", "", 0, timeout=0.1, retries=0, poll_interval=1.0,
        serial_port=path, baud=baud, quarantine_after=3, quarantine_first=5.0,
        quarantine_max=60.0,
    )  # fmt: skip
    (plan,) = compile_plan(points(units), [bus])
    poller = BusPoller(plan, make_source(bus), _noop)
    cycles: list[float] = []
    await poller.source.connect()
    for _ in range(warmup):  # warm up; lets a dead unit reach quarantine
        await poller.poll_once()
    reads0, t0 = poller.stats.reads_ok, time.monotonic()
    while time.monotonic() - t0 < seconds:
        c0 = time.monotonic()
        await poller.poll_once()
        cycles.append(time.monotonic() - c0)
    tps = (poller.stats.reads_ok - reads0) / (time.monotonic() - t0)
    await poller.source.close()
    POLLER_STATS.append(poller.stats)
    return tps, cycles


async def run_pymodbus(a: str, b: str, seconds: float) -> tuple[float, int, int]:
    """(transactions/s, reads ok, failed reads) against pymodbus's RTU slave on the pty."""
    from pymodbus.framer import FramerType
    from pymodbus.server import ModbusSerialServer
    from pymodbus.simulator import DataType, SimData, SimDevice

    def bits() -> list[SimData]:
        return [SimData(0, 1, [False] * 16, DataType.BITS)]

    devices = [
        SimDevice(
            id=u,
            simdata=(
                bits(),
                bits(),
                [SimData(0, 1, list(range(REGISTERS)), DataType.REGISTERS)],
                [SimData(0, 1, [0], DataType.REGISTERS)],
            ),
        )
        for u in range(1, DEVICES + 1)
    ]
    server = ModbusSerialServer(devices, port=a, framer=FramerType.RTU, baudrate=19200)
    await server.serve_forever(background=True)
    try:
        tps, _ = await run(b, 19200, range(1, DEVICES + 1), seconds, warmup=0)
        return tps, POLLER_STATS[-1].reads_ok, POLLER_STATS[-1].timeouts
    finally:
        await server.shutdown()  # type: ignore[no-untyped-call]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="bench-bus-")
    a, b = os.path.join(tmp, "sim"), os.path.join(tmp, "agent")
    socat = subprocess.Popen(
        ["socat", f"pty,raw,echo=0,link={a}", f"pty,raw,echo=0,link={b}"],
        stderr=subprocess.DEVNULL,
    )
    try:
        while not (os.path.exists(a) and os.path.exists(b)):
            time.sleep(0.01)
        for baud in (9600, 19200):
            sim = subprocess.Popen(
                [str(BIN / "dust-sim"), "serve", "--rtu", a, "--baud", str(baud),
                 "--bench-devices", str(DEVICES), "--bench-registers", str(REGISTERS)],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
            )  # fmt: skip
            assert sim.stdout is not None
            sim.stdout.readline()  # the start line
            try:
                tps, healthy = asyncio.run(run(b, baud, range(1, DEVICES + 1), args.seconds))
                _, with_dead = asyncio.run(run(b, baud, range(1, DEVICES + 2), args.seconds))
            finally:
                sim.terminate()
                sim.wait()
            timing = LineTiming(baud)
            ideal = 1.0 / timing.transaction_s(FC_READ_HOLDING, REGISTERS)
            h, d = statistics.median(healthy), statistics.median(with_dead)
            print(
                f"{baud:>5} baud, {DEVICES} devices x {REGISTERS} registers (FC3, 8+25 bytes, "
                f"char {timing.char_s * 1e3:.3f} ms, 3.5-char gap {timing.gap_s * 1e3:.2f} ms):"
            )
            print(
                f"  transactions/s: {tps:.1f} achieved vs {ideal:.1f} theoretical max "
                f"-> ratio {tps / ideal:.3f} (target >= 0.85)"
            )
            print(
                f"  healthy cycle, median: {h * 1e3:.1f} ms without a dead device, "
                f"{d * 1e3:.1f} ms with one (quarantined) -> {100 * (d / h - 1):+.1f} % "
                f"(target within 10 %); with one: mean {statistics.fmean(with_dead) * 1e3:.1f} ms,"
                f" max {max(with_dead) * 1e3:.1f} ms over {len(with_dead)} cycles (the max is "
                "a quarantine probe)"
            )
        logging.getLogger("pymodbus.logging").setLevel(logging.CRITICAL)
        tps, ok, failed = asyncio.run(run_pymodbus(a, b, min(args.seconds, 3.0)))
        print(
            f"pymodbus's RTU slave, unpaced, {DEVICES} devices x {REGISTERS} registers: "
            f"{ok} reads ok, {failed} timed out ({tps:.0f} transactions/s; a pty has no wire "
            "time, so no ratio)"
        )
    finally:
        socat.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
