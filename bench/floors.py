"""Floors for the footprint benchmarks, measured in the same run as the agent's figures.

- `import_floor_mib()`: RSS of a Python process that only imports the agent's libraries
  (numpy, pymodbus, aiomqtt, orjson, msgspec, tenacity, sqlite3) and runs an event loop;
- `LoopFloor`: a bare pymodbus loop (one client, one tick reading every device in turn) in
  its own process, whose CPU is sampled like the agent's:

    .venv/bin/python bench/floors.py loop --port P --devices 20 --registers 17 [--interval 1]

CPU is read from /proc/PID/task/*/schedstat (ns, summed over threads), not from the 10 ms
ticks of /proc/PID/stat: at 0.3 % of a core a 5 s window holds only 15 ms of CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LIBRARIES = "numpy, pymodbus.client, aiomqtt, orjson, msgspec, tenacity, sqlite3, asyncio"


def cpu_ns(pid: int) -> int:
    """CPU time of every live thread of `pid`, in ns."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):
            continue  # the thread ended meanwhile
    return total


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclass
class CpuSample:
    """CPU % of one core per window, and RSS (MiB) at the end of each window."""

    windows: list[float]
    rss: list[float]
    seconds: float

    @property
    def mean(self) -> float:
        return statistics.fmean(self.windows) if self.windows else float("nan")

    @property
    def p95(self) -> float:
        return percentile(self.windows, 95)

    @property
    def rss_median(self) -> float:
        return statistics.median(self.rss) if self.rss else float("nan")


def percentile(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def sample_cpu(pid: int, seconds: float, window: float) -> CpuSample:
    """Sample `pid` for `seconds` in windows of `window` seconds."""
    windows: list[float] = []
    rss: list[float] = []
    t0 = last_t = time.monotonic()
    last = cpu_ns(pid)
    while last_t - t0 < seconds - 1e-3:
        time.sleep(min(window, seconds - (last_t - t0)))
        now_t, now = time.monotonic(), cpu_ns(pid)
        windows.append(100 * (now - last) / 1e9 / (now_t - last_t))
        rss.append(rss_mib(pid))
        last, last_t = now, now_t
    return CpuSample(windows, rss, last_t - t0)


def import_floor_mib() -> float:
    """RSS (MiB) of a process that imports the agent's libraries and runs an event loop."""
    code = (
        f"import {LIBRARIES}\n"
        "asyncio.run(asyncio.sleep(0.05))\n"
        "from pathlib import Path\n"
        "print([l for l in Path('/proc/self/status').read_text().splitlines()"
        " if l.startswith('VmRSS:')][0].split()[1])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip()) / 1024


class LoopFloor:
    """The bare pymodbus loop as a child process (`with LoopFloor(...) as f: f.pid`)."""

    def __init__(self, port: int, devices: int, registers: int, interval: float) -> None:
        self.args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "loop",
            "--port",
            str(port),
            "--devices",
            str(devices),
            "--registers",
            str(registers),
            "--interval",
            str(interval),
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def __enter__(self) -> LoopFloor:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        self.proc.stdout.readline()  # "connected": imports and connect are done
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(10)


async def bare_loop(port: int, devices: int, registers: int, interval: float) -> None:
    """Read `registers` holding registers of units 1..devices, one tick per interval."""
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1.0, retries=0)
    if not await client.connect():
        raise SystemExit(f"floor loop: cannot connect to 127.0.0.1:{port}")
    print("connected", flush=True)
    slot = time.monotonic()
    while True:
        for unit in range(1, devices + 1):
            await client.read_holding_registers(0, count=registers, device_id=unit)
        slot += interval
        await asyncio.sleep(max(0.0, slot - time.monotonic()))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    loop = sub.add_parser("loop", help="run the bare pymodbus loop until terminated")
    loop.add_argument("--port", type=int, required=True)
    loop.add_argument("--devices", type=int, default=20)
    loop.add_argument("--registers", type=int, default=17)
    loop.add_argument("--interval", type=float, default=1.0)
    sub.add_parser("imports", help="print the import floor's RSS")
    args = ap.parse_args()
    if args.cmd == "imports":
        print(f"{import_floor_mib():.1f} MiB")
        return 0
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    asyncio.run(bare_loop(args.port, args.devices, args.registers, args.interval))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
