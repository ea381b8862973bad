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
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from firmware_sim.harness import LOOPBACK, Broker, dump_toml  # noqa: E402
from tests.e2e import Collector, Proc, wait_for  # noqa: E402

BIN = Path(sys.executable).parent


def bench_config(tmp: Path, sim_port: int, broker_port: int, devices: int, registers: int) -> Path:
    data = {
        "site": {"enterprise_code": "BENCH", "gateway_id": "GW"},
        "buses": [
            {
                "name": "bench",
                "host": LOOPBACK,
                "port": sim_port,
                "timeout": 1.0,
                "poll_interval": 1.0,
            }
        ],
        "devices": [
            {
                "name": f"D{u:03d}",
                "bus": "bench",
                "unit": u,
                "points": [
                    {
                        "key": f"r{a:02d}",
                        "table": "holding",
                        "address": a,
                        "type": "uint16",
                        "unit": "",
                        "kind": "generic",
                    }
                    for a in range(registers)
                ],
            }
            for u in range(1, devices + 1)
        ],
        "uplink": {"host": LOOPBACK, "port": broker_port},
        "storage": {"dir": str(tmp / "state")},
        "rules_pack": str(REPO / "config" / "rules" / "default.toml"),
    }
    path = tmp / "bench.toml"
    path.write_text(dump_toml(data))
    return path


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--registers", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", 60)))
    ap.add_argument("--warmup", type=float, default=5.0)
    args = ap.parse_args()
    points = args.devices * args.registers

    with (
        tempfile.TemporaryDirectory(prefix="dust-bench-") as d,
        Broker(Path(d) / "broker") as broker,
    ):
        tmp = Path(d)
        sim = Proc(
            [
                str(BIN / "dust-sim"),
                "serve",
                "--host",
                LOOPBACK,
                "--port",
                "0",
                "--bench-devices",
                str(args.devices),
                "--bench-registers",
                str(args.registers),
            ],
            tmp / "sim.log",
        )
        port = int(sim.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1))
        collector = Collector(broker.port, client_id="bench-collector")
        collector.start()
        cfg = bench_config(tmp, port, broker.port, args.devices, args.registers)
        t_start = time.monotonic()
        agent = Proc([str(BIN / "dust-agent"), "run", "-c", str(cfg)], tmp / "agent.log")
        try:
            wait_for(lambda: len(collector.stream("telemetry")) > 0, 30, "first telemetry")
            first_data = time.monotonic() - t_start
            time.sleep(args.warmup)  # let imports, JIT-free warm caches and the first cycles settle
            proc = psutil.Process(agent.proc.pid)
            sim_proc = psutil.Process(sim.proc.pid)
            c0 = proc.cpu_times()
            s0 = sim_proc.cpu_times()
            n0 = sum(len(b["records"]["seq"]) for b in collector.stream("telemetry"))
            t0 = time.monotonic()
            per_second: list[float] = []
            last = proc.cpu_times()
            while time.monotonic() - t0 < args.seconds:
                time.sleep(1.0)
                now = proc.cpu_times()
                per_second.append((now.user + now.system) - (last.user + last.system))
                last = now
            c1 = proc.cpu_times()
            s1 = sim_proc.cpu_times()
            elapsed = time.monotonic() - t0
            n1 = sum(len(b["records"]["seq"]) for b in collector.stream("telemetry"))
            cpu = (c1.user + c1.system) - (c0.user + c0.system)
            sim_cpu = (s1.user + s1.system) - (s0.user + s0.system)
            rss = peak_rss_mib(agent.proc.pid)
            rss_now = proc.memory_info().rss / 2**20
        finally:
            agent.stop(signal.SIGTERM)
            sim.stop(signal.SIGTERM)
            collector.stop()

    polled = points * elapsed  # at 1 Hz
    print(
        f"dust-agent e2e benchmark: {args.devices} devices x {args.registers} registers = {points} points at 1 Hz, "
        f"{elapsed:.0f} s measured after {args.warmup:.0f} s warm-up"
    )
    print(f"  start to first telemetry at the broker: {first_data:.2f} s")
    print(
        f"  agent CPU: {cpu:.2f} s in {elapsed:.0f} s = {100 * cpu / elapsed:.1f} % of one core "
        f"(median per second {1000 * statistics.median(per_second):.1f} ms)"
    )
    print(f"  agent CPU per 1000 points: {1000 * cpu / polled * 1000:.2f} ms")
    print(f"  agent peak RSS: {rss:.1f} MiB (now {rss_now:.1f} MiB)")
    print(f"  records delivered to the broker while measuring: {n1 - n0} (expected ~{polled:.0f})")
    print(f"  simulator CPU: {100 * sim_cpu / elapsed:.1f} % of one core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
