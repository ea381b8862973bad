"""End-to-end benchmark: the agent polls N simulated devices × M registers at 1 Hz against a
local mosquitto and we print its CPU seconds per 1000 points and its peak RSS.

    .venv/bin/python bench/e2e.py [--devices 50] [--registers 20] [--seconds 60]

Figures are medians over the measured seconds where that makes sense; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from firmware_sim.harness import LOOPBACK, Broker  # noqa: E402
from tests.e2e import Collector, Proc, bench_config, wait_for  # noqa: E402

BIN = Path(sys.executable).parent


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class Figures:
    first_data: float  # seconds from agent start to the first telemetry at the broker
    elapsed: float
    cpu: float  # agent CPU seconds while measuring
    window_cpu: list[float]  # agent CPU seconds per window
    window: float
    sim_cpu: float
    rss_peak: float
    rss_now: float
    delivered: int


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system)


def delivered(collector: Collector) -> int:
    return sum(len(b["records"]["seq"]) for b in collector.stream("telemetry"))


def measure(agent: Proc, sim: Proc, collector: Collector, t_start: float, args: Any) -> Figures:
    wait_for(lambda: len(collector.stream("telemetry")) > 0, 30, "first telemetry")
    first_data = time.monotonic() - t_start
    time.sleep(args.warmup)  # imports done, caches warm, first cycles settled
    proc, sim_proc = psutil.Process(agent.proc.pid), psutil.Process(sim.proc.pid)
    c0, s0, n0, t0 = cpu_s(proc), cpu_s(sim_proc), delivered(collector), time.monotonic()
    windows: list[float] = []
    last = c0
    while time.monotonic() - t0 < args.seconds - 1e-3:
        time.sleep(min(args.window, args.seconds - (time.monotonic() - t0)))
        now = cpu_s(proc)
        windows.append(now - last)
        last = now
    return Figures(
        first_data=first_data,
        elapsed=time.monotonic() - t0,
        cpu=cpu_s(proc) - c0,
        window_cpu=windows,
        window=args.window,
        sim_cpu=cpu_s(sim_proc) - s0,
        rss_peak=peak_rss_mib(agent.proc.pid),
        rss_now=proc.memory_info().rss / 2**20,
        delivered=delivered(collector) - n0,
    )


def report(f: Figures, args: Any) -> None:
    points = args.devices * args.registers
    polled = points * f.elapsed  # at 1 Hz
    per_1000 = [1e6 * c / (points * f.window) for c in f.window_cpu]  # ms per 1000 points
    print(
        f"dust-agent e2e benchmark: {args.devices} devices x {args.registers} registers"
        f" = {points} points at 1 Hz, {f.elapsed:.0f} s measured after {args.warmup:.0f} s warm-up"
    )
    print(f"  start to first telemetry at the broker: {f.first_data:.2f} s")
    print(
        f"  agent CPU: {f.cpu:.2f} s in {f.elapsed:.0f} s"
        f" = {100 * f.cpu / f.elapsed:.2f} % of one core"
    )
    print(
        f"  agent CPU per 1000 points: {1e6 * f.cpu / polled:.2f} ms overall, median of"
        f" {len(per_1000)} windows of {f.window:.0f} s {statistics.median(per_1000):.2f} ms"
        f" (min {min(per_1000):.2f}, max {max(per_1000):.2f})"
    )
    print(f"  agent peak RSS: {f.rss_peak:.1f} MiB (at the end {f.rss_now:.1f} MiB)")
    print(f"  records delivered while measuring: {f.delivered} (expected ~{polled:.0f})")
    print(f"  simulator CPU: {100 * f.sim_cpu / f.elapsed:.2f} % of one core")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--registers", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", "60")))
    ap.add_argument("--window", type=float, default=10.0, help="seconds per CPU sample")
    ap.add_argument("--warmup", type=float, default=5.0)
    args = ap.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="dust-bench-") as d,
        Broker(Path(d) / "broker") as broker,
    ):
        tmp = Path(d)
        sim_args = ["--bench-devices", str(args.devices), "--bench-registers", str(args.registers)]
        sim = Proc(
            [str(BIN / "dust-sim"), "serve", "--host", LOOPBACK, "--port", "0", *sim_args],
            tmp / "sim.log",
        )
        port = int(sim.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1))
        collector = Collector(broker.port, client_id="bench-collector")
        collector.start()
        cfg = bench_config(tmp, port, broker.port, args.devices, args.registers)
        t_start = time.monotonic()
        agent = Proc([str(BIN / "dust-agent"), "run", "-c", str(cfg)], tmp / "agent.log")
        try:
            figures = measure(agent, sim, collector, t_start, args)
        finally:
            agent.stop(signal.SIGTERM)
            sim.stop(signal.SIGTERM)
            collector.stop()
    report(figures, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
