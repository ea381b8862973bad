"""Peer harness (issue 16): the agent against the peer plant, next to floors from the same run.

    .venv/bin/python bench/peer.py [--devices 20] [--interval 1.0] [--seconds 30]
    .venv/bin/python bench/peer.py --interval 0.05        # loss at 50 ms polls

The simulator (`dust-sim serve --peer-devices N`, firmware_sim.peer) puts a per-read sequence
number and the read's wall-clock time (ms) in each unit's 17 holding registers. The agent polls
them (seq, t_ms, 10 values, status: 13 points a device) and publishes to a local mosquitto; a
subscriber stamps each message on arrival and computes, per device reading:

- loss: gaps in seq per device between the first and the last reading seen while measuring;
- latency: arrival at the subscriber minus t_ms (device read to broker delivery).

Printed: agent CPU (mean and p95 of windows), RSS, latency p50/p95/max, start to first
message; and, measured in the same run, the floors (bench/floors.py): a bare pymodbus loop
reading the same devices in one tick at the same interval, and the RSS of a process that only
imports the agent's libraries. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.floors import LoopFloor, import_floor_mib, percentile, sample_cpu  # noqa: E402
from firmware_sim.harness import LOOPBACK, Broker, dump_toml  # noqa: E402
from firmware_sim.peer import PEER_REGISTERS, VALUE_ADDRESS, VALUES  # noqa: E402
from tests.e2e import Proc, wait_for  # noqa: E402

BIN = Path(sys.executable).parent


def _point(key: str, address: int, kind: str = "uint16") -> dict[str, Any]:
    return {"key": key, "table": "holding", "address": address, "type": kind, "unit": ""}


def peer_config(tmp: Path, sim_port: int, broker_port: int, devices: int, interval: float) -> Path:
    points = [_point("seq", 0, "uint32"), _point("t_ms", 2, "uint64")]
    points += [_point(f"v{k}", VALUE_ADDRESS + k) for k in range(VALUES)]
    points.append(_point("status", PEER_REGISTERS - 1))
    data = {
        "site": {"enterprise_code": "PEER", "gateway_id": "GW"},
        "buses": [
            {
                "name": "peer",
                "host": LOOPBACK,
                "port": sim_port,
                "timeout": 1.0,  # a slow reply is waited for (an overrun), not lost
                "poll_interval": interval,
            }
        ],
        "devices": [
            {"name": f"P{u:02d}", "bus": "peer", "unit": u, "points": points}
            for u in range(1, devices + 1)
        ],
        "uplink": {"host": LOOPBACK, "port": broker_port},
        "storage": {"dir": str(tmp / "state")},
        "rules_pack": str(REPO / "config" / "rules" / "default.toml"),
    }
    path = tmp / "peer.toml"
    path.write_text(dump_toml(data))
    return path


class Subscriber:
    """Stamps every telemetry message on arrival (paho's network thread); parses later."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.got: list[tuple[float, bytes]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="peer-subscriber")
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe("+/+/+/telemetry", 1)
        self.ready.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        t = time.time()
        with self.lock:
            self.got.append((t, bytes(msg.payload)))

    def __enter__(self) -> Subscriber:
        self.client.connect(LOOPBACK, self.port)
        self.client.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError("subscriber could not connect")
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def messages(self) -> list[tuple[float, bytes]]:
        with self.lock:
            return list(self.got)


def readings(messages: list[tuple[float, bytes]], since: float, until: float) -> dict[str, Any]:
    """Latencies (ms) and seq per device of the live readings read in [since, until)."""
    lat: list[float] = []
    by_dev: dict[str, list[float]] = defaultdict(list)
    seqs: dict[str, list[int]] = defaultdict(list)
    for arrived, payload in messages:
        body = orjson.loads(payload)
        if body.get("backfill"):
            continue
        cols = body["records"]
        per: dict[str, dict[str, float]] = defaultdict(dict)
        for dev, key, value in zip(cols["device"], cols["key"], cols["value"], strict=True):
            if key in ("seq", "t_ms") and value is not None:
                per[dev][key] = value
        for dev, r in per.items():
            if "t_ms" in r and since <= r["t_ms"] / 1000 < until:
                lat.append(arrived * 1000 - r["t_ms"])
                by_dev[dev].append(lat[-1])
                seqs[dev].append(int(r["seq"]))
    lost = sum(max(s) - min(s) + 1 - len(set(s)) for s in seqs.values())
    first, last = (sorted(by_dev)[i] if by_dev else "" for i in (0, -1))
    return {
        "latency": lat,
        "first": by_dev.get(first, []),  # the first device read in a cycle waits the longest
        "last": by_dev.get(last, []),
        "lost": lost,
        "readings": sum(len(s) for s in seqs.values()),
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0, help="poll interval, s (1; 0.05)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per phase")
    ap.add_argument("--window", type=float, default=5.0, help="seconds per CPU window")
    ap.add_argument("--warmup", type=float, default=3.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dust-peer-") as d, Broker(Path(d) / "br") as br:
        tmp = Path(d)
        sim = Proc(
            [str(BIN / "dust-sim"), "serve", "--port", "0", "--peer-devices", str(args.devices)],
            tmp / "sim.log",
        )
        try:
            port = int(sim.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1))
            floor_rss = import_floor_mib()
            with LoopFloor(port, args.devices, PEER_REGISTERS, args.interval) as fl:
                time.sleep(args.warmup)
                floor = sample_cpu(fl.pid, args.seconds, args.window)
            agent_fig = run_agent(tmp, port, br.port, args)
        finally:
            sim.stop(signal.SIGTERM)
    report(args, floor_rss, floor, agent_fig)
    return 0


def run_agent(tmp: Path, sim_port: int, broker_port: int, args: argparse.Namespace) -> Any:
    cfg = peer_config(tmp, sim_port, broker_port, args.devices, args.interval)
    with Subscriber(broker_port) as sub:
        t0 = time.time()
        agent = Proc(
            [str(BIN / "dust-agent"), "run", "-c", str(cfg)],
            tmp / "agent.log",
            env={"DUST_AGENT_CLOCK_SYNC": "yes"},
        )
        try:
            wait_for(lambda: bool(sub.messages()), 30, "first telemetry", interval=0.002)
            first = sub.messages()[0][0] - t0
            time.sleep(args.warmup)
            since = time.time()
            cpu = sample_cpu(agent.proc.pid, args.seconds, args.window)
            until = time.time()
            time.sleep(min(2.0, 5 * args.interval) + 0.5)  # the last readings arrive
        finally:
            agent.stop(signal.SIGTERM)
        return cpu, first, readings(sub.messages(), since, until)


def report(args: argparse.Namespace, floor_rss: float, floor: Any, agent_fig: Any) -> None:
    cpu, first, r = agent_fig
    lat = r["latency"]
    n = args.devices
    print(
        f"peer harness: {n} devices x {PEER_REGISTERS} registers (13 points each) every"
        f" {args.interval:g} s, {args.seconds:.0f} s measured per phase, CPU windows of"
        f" {args.window:g} s (mean, p95)"
    )
    print(
        f"  floor  bare pymodbus loop, one tick:  CPU {floor.mean:.3f} % (p95 {floor.p95:.3f})"
        f"  RSS {floor.rss_median:.1f} MiB"
    )
    print(f"  floor  imports only:                  RSS {floor_rss:.1f} MiB")
    print(
        f"  agent  CPU {cpu.mean:.3f} % (p95 {cpu.p95:.3f}) = {cpu.mean / floor.mean:.2f}x the"
        f" loop floor (p95 {cpu.p95 / floor.p95:.2f}x)"
    )
    print(
        f"  agent  RSS {cpu.rss_median:.1f} MiB = {cpu.rss_median / floor_rss:.2f}x the import"
        f" floor (+{cpu.rss_median - floor_rss:.1f} MiB)"
    )
    print(
        f"  agent  latency read->broker ms: p50 {percentile(lat, 50):.2f}  p95"
        f" {percentile(lat, 95):.2f}  max {max(lat, default=float('nan')):.2f}"
        f"  ({len(lat)} device readings)"
    )
    print(
        f"  agent  latency p50 of the first device read in a cycle {percentile(r['first'], 50):.2f}"
        f" ms, of the last {percentile(r['last'], 50):.2f} ms (the difference: the cycle's wait)"
    )
    print(f"  agent  start to first message: {first:.3f} s")
    print(f"  agent  lost by seq: {r['lost']} of {r['readings'] + r['lost']} device readings")


if __name__ == "__main__":
    raise SystemExit(main())
