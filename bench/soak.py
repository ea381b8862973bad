"""Soak: the real agent polls N simulated points at 1 s for a set time against mosquitto.

    .venv/bin/python bench/soak.py [--devices 200] [--registers 25] [--minutes 15]
        [--max-bytes 262144] [--outage 0] [--sample 10]

Prints the agent's RSS at the start and the end and its growth per hour (least-squares fit
over the samples after the warm-up), file descriptors and threads (min/max), the outbox file
size (start, max, end), and delivery by seq: every seq in 1..next_seq of each stream must be
received by the collector or still be in the outbox after the agent stopped (else lost),
and received once (else duplicate). The broker runs with `max_packet_size` = --max-bytes
(uplink.max_bytes_per_message), so a message over the limit is refused there and shows up
as lost data; the collector also counts payloads over the limit. `--outage S` stops the
broker for S seconds at a third of the run (backlog, drain, space given back).
Figures only: nothing is asserted.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from array import array
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import paho.mqtt.client as paho
import psutil
from paho.mqtt.enums import CallbackAPIVersion

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.uplink.sizing import PUBLISH_OVERHEAD  # noqa: E402
from firmware_sim.harness import LOOPBACK, Broker  # noqa: E402
from tests.e2e import BIN, Proc, bench_config, wait_for  # noqa: E402

STREAMS = ("alarm", "event", "telemetry")


class SeqCollector:
    """A QoS 1 subscriber that keeps only seq numbers (compact arrays) and message sizes."""

    def __init__(self, port: int, limit: int) -> None:
        self.port, self.limit = port, limit
        self.seqs = {s: array("q") for s in STREAMS}
        self.messages = 0
        self.max_packet = 0
        self.over_limit = 0
        self.lock = threading.Lock()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id="soak-collector", clean_session=False
        )
        self.client.on_connect = lambda c, *a: c.subscribe("#", qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 2)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        stream = msg.topic.rsplit("/", 1)[-1]
        if stream not in self.seqs:
            return
        packet = len(msg.payload) + len(msg.topic.encode()) + PUBLISH_OVERHEAD
        body = orjson.loads(msg.payload)
        recs = body["records"]
        seqs = recs["seq"] if isinstance(recs, dict) else [r["seq"] for r in recs]
        with self.lock:
            self.seqs[stream].extend(seqs)
            self.messages += 1
            self.max_packet = max(self.max_packet, packet)
            self.over_limit += packet > self.limit

    def start(self) -> None:
        self.client.connect(LOOPBACK, self.port, keepalive=10)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def count(self) -> int:
        with self.lock:
            return sum(len(a) for a in self.seqs.values())


def settle(collector: SeqCollector) -> None:
    """Until the collector has taken every message the broker still holds for it."""

    def still() -> bool:
        before = collector.count()
        time.sleep(0.5)
        return collector.count() == before

    wait_for(still, 60, "the collector to receive the last messages")


def outbox_bytes(state: Path) -> int:
    db = state / "outbox.db"
    return sum(p.stat().st_size for p in (db, db.with_name("outbox.db-wal")) if p.exists())


def sample(proc: psutil.Process, state: Path, t0: float) -> tuple[float, ...]:
    return (
        time.monotonic() - t0,
        proc.memory_info().rss / 2**20,
        proc.num_fds(),
        proc.num_threads(),
        outbox_bytes(state),
    )


def delivery(collector: SeqCollector, db: Path) -> dict[str, tuple[int, int, int, int]]:
    """Per stream: (expected, received distinct, lost, duplicates), from the stopped agent's
    outbox (next_seq, rows still pending) and the collector's seqs."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        next_seq = dict(con.execute("SELECT stream, next_seq FROM streams").fetchall())
        pending = con.execute("SELECT stream, seq_first, n FROM outbox").fetchall()
    finally:
        con.close()
    out: dict[str, tuple[int, int, int, int]] = {}
    for stream in STREAMS:
        expected = int(next_seq.get(stream, 1)) - 1
        got = np.frombuffer(collector.seqs[stream], dtype=np.int64)
        have = np.zeros(expected + 1, dtype=bool)
        inside = got[(got >= 1) & (got <= expected)]
        have[inside] = True
        for s, first, n in pending:
            if s == stream:
                have[first : first + n] = True
        distinct = len(np.unique(got))
        out[stream] = (expected, distinct, int((~have[1:]).sum()), len(got) - distinct)
    return out


def growth_mib_per_h(samples: list[tuple[float, ...]], warmup: float) -> float:
    pts = [(t, rss) for t, rss, *_ in samples if t >= warmup]
    if len(pts) < 3:
        return float("nan")
    t, rss = np.array(pts).T
    return float(np.polyfit(t / 3600.0, rss, 1)[0])


def run(args: argparse.Namespace, tmp: Path) -> None:
    broker = Broker(tmp / "broker")
    broker.conf.write_text(broker.conf.read_text() + f"max_packet_size {args.max_bytes}\n")
    with broker:
        collector = SeqCollector(broker.port, args.max_bytes)
        collector.start()
        bench = ["--bench-devices", str(args.devices), "--bench-registers", str(args.registers)]
        sim = Proc(
            [str(BIN / "dust-sim"), "serve", "--host", LOOPBACK, "--port", "0", *bench],
            tmp / "sim.log",
        )
        port = int(sim.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1))
        cfg = bench_config(
            tmp,
            port,
            broker.port,
            args.devices,
            args.registers,
            max_bytes_per_message=args.max_bytes,
        )
        agent = Proc([str(BIN / "dust-agent"), "run", "-c", str(cfg)], tmp / "agent.log")
        state = tmp / "state"
        samples: list[tuple[float, ...]] = []
        try:
            wait_for(lambda: collector.count() > 0, 60, "first records at the collector")
            proc, t0 = psutil.Process(agent.proc.pid), time.monotonic()
            end, outage_at = t0 + args.minutes * 60, t0 + args.minutes * 20
            down = False
            while (now := time.monotonic()) < end:
                samples.append(sample(proc, state, t0))
                if args.outage and not down and now >= outage_at:
                    broker.stop(hard=True)
                    time.sleep(args.outage)  # the outage itself, not a wait for a condition
                    broker.start()
                    down = True
                time.sleep(min(args.sample, max(0.0, end - time.monotonic())))
            samples.append(sample(proc, state, t0))
            cpu = sum(proc.cpu_times()[:2])
        finally:
            code = agent.stop()
            sim.stop()
        settle(collector)
        collector.stop()
    report(args, samples, delivery(collector, state / "outbox.db"), collector, code=code, cpu=cpu)
    for line in agent.text().splitlines():  # agent.store.reclaim: each round of giving back
        if "back to the filesystem" in line:
            print("  " + line.split(": ", 1)[-1])


def report(
    args: argparse.Namespace,
    samples: list[tuple[float, ...]],
    by_stream: dict[str, tuple[int, int, int, int]],
    collector: SeqCollector,
    *,
    code: int,
    cpu: float,
) -> None:
    t, rss, fds, threads, size = (list(c) for c in zip(*samples, strict=True))
    points = args.devices * args.registers
    warm = next((r for at, r in zip(t, rss, strict=True) if at >= args.warmup), rss[-1])
    print(
        f"dust-agent soak: {args.devices} devices x {args.registers} registers = {points} points"
        f" at 1 s for {t[-1] / 60:.1f} min, max_bytes_per_message {args.max_bytes}"
        + (f", broker outage {args.outage:.0f} s" if args.outage else "")
    )
    print(
        f"  RSS: start {rss[0]:.1f} MiB, after the warm-up {warm:.1f} MiB, end {rss[-1]:.1f}"
        f" MiB, max {max(rss):.1f} MiB;"
        f" growth {growth_mib_per_h(samples, args.warmup):+.2f} MiB/h (fit after"
        f" {args.warmup:.0f} s, {len(samples)} samples)"
    )
    print(f"  fds: {min(fds)}..{max(fds)} (start {fds[0]}, end {fds[-1]})")
    print(f"  threads: {min(threads)}..{max(threads)} (start {threads[0]}, end {threads[-1]})")
    print(
        f"  outbox file: start {size[0] / 2**20:.2f} MiB, max {max(size) / 2**20:.2f} MiB,"
        f" end {size[-1] / 2**20:.2f} MiB"
    )
    print(f"  agent CPU: {cpu:.1f} s = {100 * cpu / t[-1]:.2f} % of one core")
    for stream, (expected, distinct, lost, dups) in by_stream.items():
        print(
            f"  {stream:<9}: {expected} records stored, {distinct} received, {lost} lost,"
            f" {dups} duplicates"
        )
    print(
        f"  messages: {collector.messages}, largest packet {collector.max_packet} bytes,"
        f" {collector.over_limit} over the limit; agent exit code {code}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--registers", type=int, default=25)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--max-bytes", type=int, default=256 * 1024)
    ap.add_argument("--outage", type=float, default=0.0, help="broker down for S seconds")
    ap.add_argument("--sample", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--warmup", type=float, default=60.0, help="seconds left out of the fit")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="dust-soak-") as d:
        run(args, Path(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
