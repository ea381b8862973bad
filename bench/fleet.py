"""Fleet reconnect benchmark: N real agents against one mosquitto that is restarted mid-run.

    .venv/bin/python bench/fleet.py [--agents 100] [--outage 30] [--before 30] [--after 30]

Each agent is a real `dust-agent run` process polling its own 2 simulated devices x 5 holding
registers at 1 s (10 points; 1,000 for 100 agents): `dust-sim serve --bench-devices 50` processes
serve 25 agents each, every agent on its own unit ids. A tap (a paho subscriber with a
persistent session on a broker with persistence, reconnecting every 50 ms) records every message
with its arrival time. Once every agent delivers telemetry, the fleet runs `--before` seconds,
the broker is stopped (SIGTERM) for `--outage` seconds and started again, and the fleet runs
`--after` seconds more. Then it prints:

- streams: per gateway and stream, seq from 1 with no gap (lost), and duplicates (in-flight
  windows resent after the loss, dropped by seq at the receiver);
- resume per agent: from the broker's restart (the moment it was launched) to the first
  telemetry from that agent that arrives at the tap; median and max;
- connects per second at the broker: MQTT CONNECTs (mosquitto's "New client connected" lines,
  whole-second timestamps) after the restart, peak and per second; TCP accepts beside them
  (probes included);
- the fleet's CPU (% of one core over the measured time) and memory (sum of RSS and of PSS).

Nothing is asserted; issue 15's targets are printed beside the figures.
"""

from __future__ import annotations

import argparse
import math
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from firmware_sim.harness import LOOPBACK, Broker, dump_toml  # noqa: E402
from tests.e2e import Proc, wait_for  # noqa: E402

BIN = Path(sys.executable).parent
DEVICES, REGISTERS = 2, 5  # per agent
UNITS_PER_SIM = 50
TAP_ID = "fleet-tap"
CONNECTED = re.compile(r"^(\d+): New client connected from \S+ as (\S+) ", re.M)
ACCEPTED = re.compile(r"^(\d+): New connection from ", re.M)


@dataclass
class Tap:
    """Every message's arrival time, gateway, stream and seqs (a paho thread)."""

    port: int
    got: list[tuple[float, str, str, list[int]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=TAP_ID, clean_session=False
        )
        self.client.on_connect = lambda c, *a: c.subscribe("fleet/#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.05, 0.05)  # type: ignore[arg-type]  # floats work
        self.client.max_inflight_messages_set(1000)
        self.client.connect(LOOPBACK, self.port, keepalive=10)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.time()
        parts = msg.topic.split("/")  # fleet/<enterprise>/<gateway>/<stream>
        if len(parts) != 4 or msg.retain:
            return
        try:
            body = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            return
        records = body.get("records") if isinstance(body, dict) else None
        if isinstance(records, dict):
            seqs = [int(s) for s in records.get("seq", [])]
        elif isinstance(records, list):
            seqs = [int(r["seq"]) for r in records if isinstance(r, dict) and "seq" in r]
        else:
            seqs = []
        with self.lock:
            self.got.append((now, parts[2], parts[3], seqs))

    def snapshot(self) -> list[tuple[float, str, str, list[int]]]:
        with self.lock:
            return list(self.got)

    def telemetry_from(self, since: float) -> set[str]:
        return {gw for t, gw, stream, _ in self.snapshot() if stream == "telemetry" and t >= since}


def gateway(i: int) -> str:
    return f"F{i:03d}"


def agent_config(tmp: Path, i: int, sim_ports: list[int], broker_port: int, slots: bool) -> Path:
    sim, slot = divmod(i * DEVICES, UNITS_PER_SIM)
    point = {"table": "holding", "type": "uint16", "unit": "", "kind": "generic"}
    data = {
        "site": {"enterprise_code": "FLEET", "gateway_id": gateway(i)},
        "buses": [
            {
                "name": "b",
                "host": LOOPBACK,
                "port": sim_ports[sim],
                "timeout": 1.0,
                "poll_interval": 1.0,
            }
        ],
        "devices": [
            {
                "name": f"D{d}",
                "bus": "b",
                "unit": slot + d + 1,
                "points": [{"key": f"r{a}", "address": a, **point} for a in range(REGISTERS)],
            }
            for d in range(DEVICES)
        ],
        "uplink": {"host": LOOPBACK, "port": broker_port, "topic_prefix": "fleet"}
        | ({"reconnect_slot": i} if slots else {}),
        "storage": {"dir": str(tmp / gateway(i))},
        "rules_pack": str(REPO / "config" / "rules" / "default.toml"),
    }
    path = tmp / f"{gateway(i)}.toml"
    path.write_text(dump_toml(data))
    return path


def start_sims(tmp: Path, agents: int) -> tuple[list[Proc], list[int]]:
    sims, ports = [], []
    for k in range(math.ceil(agents * DEVICES / UNITS_PER_SIM)):
        bench = ["--bench-devices", str(UNITS_PER_SIM), "--bench-registers", str(REGISTERS)]
        sim = Proc(
            [str(BIN / "dust-sim"), "serve", "--host", LOOPBACK, "--port", "0", *bench],
            tmp / f"sim{k}.log",
        )
        sims.append(sim)
        ports.append(int(sim.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1)))
    return sims, ports


def start_agents(
    tmp: Path, args: argparse.Namespace, sim_ports: list[int], port: int
) -> list[Proc]:
    env = {"DUST_AGENT_CLOCK_SYNC": "yes", "DUST_AGENT_LOG_LEVEL": "info"}
    agents = []
    for i in range(args.agents):
        cfg = agent_config(tmp, i, sim_ports, port, args.slots)
        cmd = [str(BIN / "dust-agent"), "run", "-c", str(cfg)]
        agents.append(Proc(cmd, tmp / f"{gateway(i)}.log", env=env))
        time.sleep(
            1.0 / args.start_rate
        )  # imports cost ~0.3 s of CPU each: do not start 100 at once
    return agents


def cpu_s(procs: list[psutil.Process]) -> float:
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def memory_mib(procs: list[psutil.Process]) -> tuple[float, float]:
    rss = pss = 0.0
    for p in procs:
        try:
            m = p.memory_full_info()
        except psutil.Error:
            continue
        rss, pss = rss + m.rss, pss + getattr(m, "pss", m.rss)
    return rss / 2**20, pss / 2**20


@dataclass
class Run:
    agents: int
    restart: float = 0.0  # wall time the broker was launched again
    cpu: float = 0.0  # fleet CPU seconds over `measured`
    measured: float = 0.0
    rss: float = 0.0
    pss: float = 0.0
    other_cpu: dict[str, float] = field(default_factory=dict)
    down_lines: list[str] = field(default_factory=list)


def run_fleet(args: argparse.Namespace, tmp: Path) -> tuple[Run, Tap, Broker]:
    run = Run(args.agents)
    broker = Broker(tmp / "broker", persistence=True)
    broker.start()
    sims, sim_ports = start_sims(tmp, args.agents)
    tap = Tap(broker.port)
    tap.start()
    agents: list[Proc] = []
    try:
        agents = start_agents(tmp, args, sim_ports, broker.port)
        ids = {gateway(i) for i in range(args.agents)}
        wait_for(lambda: tap.telemetry_from(0.0) >= ids, 300, "telemetry from every agent", 0.5)
        print(f"fleet: {args.agents} agents up and delivering; running {args.before:g} s")
        procs = [psutil.Process(a.proc.pid) for a in agents]
        others = {"simulators": [psutil.Process(s.proc.pid) for s in sims]}
        c0, o0, t0 = cpu_s(procs), cpu_s(others["simulators"]), time.monotonic()
        time.sleep(args.before)
        broker.stop()  # SIGTERM: mosquitto saves the tap's session and queued messages
        print(f"fleet: broker stopped for {args.outage:g} s")
        time.sleep(args.outage)
        run.restart = time.time()
        broker.start()
        others["broker"] = [psutil.Process(broker.proc.pid)] if broker.proc else []
        b0 = cpu_s(others["broker"])
        wait_for(lambda: tap.telemetry_from(run.restart) >= ids, 120, "every agent resumed", 0.1)
        time.sleep(args.after)
        run.cpu, run.measured = cpu_s(procs) - c0, time.monotonic() - t0
        run.other_cpu = {"simulators": cpu_s(others["simulators"]) - o0}
        run.other_cpu["broker (after restart)"] = cpu_s(others["broker"]) - b0
        run.rss, run.pss = memory_mib(procs)
    finally:
        for a in agents:
            if a.proc.poll() is None:
                a.proc.send_signal(signal.SIGTERM)
        for a in agents:
            a.stop(signal.SIGTERM, timeout=30)
        tap.stop()
        for s in sims:
            s.stop(signal.SIGTERM)
        broker.stop()
    run.down_lines = [ln for a in agents for ln in a.text().splitlines() if "uplink " in ln]
    return run, tap, broker


def completeness(tap: Tap) -> tuple[int, int, int, int, list[str]]:
    """(streams, records, lost, duplicates, streams not starting at seq 1)."""
    seqs: dict[tuple[str, str], list[int]] = defaultdict(list)
    for _, gw, stream, s in tap.snapshot():
        seqs[(gw, stream)].extend(s)
    lost = dups = records = 0
    bad_start = []
    for key, got in seqs.items():
        if not got:
            continue
        have = set(got)
        records += len(have)
        dups += len(got) - len(have)
        lost += max(have) - min(have) + 1 - len(have)
        if min(have) != 1:
            bad_start.append("/".join(key))
    return len([k for k, v in seqs.items() if v]), records, lost, dups, bad_start


def resume_times(tap: Tap, restart: float) -> list[float]:
    first: dict[str, float] = {}
    for t, gw, stream, _ in tap.snapshot():
        if stream == "telemetry" and t >= restart and gw not in first:
            first[gw] = t - restart
    return sorted(first.values())


def connects(broker: Broker, restart: float) -> tuple[Counter[int], Counter[int]]:
    """MQTT CONNECTs (agents only) and TCP accepts per whole second since the restart."""
    text = broker.log.read_text(errors="replace")
    start = int(restart)
    mqtt: Counter[int] = Counter(
        int(t) - start for t, who in CONNECTED.findall(text) if who != TAP_ID and int(t) >= start
    )
    tcp: Counter[int] = Counter(int(t) - start for t in ACCEPTED.findall(text) if int(t) >= start)
    return mqtt, tcp


def report(args: argparse.Namespace, run: Run, tap: Tap, broker: Broker) -> None:
    streams, records, lost, dups, bad_start = completeness(tap)
    resume = resume_times(tap, run.restart)
    mqtt, tcp = connects(broker, run.restart)
    n = args.agents
    print(
        f"fleet benchmark: {n} agents x {DEVICES} devices x {REGISTERS} registers at 1 s "
        f"({n * DEVICES * REGISTERS} points), broker down {args.outage:g} s, "
        + ("reconnect_slot 0..N-1" if args.slots else "no reconnect_slot (hashed phases)")
    )
    print(
        f"  streams: {streams}, records {records}, lost {lost}, duplicates {dups}"
        + (f", not starting at seq 1: {bad_start}" if bad_start else "")
    )
    if resume:
        print(
            f"  resume (broker launched -> first telemetry at the tap), {len(resume)}/{n} agents: "
            f"median {statistics.median(resume):.2f} s, "
            f"p90 {resume[int(0.9 * (len(resume) - 1))]:.2f} s, max {resume[-1]:.2f} s "
            "(target: median <= 3 s, max <= 6 s)"
        )
    span = range(0, max([*mqtt, *tcp, 0]) + 1)
    print(
        f"  MQTT CONNECTs/s after the restart: peak {max(mqtt.values(), default=0)} "
        f"(target <= 20), total {sum(mqtt.values())}; per second: {[mqtt[s] for s in span]}"
    )
    print(f"  TCP accepts/s (probes included): {[tcp[s] for s in span]}")
    share = 100 * run.cpu / run.measured
    print(
        f"  fleet CPU: {run.cpu:.1f} s in {run.measured:.0f} s = {share:.1f} %"
        f" of one core ({100 * run.cpu / run.measured / n:.2f} % per agent); "
        + ", ".join(f"{k} {100 * v / run.measured:.1f} %" for k, v in run.other_cpu.items())
    )
    print(
        f"  fleet memory: RSS sum {run.rss:.0f} MiB ({run.rss / n:.1f} per agent), "
        f"PSS sum {run.pss:.0f} MiB ({run.pss / n:.1f} per agent)"
    )
    downs = [ln for ln in run.down_lines if "uplink down" in ln or "reconnected after" in ln]
    if downs:
        print(f"  outage log lines: {len(downs)}, e.g. {downs[0].split(': ', 1)[-1][:160]}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--agents", type=int, default=100)
    ap.add_argument("--outage", type=float, default=30.0, help="seconds the broker is down")
    ap.add_argument("--before", type=float, default=30.0, help="seconds of steady run before")
    ap.add_argument("--after", type=float, default=30.0, help="seconds after every agent resumed")
    ap.add_argument("--start-rate", type=float, default=5.0, help="agents started per second")
    ap.add_argument(
        "--no-slots",
        dest="slots",
        action="store_false",
        help="no [uplink] reconnect_slot: phases from a hash of each client id (as random)",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dust-fleet-") as d:
        run, tap, broker = run_fleet(args, Path(d))
        report(args, run, tap, broker)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
