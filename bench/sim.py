"""Simulator benchmark: `dust-sim serve --config` with 200 dry collectors (4 Modbus TCP buses of
50 units, the dry_collector profile: one 11-register FC4 block each), read by 4 pymodbus
clients, one per bus, as a poller would.

Prints, for a paced load (every device read once a second, as the agent polls) and for a flat-out
load: requests answered per second, the simulator's CPU (% of one core, from its process
times) and CPU per request, and the client-side round trip (median, p99). The simulator is not
the bottleneck when the paced load costs it a small fraction of a core and the flat-out rate is
many times the 200 requests/s that 200 devices at 1 Hz need.

    .venv/bin/python bench/sim.py [--devices 200] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from pymodbus.client import AsyncModbusTcpClient

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from firmware_sim.harness import dump_toml  # noqa: E402

BIN = Path(sys.executable).parent
PER_BUS = 50


def site(devices: int, tmp: Path) -> Path:
    buses = (devices + PER_BUS - 1) // PER_BUS
    data: dict[str, Any] = {
        "profiles_dir": str(REPO / "config" / "profiles"),
        "site": {"enterprise_code": "130100000001", "gateway_id": "BENCH"},
        "buses": [
            {"name": f"b{i}", "type": "tcp", "host": "127.0.0.1", "port": 502} for i in range(buses)
        ],
        "devices": [
            {
                "name": f"DC-{d}",
                "bus": f"b{d // PER_BUS}",
                "unit": d % PER_BUS + 1,
                "profile": "dry_collector",
            }
            for d in range(devices)
        ],
        "uplink": {"host": "127.0.0.1", "port": 1883},
        "storage": {"dir": str(tmp / "state")},
    }
    path = tmp / "bench-site.toml"
    path.write_text(dump_toml(data))
    return path


async def load(port: int, units: list[int], seconds: float, paced: bool, rtts: list[float]) -> int:
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
    await client.connect()
    done = 0
    t_end = time.monotonic() + seconds
    next_cycle = time.monotonic()
    try:
        while time.monotonic() < t_end:
            for u in units:
                t0 = time.perf_counter()
                rr = await client.read_input_registers(0, count=11, device_id=u)
                rtts.append(time.perf_counter() - t0)
                if rr.isError():
                    raise RuntimeError(f"unit {u}: {rr}")
                done += 1
            if paced:
                next_cycle += 1.0
                await asyncio.sleep(max(0.0, next_cycle - time.monotonic()))
    finally:
        client.close()
    return done


async def phase(
    ports: list[int], units: list[list[int]], seconds: float, paced: bool, sim: psutil.Process
) -> dict[str, float]:
    rtts: list[float] = []
    cpu0 = sim.cpu_times()
    t0 = time.monotonic()
    counts = await asyncio.gather(
        *(load(p, u, seconds, paced, rtts) for p, u in zip(ports, units, strict=True))
    )
    wall = time.monotonic() - t0
    cpu1 = sim.cpu_times()
    cpu = (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)
    n = sum(counts)
    rtts.sort()
    return {
        "rps": n / wall,
        "cpu_pct": 100 * cpu / wall,
        "us_per_req": 1e6 * cpu / max(n, 1),
        "rtt_ms_p50": 1e3 * statistics.median(rtts),
        "rtt_ms_p99": 1e3 * rtts[int(0.99 * (len(rtts) - 1))],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--seconds", type=float, default=8.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        cfg = site(args.devices, Path(d))
        proc = subprocess.Popen(
            [str(BIN / "dust-sim"), "serve", "--config", str(cfg), "--local"],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None
            served = json.loads(proc.stdout.readline())["buses"]
            names = sorted(served, key=lambda n: int(n[1:]))
            ports = [int(served[n]["port"]) for n in names]
            units = [
                [u % PER_BUS + 1 for u in range(args.devices) if u // PER_BUS == i]
                for i in range(len(names))
            ]
            sim = psutil.Process(proc.pid)
            for label, paced in (("paced, 1 Hz per device", True), ("flat out", False)):
                r = asyncio.run(phase(ports, units, args.seconds, paced, sim))
                print(
                    f"dust-sim, {args.devices} devices on {len(ports)} TCP buses, {label}: "
                    f"{r['rps']:.0f} requests/s, simulator CPU {r['cpu_pct']:.1f} % of a core "
                    f"({r['us_per_req']:.0f} us/request), round trip p50 "
                    f"{r['rtt_ms_p50']:.2f} ms, p99 {r['rtt_ms_p99']:.2f} ms"
                )
        finally:
            proc.terminate()
            proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
