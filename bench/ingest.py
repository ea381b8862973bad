"""Central ingest benchmark: records per second into PostgreSQL with 1 and 2 `dust-ingest`
instances from a fleet's backlog, and end-to-end latency at 1 s polls.

    .venv/bin/python bench/ingest.py [--records 1000000] [--gateways 100] [--per-message 1000]
                                     [--latency-seconds 20]

Throughput: the instances' persistent sessions are created, the instances stopped, then
`--records` records are published as `--per-message`-record telemetry messages from
`--gateways` synthetic gateways (the backlog a fleet sends after an outage, queued at the
broker); the instances are started and timed from launch until every record is committed.
Latency: 2 instances running; every gateway publishes one message of 20 readings a second,
stamped with the time of the "read" and sent at once; a poller sees each row committed
(every 10 ms) and takes the difference. PostgreSQL runs with fsync and synchronous_commit on.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import psutil
import psycopg

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from firmware_sim.harness import LOOPBACK, Broker, dump_toml  # noqa: E402
from ingest.testing import PgServer  # noqa: E402
from tests.e2e import Proc  # noqa: E402

BIN = Path(sys.executable).parent

PG_SETTINGS = {"shared_buffers": "512MB", "max_wal_size": "4GB", "checkpoint_timeout": "30min"}


def telemetry(gw: int, first: int, n: int, ts: int, backfill: bool) -> bytes:
    seqs = range(first, first + n)
    return orjson.dumps(
        {
            "v": 1, "enterprise": "BENCH", "gateway": f"gw-{gw:03d}", "stream": "telemetry",
            "backfill": backfill, "clock_synced": True, "sent": ts,
            "records": {
                "seq": list(seqs),
                "point": [f"DC-{s % 20}.p{s % 10}" for s in seqs],
                "device": [f"DC-{s % 20}" for s in seqs],
                "key": [f"p{s % 10}" for s in seqs],
                "ts": [ts] * n,
                "value": [s * 0.25 for s in seqs],
                "quality": [0] * n,
                "unit": ["kPa"] * n,
            },
        }
    )  # fmt: skip


async def publish(port: int, items: list[tuple[str, bytes]], window: int = 64) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-pub") as client:
        client.pending_calls_threshold = 2 * window
        for i in range(0, len(items), window):
            chunk = items[i : i + window]
            await asyncio.gather(*(client.publish(t, p, qos=1) for t, p in chunk))


class Instances:
    """N `dust-ingest` processes with fixed client ids (persistent sessions)."""

    def __init__(self, n: int, pg: PgServer, broker: Broker, tmp: Path) -> None:
        self.n, self.pg, self.broker, self.tmp = n, pg, broker, tmp
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> None:
        for i in range(self.n):
            args = [sys.executable, "-m", "ingest.cli", "--dsn", self.pg.dsn,
                    "--port", str(self.broker.port), "--client-id", f"bench-{i}"]  # fmt: skip
            with (self.tmp / f"ingest-{i}.log").open("ab") as log:
                self.procs.append(subprocess.Popen(args, stderr=log, cwd=REPO))

    def wait_connected(self) -> None:
        for i in range(self.n):
            log = self.tmp / f"ingest-{i}.log"
            wait(lambda log=log: "connected to" in log.read_text(), 30)

    def stop(self) -> None:
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=30)
        self.procs = []

    def cpu(self) -> float:
        return sum(cpu_s(psutil.Process(p.pid)) for p in self.procs)


def wait(cond: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: timed out after {timeout} s")
        time.sleep(0.01)


def cpu_s(p: psutil.Process) -> float:
    t = p.cpu_times()
    return float(t.user + t.system + t.children_user + t.children_system)


def tree_cpu(pid: int) -> float:
    root = psutil.Process(pid)
    return sum(cpu_s(p) for p in [root, *root.children(recursive=True)])


def reset(pg: PgServer) -> None:
    with psycopg.connect(pg.dsn, autocommit=True) as c:
        c.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")


def maxes(conn: psycopg.Connection[Any]) -> list[int]:
    sql = "SELECT (SELECT max(seq) FROM telemetry t WHERE t.gateway_id = g.id) FROM gateways g"
    return [int(r[0] or 0) for r in conn.execute(sql).fetchall()]


def throughput(n: int, pg: PgServer, broker: Broker, tmp: Path, args: Any) -> dict[str, float]:
    reset(pg)
    inst = Instances(n, pg, broker, tmp / f"tp{n}")
    inst.tmp.mkdir()
    inst.start()
    inst.wait_connected()  # the sessions exist at the broker, subscribed
    inst.stop()
    per_gw = args.records // args.gateways
    items = [
        (f"dust/BENCH/gw-{gw:03d}/telemetry",
         telemetry(gw, m * args.per_message + 1, args.per_message, 1_700_000_000_000, True))
        for m in range(per_gw // args.per_message)
        for gw in range(args.gateways)
    ]  # fmt: skip
    asyncio.run(publish(broker.port, items))
    total = len(items) * args.per_message
    pg_cpu0, mq_cpu0 = tree_cpu(pg.proc.pid), tree_cpu(broker.proc.pid)  # type: ignore[union-attr]
    t0 = time.monotonic()
    inst.start()
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        wait(lambda: conn.execute("SELECT to_regclass('gateways')").fetchone() != (None,), 30)
        wait(lambda: sum(maxes(conn)) >= total, 300)
        row = conn.execute("SELECT count(*) FROM telemetry").fetchone()
    stored = int(row[0]) if row else 0
    elapsed = time.monotonic() - t0
    ing_cpu = inst.cpu()
    pg_cpu = tree_cpu(pg.proc.pid) - pg_cpu0  # type: ignore[union-attr]
    mq_cpu = tree_cpu(broker.proc.pid) - mq_cpu0  # type: ignore[union-attr]
    inst.stop()
    return {"records": total, "stored": stored, "elapsed": elapsed, "rate": total / elapsed,
            "ingest_cpu": ing_cpu, "pg_cpu": pg_cpu, "mqtt_cpu": mq_cpu}  # fmt: skip


async def live(port: int, gateways: int, seconds: float, per: int) -> None:
    """Each gateway publishes `per` readings a second, stamped at the read, sent at once."""
    async with aiomqtt.Client("127.0.0.1", port, identifier="bench-live") as client:
        client.pending_calls_threshold = 10 * gateways  # a burst of one message per gateway
        nxt = time.time()
        for k in range(int(seconds)):
            ts = int(time.time() * 1000)
            await asyncio.gather(
                *(client.publish(f"dust/BENCH/gw-{gw:03d}/telemetry",
                                 telemetry(gw, k * per + 1, per, ts, False), qos=1)
                  for gw in range(gateways))
            )  # fmt: skip
            nxt += 1.0
            await asyncio.sleep(max(0.0, nxt - time.time()))


# Rows committed since the last poll, per gateway ({"gateway_id": last seq seen}).
NEW_ROWS = """SELECT t.gateway_id, max(t.seq), array_agg(extract(epoch FROM t.ts))
FROM telemetry t JOIN gateways g ON g.id = t.gateway_id
    AND t.seq > coalesce((%s::jsonb ->> g.id::text)::bigint, 0)
GROUP BY 1"""


def poll_latency(pg: PgServer, expected: int, seconds: float, skip: float = 0.0) -> list[float]:
    """Read -> visible latency of every row committed in the next `seconds` (until `expected`
    rows were seen), ignoring rows stamped within `skip` s of the start (agent start-up)."""
    lat: list[float] = []
    seen: dict[int, int] = {}
    t0 = time.time()
    deadline = time.monotonic() + seconds
    with psycopg.connect(pg.dsn, autocommit=True) as conn:
        while len(lat) < expected and time.monotonic() < deadline:
            now = time.time()
            arg = orjson.dumps(seen, option=orjson.OPT_NON_STR_KEYS).decode()
            for gid, top, stamps in conn.execute(NEW_ROWS, (arg,)):
                seen[gid] = top
                lat.extend(now - float(s) for s in stamps if float(s) >= t0 + skip)
            time.sleep(0.01)
    return lat


def latency(pg: PgServer, broker: Broker, tmp: Path, args: Any) -> list[float]:
    """Synthetic gateways publishing each reading at once: broker + ingest + commit."""
    reset(pg)
    inst = Instances(2, pg, broker, tmp / "lat")
    inst.tmp.mkdir()
    inst.start()
    inst.wait_connected()
    pub = subprocess.Popen(
        [sys.executable, __file__, "--live-publisher", str(broker.port), str(args.gateways),
         str(args.latency_seconds)], cwd=REPO,
    )  # fmt: skip
    expected = args.gateways * 20 * int(args.latency_seconds)
    lat = poll_latency(pg, expected, args.latency_seconds + 60)
    pub.wait()
    inst.stop()
    return lat


def agent_config(tmp: Path, name: str, sim_port: int, broker_port: int, devices: int) -> Path:
    points = [{"key": f"r{a:02d}", "table": "holding", "address": a, "type": "uint16",
               "unit": "", "kind": "generic"} for a in range(20)]  # fmt: skip
    data = {
        "site": {"enterprise_code": "BENCH", "gateway_id": name},
        "buses": [{"name": "bench", "host": LOOPBACK, "port": sim_port, "timeout": 1.0,
                   "poll_interval": 1.0}],
        "devices": [{"name": f"D{u:03d}", "bus": "bench", "unit": u, "points": points}
                    for u in range(1, devices + 1)],
        "uplink": {"host": LOOPBACK, "port": broker_port},
        "storage": {"dir": str(tmp / name)},
        "rules_pack": str(REPO / "config" / "rules" / "default.toml"),
    }  # fmt: skip
    path = tmp / f"{name}.toml"
    path.write_text(dump_toml(data))
    return path


def agent_latency(pg: PgServer, broker: Broker, tmp: Path, args: Any) -> list[float]:
    """Real agents polling the simulator at 1 s: from each reading's ts to its committed row."""
    reset(pg)
    inst = Instances(2, pg, broker, tmp / "agent-lat")
    inst.tmp.mkdir()
    inst.start()
    inst.wait_connected()
    sim = Proc([str(BIN / "dust-sim"), "serve", "--host", LOOPBACK, "--port", "0",
                "--bench-devices", "10", "--bench-registers", "20"], tmp / "sim.log")  # fmt: skip
    port = int(sim.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1))
    env = {"DUST_AGENT_CLOCK_SYNC": "yes"}
    agents = [
        Proc([str(BIN / "dust-agent"), "run", "-c",
              str(agent_config(inst.tmp, f"agent-{i}", port, broker.port, 10))],
             inst.tmp / f"agent-{i}.log", env=env)
        for i in range(args.agents)
    ]  # fmt: skip
    try:
        warmup = 3.0
        return poll_latency(pg, 10**9, warmup + args.latency_seconds, skip=warmup)
    finally:
        for a in agents:
            a.stop(signal.SIGTERM)
        sim.stop(signal.SIGTERM)
        inst.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--gateways", type=int, default=100)
    ap.add_argument("--per-message", type=int, default=1000)
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--instances", default="1,2")
    ap.add_argument("--agents", type=int, default=2, help="real agents for the latency (0: none)")
    ap.add_argument("--live-publisher", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.live_publisher:
        port, gws, secs = args.live_publisher
        asyncio.run(live(int(port), int(gws), float(secs), 20))
        return 0
    with tempfile.TemporaryDirectory(prefix="dust-bench-ingest-") as d:
        tmp = Path(d)
        with Broker(tmp / "broker") as broker, PgServer(PG_SETTINGS) as pg:
            print(
                f"ingest bench: {args.records} records as {args.per_message}-record messages"
                f" from {args.gateways} gateways; PostgreSQL fsync on, {PG_SETTINGS}"
            )
            for n in (int(x) for x in args.instances.split(",")):
                r = throughput(n, pg, broker, tmp, args)
                print(
                    f"  {n} instance(s): {r['stored']:.0f}/{r['records']:.0f} rows in"
                    f" {r['elapsed']:.2f} s = {r['rate']:,.0f} records/s (from launch);"
                    f" CPU s: ingest {r['ingest_cpu']:.1f}, postgres {r['pg_cpu']:.1f},"
                    f" mosquitto {r['mqtt_cpu']:.1f}"
                )
            if args.latency_seconds > 0:
                lat = sorted(latency(pg, broker, tmp, args))
                med, p99 = statistics.median(lat), statistics.quantiles(lat, n=100)[98]
                print(
                    f"  latency read -> committed row, 2 instances, {args.gateways} gateways x 20"
                    f" readings at 1 s, {len(lat)} records: median {1000 * med:.0f} ms,"
                    f" p99 {1000 * p99:.0f} ms, max {1000 * lat[-1]:.0f} ms"
                )
            if args.latency_seconds > 0 and args.agents > 0:
                lat = sorted(agent_latency(pg, broker, tmp, args))
                med, p99 = statistics.median(lat), statistics.quantiles(lat, n=100)[98]
                print(
                    f"  latency read -> committed row, 2 instances, {args.agents} real agents x"
                    f" 200 points at 1 s (dust-sim), {len(lat)} records: median"
                    f" {1000 * med:.0f} ms, p99 {1000 * p99:.0f} ms, max {1000 * lat[-1]:.0f} ms"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
