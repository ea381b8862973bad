"""Status-page benchmark: the agent's CPU at 1,000 points (50 devices x 20 registers at 1 Hz)
with the page closed and with one client loading the overview every second, and its RSS with
the page enabled and without it.

    .venv/bin/python bench/web.py [--devices 50] [--registers 20] [--window 10] [--rounds 3]

One agent runs with [web] enabled; closed and open windows alternate (`--rounds` pairs of
`--window` seconds) so drift on a shared machine hits both alike; the figures are medians.
A second agent with [web] off gives the RSS (and CPU) without the page. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.e2e import cpu_s, peak_rss_mib  # noqa: E402
from firmware_sim.harness import LOOPBACK, Broker, dump_toml  # noqa: E402
from tests.e2e import BIN, Proc, bench_config, wait_for  # noqa: E402


def with_web(cfg: Path, enabled: bool) -> None:
    data = tomllib.loads(cfg.read_text())
    data["web"] = {"enabled": enabled, "port": 0}
    cfg.write_text(dump_toml(data))


class Client(threading.Thread):
    """Loads `url` once a second (a browser left open with a 1 s refresh) until stopped."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.loads, self.bytes = url, threading.Event(), 0, 0

    def run(self) -> None:
        while not self.stop.wait(1.0):
            with urllib.request.urlopen(self.url, timeout=5) as resp:
                self.bytes += len(resp.read())
            self.loads += 1


def window_cpu(proc: psutil.Process, seconds: float) -> float:
    c0, t0 = cpu_s(proc), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_s(proc) - c0) / (time.monotonic() - t0)


def run_agent(tmp: Path, cfg: Path, name: str) -> Proc:
    agent = Proc([str(BIN / "dust-agent"), "run", "-c", str(cfg)], tmp / f"{name}.log")
    return agent


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=50)
    ap.add_argument("--registers", type=int, default=20)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warmup", type=float, default=8.0)
    args = ap.parse_args()
    points = args.devices * args.registers
    with (
        tempfile.TemporaryDirectory(prefix="dust-bench-web-") as d,
        Broker(Path(d) / "broker") as broker,
    ):
        tmp = Path(d)
        sim_args = ["--bench-devices", str(args.devices), "--bench-registers", str(args.registers)]
        sim = Proc(
            [str(BIN / "dust-sim"), "serve", "--host", LOOPBACK, "--port", "0", *sim_args],
            tmp / "sim.log",
        )
        port = int(sim.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1))
        try:
            on = measure_on(tmp, port, broker.port, args)
            off = measure_off(tmp, port, broker.port, args)
        finally:
            sim.stop(signal.SIGTERM)
    closed, opened, rss_on, loads, size = on
    cpu_off, rss_off = off
    print(
        f"dust-agent status-page benchmark: {points} points at 1 Hz, {args.rounds} x "
        f"{args.window:.0f} s windows each (medians), after {args.warmup:.0f} s warm-up"
    )
    print(f"  agent CPU, [web] off:                      {cpu_off:.2f} % of one core")
    print(f"  agent CPU, page enabled, closed:            {statistics.median(closed):.2f} %")
    print(
        f"  agent CPU, one client loading / every 1 s:  {statistics.median(opened):.2f} %"
        f"  (+{statistics.median(opened) - statistics.median(closed):.2f} % over closed;"
        f" {loads} loads of {size / max(loads, 1) / 1024:.0f} KiB)"
    )
    print(f"  agent RSS: [web] off {rss_off:.1f} MiB, page enabled and used {rss_on:.1f} MiB")
    return 0


def measure_on(
    tmp: Path, sim_port: int, broker_port: int, args: argparse.Namespace
) -> tuple[list[float], list[float], float, int, int]:
    cfg = bench_config(tmp, sim_port, broker_port, args.devices, args.registers)
    with_web(cfg, True)
    agent = run_agent(tmp, cfg, "agent-web")
    try:
        url = agent.wait_log(r"status page on (http://\S+)", 30).group(1)
        proc = psutil.Process(agent.proc.pid)
        time.sleep(args.warmup)
        closed: list[float] = []
        opened: list[float] = []
        client = Client(url)
        loads = size = 0
        for _ in range(args.rounds):
            closed.append(window_cpu(proc, args.window))
            client = Client(url)
            client.start()
            opened.append(window_cpu(proc, args.window))
            client.stop.set()
            client.join()
            loads, size = loads + client.loads, size + client.bytes
        rss = max(peak_rss_mib(agent.proc.pid), proc.memory_info().rss / 2**20)
    finally:
        agent.stop(signal.SIGTERM)
    return closed, opened, rss, loads, size


def measure_off(
    tmp: Path, sim_port: int, broker_port: int, args: argparse.Namespace
) -> tuple[float, float]:
    (tmp / "off").mkdir(exist_ok=True)
    cfg = bench_config(tmp / "off", sim_port, broker_port, args.devices, args.registers)
    with_web(cfg, False)
    agent = run_agent(tmp, cfg, "agent-off")
    try:
        state = tmp / "off" / "state"
        wait_for((state / "status.json").exists, 30, "the agent's first status")
        proc = psutil.Process(agent.proc.pid)
        time.sleep(args.warmup)
        cpu = statistics.median(window_cpu(proc, args.window) for _ in range(args.rounds))
        rss = peak_rss_mib(agent.proc.pid)
    finally:
        agent.stop(signal.SIGTERM)
    return cpu, rss


if __name__ == "__main__":
    raise SystemExit(main())
