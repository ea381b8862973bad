"""Footprint: steady-state CPU and RSS of the agent at 1 Hz for 100, 1,000 and 5,000 points
against the simulator's bench plant, and the start-up time to the first poll; next to the
floors measured in the same run (bench/floors.py): the RSS of a process that only imports the
agent's libraries, and the CPU of a bare pymodbus loop reading the same devices in one tick.

    .venv/bin/python bench/footprint.py [--points 100 1000 5000] [--seconds 60] [--runs 1]

Points = devices x registers (20 a device, up to 200 devices). "First data" is the first
telemetry at the broker, an upper bound of the first poll.
Medians are over the CPU windows (and over runs for the start-up times). CPU comes from
/proc/PID/task/*/schedstat (ns), not from 10 ms ticks. Nothing is asserted.
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

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.e2e import peak_rss_mib  # noqa: E402
from bench.floors import LoopFloor, import_floor_mib, sample_cpu  # noqa: E402
from firmware_sim.harness import LOOPBACK, Broker  # noqa: E402
from tests.e2e import Collector, Proc, bench_config, wait_for  # noqa: E402

BIN = Path(sys.executable).parent
REGISTERS = 20  # per device, up to MAX_DEVICES devices; then more registers per device
MAX_DEVICES = 200


def first_poll_done(state: Path) -> bool:
    try:
        doc = orjson.loads((state / "status.json").read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return False
    return any(b.get("cycles", 0) > 0 for b in doc.get("buses", []))


def one_run(points: int, args: argparse.Namespace) -> dict[str, float]:
    devices = min(MAX_DEVICES, max(1, points // REGISTERS))
    registers = points // devices
    with tempfile.TemporaryDirectory(prefix="dust-fp-") as d, Broker(Path(d) / "broker") as br:
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
                str(devices),
                "--bench-registers",
                str(registers),  # 25 at 5,000 points (was REGISTERS: reads beyond the map)
            ],
            tmp / "sim.log",
        )
        port = int(sim.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1))
        collector = Collector(br.port, client_id="fp-collector")
        collector.start()
        cfg = bench_config(tmp, port, br.port, devices, registers)
        t0 = time.monotonic()
        agent = Proc(
            [str(BIN / "dust-agent"), "run", "-c", str(cfg)],
            tmp / "agent.log",
            env={"DUST_AGENT_CLOCK_SYNC": "yes"},
        )
        try:
            # status.json is written every 5 s: take the first "Frame" from the log instead,
            # falling back to the snapshot; the telemetry at the broker bounds it from above.
            wait_for(lambda: len(collector.stream("telemetry")) > 0, 60, "first telemetry")
            first_data = time.monotonic() - t0
            wait_for(lambda: first_poll_done(tmp / "state"), 60, "first poll in status.json")
            time.sleep(args.warmup)
            sample = sample_cpu(agent.proc.pid, args.seconds, args.window)
            peak = peak_rss_mib(agent.proc.pid)
        finally:
            agent.stop(signal.SIGTERM)
            collector.stop()
        try:  # the floor: the same devices and registers read by a bare pymodbus loop
            with LoopFloor(port, devices, registers, 1.0) as fl:
                time.sleep(args.warmup)
                floor = sample_cpu(fl.pid, args.seconds, args.window)
        finally:
            sim.stop(signal.SIGTERM)
    return {
        "points": devices * registers,
        "cpu_pct": statistics.median(sample.windows),
        "rss_mib": sample.rss_median,
        "floor_cpu_pct": statistics.median(floor.windows),
        "peak_rss_mib": peak,
        "first_data_s": first_data,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--points", type=int, nargs="+", default=[100, 1000, 5000])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("BENCH_SECONDS", "60")))
    ap.add_argument("--window", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=1)
    args = ap.parse_args()
    print(
        f"dust-agent footprint at 1 Hz ({args.seconds:.0f} s per run after {args.warmup:.0f} s"
        f" warm-up, {args.runs} run(s); medians)"
    )
    floor_rss = import_floor_mib()
    print(f"  floor: a process that only imports the agent's libraries: RSS {floor_rss:.1f} MiB")
    print(
        f"  {'points':>6}  {'CPU % of a core':>15}  {'loop floor':>10}  {'ratio':>5}"
        f"  {'RSS MiB':>8}  {'/ floor':>7}  {'peak RSS':>8}  {'start to first data':>19}"
    )
    for n in args.points:
        runs = [one_run(n, args) for _ in range(args.runs)]
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(
            f"  {med['points']:>6.0f}  {med['cpu_pct']:>15.2f}  {med['floor_cpu_pct']:>10.2f}"
            f"  {med['cpu_pct'] / med['floor_cpu_pct']:>5.2f}  {med['rss_mib']:>8.1f}"
            f"  {med['rss_mib'] / floor_rss:>7.2f}  {med['peak_rss_mib']:>8.1f}"
            f"  {med['first_data_s']:>17.2f} s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
