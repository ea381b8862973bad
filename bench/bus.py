"""Bus benchmark: 8 devices on one RS-485 line (socat pty pair, dust-sim holding every reply for
its wire time) at 9600 and 19200 baud, polled by the agent's BusPoller and RTU driver.

Prints, per baud: achieved transactions/s against the theoretical maximum from frame lengths,
character time and 3.5-character gaps (target ratio >= 0.85), and the median cycle time of the
8 healthy devices without and with a 9th, dead device on the line once it is quarantined
(target: within 10 %).

    .venv/bin/python bench/bus.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
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
from agent.source.poller import BusPoller  # noqa: E402
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


async def run(path: str, baud: int, units: range, seconds: float) -> tuple[float, list[float]]:
    bus = BusSpec(
        "line", "rtu", "", 0, timeout=0.1, retries=0, poll_interval=1.0,
        serial_port=path, baud=baud, quarantine_after=3, quarantine_first=5.0,
        quarantine_max=60.0,
    )  # fmt: skip
    (plan,) = compile_plan(points(units), [bus])
    poller = BusPoller(plan, make_source(bus), _noop)
    cycles: list[float] = []
    await poller.source.connect()
    for _ in range(3):  # warm up; lets a dead unit reach quarantine
        await poller.poll_once()
    reads0, t0 = poller.stats.reads_ok, time.monotonic()
    while time.monotonic() - t0 < seconds:
        c0 = time.monotonic()
        await poller.poll_once()
        cycles.append(time.monotonic() - c0)
    tps = (poller.stats.reads_ok - reads0) / (time.monotonic() - t0)
    await poller.source.close()
    return tps, cycles


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
    finally:
        socat.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
