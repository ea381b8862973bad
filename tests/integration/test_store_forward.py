"""Store-and-forward under chaos, real mosquitto: outage at 100 points/s with live beside the
backlog, SIGKILL of the agent at random moments, the disk cap reached during an outage, and
an alarm raised while a large backlog drains. The reference consumer (agent.uplink.consumer.Tracker)
checks that every seq was delivered or reported dropped.

Short forms run in `make test`; the full-length outage: DUST_OUTAGE_S=60 pytest -k outage.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
import pytest

from agent.store.outbox import Entry, Outbox
from agent.uplink.consumer import Tracker
from agent.uplink.flow import honour_cancel
from agent.uplink.forwarder import mqtt_forwarder
from agent.uplink.payload import encode_alarms, encode_telemetry
from firmware_sim.harness import Broker
from tests.integration.test_forwarder import (
    POINTS,
    SITE,
    Collector,
    GatedUplink,
    alarm,
    eventually,
    frame,
    running,
    spec,
    topic,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def tracked(col: Collector) -> Tracker:
    t = Tracker()
    for top, doc, _ in list(col.messages):
        if top.rsplit("/", 1)[1] in ("telemetry", "alarm", "event"):
            t.feed(doc)
    return t


def complete(t: Tracker, stream: str, next_seq: int) -> bool:
    st = t.state(SITE.enterprise_code, SITE.gateway_id, stream)
    return st.low == next_seq - 1 and not st.gaps()


async def wait_complete(col: Collector, box: Outbox, within: float) -> Tracker:
    """Until the consumer accounts for every seq the outbox ever numbered, and none pending."""
    stats = await box.stats()
    deadline = time.monotonic() + within
    while True:
        stats = await box.stats()
        t = tracked(col)
        pending = sum(stats.pending_records.values())
        if pending == 0 and all(complete(t, s, q) for s, q in stats.next_seq.items()):
            return t
        if time.monotonic() > deadline:
            raise AssertionError(f"not complete: pending {pending}, consumer {t.report()}")
        await asyncio.sleep(0.05)


class Producer:
    """`points` telemetry records every `period` s (a poll loop), an alarm every `alarm_every`."""

    def __init__(self, box: Outbox, period: float = 0.05, alarm_every: int = 0) -> None:
        self.box, self.period, self.alarm_every = box, period, alarm_every
        self.records = self.cycles = 0
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            self.cycles += 1
            entries = [encode_telemetry(frame(self.cycles), POINTS)]
            if self.alarm_every and self.cycles % self.alarm_every == 0:
                entries.append(encode_alarms([alarm("raise")]))
            await self.box.put(entries)
            self.records += len(POINTS)
            await asyncio.sleep(self.period)  # the poll interval, not a synchronisation


@pytest.fixture
async def box(tmp_path: Path) -> Any:
    b = Outbox(tmp_path / "outbox.db", 50_000_000)
    await b.open()
    try:
        yield b
    finally:
        await b.close()


async def test_outage_at_100_points_per_s_live_stays_current_beside_the_backlog(
    broker: Broker, box: Outbox
) -> None:
    outage = float(os.environ.get("DUST_OUTAGE_S", "4"))
    col = Collector(broker.port)
    prod = Producer(box, period=0.05, alarm_every=40)  # 5 points / 50 ms = 100 points/s
    # backlog drains at 200 records/s beside 100 live points/s: the catch-up is visible
    up = spec(broker.port, backlog_rate=200.0, publish_timeout=2.0)
    fwd = mqtt_forwarder(box, GatedUplink(col.ready, up), SITE, up)
    async with running(col.run()):
        await asyncio.wait_for(col.ready.wait(), 10)
        async with running(fwd.run()), running(prod.run()) as producing:
            await eventually(lambda: len(col.seqs("telemetry")) >= 200, 20, "live records")
            await asyncio.to_thread(broker.stop, True)
            down_at = prod.records
            await eventually(
                lambda: prod.records >= down_at + 100 * outage, outage * 3 + 20, "the outage"
            )
            await asyncio.to_thread(broker.start)
            back = len(col.messages)
            backlog = prod.records - down_at
            await eventually(lambda: fwd.stats.connects >= 2, 20, "reconnect")
            # live data keeps coming while the backlog drains at its bounded rate
            await eventually(
                lambda: fwd.stats.backfill_records >= backlog, backlog / 100 + 30, "the backlog"
            )
            prod.stop.set()
            await producing
            t = await wait_complete(col, box, 60)
    after = [(top.rsplit("/", 1)[1], d) for top, d, _ in col.messages[back:] if "records" in d]
    kinds = [(s, d["backfill"]) for s, d in after if s == "telemetry"]
    last_backfill = max(i for i, k in enumerate(kinds) if k[1])
    first_live = min((i for i, k in enumerate(kinds) if not k[1]), default=None)
    assert first_live is not None, (kinds[:50], fwd.stats)
    assert first_live < last_backfill, "live data waited for the whole backlog"
    assert after[0][0] == "alarm", "an alarm raised in the outage went after telemetry"
    tel = t.state(SITE.enterprise_code, SITE.gateway_id, "telemetry")
    assert tel.duplicates <= up.max_inflight * up.max_records_per_message
    assert t.state(SITE.enterprise_code, SITE.gateway_id, "alarm").received >= 1


CHILD = """
import asyncio, sys, time
from pathlib import Path
from agent.uplink.forwarder import mqtt_forwarder
from agent.core.model import SiteSpec, UplinkSpec
from agent.uplink.mqtt import MqttUplink
from agent.store.outbox import Entry, Outbox
from agent.uplink.payload import encode_event
import orjson

def telemetry(k: int) -> Entry:
    n = 10
    body = orjson.dumps({"point": ["P%d" % i for i in range(n)], "device": ["d"] * n,
        "key": ["k"] * n, "ts": [int(time.time() * 1000)] * n, "value": [float(k)] * n,
        "quality": [0] * n, "unit": [""] * n})
    return Entry("telemetry", n, body, time.time())

async def produce(box: Outbox) -> None:
    k = 0
    while True:
        k += 1
        entries = [telemetry(k)]
        if k % 10 == 0:
            entries.append(encode_event("tick", {"k": k}))
        await box.put(entries)
        await asyncio.sleep(0.01)

async def main() -> None:
    box = Outbox(Path(sys.argv[2]), 50_000_000)
    await box.open()
    site = SiteSpec("E100", "gw-1")
    spec = UplinkSpec("127.0.0.1", int(sys.argv[1]), "dust", "gw-1", keepalive=5,
                      max_records_per_message=50, max_inflight=10, backoff_base=0.05,
                      backoff_cap=0.2)
    async with asyncio.TaskGroup() as tg:
        tg.create_task(produce(box))
        tg.create_task(mqtt_forwarder(box, MqttUplink(spec, site), site, spec).run())

asyncio.run(main())
"""

TRIALS = 10


async def test_sigkill_at_random_moments_loses_nothing(broker: Broker, tmp_path: Path) -> None:
    db = tmp_path / "killed.db"
    col = Collector(broker.port)
    rng = random.Random(5)
    async with running(col.run()):
        await asyncio.wait_for(col.ready.wait(), 10)
        for trial in range(TRIALS):
            proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once)
                [sys.executable, "-c", CHILD, str(broker.port), str(db)],
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
            )
            try:
                seen = len(col.messages)
                want = seen + rng.randint(1, 40)  # a random moment: after k more messages
                await eventually(lambda: len(col.messages) >= want, 30, f"trial {trial}")  # noqa: B023
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                await asyncio.to_thread(proc.wait, 10)
        final = Outbox(db, 50_000_000)  # the restarted agent drains what is left
        await final.open()
        try:
            up = spec(broker.port)
            async with running(mqtt_forwarder(final, GatedUplink(col.ready, up), SITE, up).run()):
                t = await wait_complete(col, final, 60)
        finally:
            await final.close()
    tel = t.state(SITE.enterprise_code, SITE.gateway_id, "telemetry")
    assert tel.received > 0 and not tel.gaps()
    # duplicates only from batches in flight at each kill: at most the window per kill
    assert tel.duplicates <= TRIALS * 10 * 50, t.report()


async def test_disk_cap_reached_during_an_outage(broker: Broker, tmp_path: Path) -> None:
    box = Outbox(tmp_path / "small.db", 400_000)
    await box.open()
    col = Collector(broker.port)
    up = spec(broker.port, max_records_per_message=200)
    try:
        async with running(col.run()):
            await asyncio.wait_for(col.ready.wait(), 10)
            await asyncio.to_thread(broker.stop, True)
            fwd = mqtt_forwarder(box, GatedUplink(col.ready, up), SITE, up)
            async with running(fwd.run()):
                k = 0
                while (await box.stats()).dropped_records < 2000:  # well past the cap
                    k += 1
                    entries = [encode_telemetry(frame(k), POINTS) for _ in range(20)]
                    if k % 5 == 0:
                        entries.append(encode_alarms([alarm("raise")]))
                    await box.put(entries)
                alarms = (await box.stats()).next_seq["alarm"] - 1
                await asyncio.to_thread(broker.start)
                t = await wait_complete(col, box, 60)
    finally:
        await box.close()
    st = t.state(SITE.enterprise_code, SITE.gateway_id, "alarm")
    assert st.received == alarms and st.low == alarms, "an alarm was dropped"
    dropped = [r for r in col.docs("event") for r in r["records"] if r["kind"] == "data_dropped"]
    assert dropped and all(d["data"]["stream"] == "telemetry" for d in dropped)
    assert not t.state(SITE.enterprise_code, SITE.gateway_id, "telemetry").gaps()


async def test_alarm_overtakes_a_large_backlog(broker: Broker, box: Outbox) -> None:
    body = orjson.dumps(
        {
            "point": ["P"] * 1000,
            "device": ["d"] * 1000,
            "key": ["k"] * 1000,
            "ts": [1] * 1000,
            "value": [1.5] * 1000,
            "quality": [0] * 1000,
            "unit": ["°C"] * 1000,
        }
    )
    for _ in range(10):  # 200,000 records stored before the connection: backlog
        await box.put([Entry("telemetry", 1000, body, 1.0) for _ in range(20)])
    got: list[float] = []

    async def alarm_watch(ready: asyncio.Event) -> None:
        while True:
            honour_cancel()
            try:
                async with aiomqtt.Client("127.0.0.1", broker.port, identifier="alarms") as c:
                    await c.subscribe(topic("alarm"), qos=1)
                    ready.set()
                    async for _ in c.messages:
                        got.append(time.monotonic())
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    ready = asyncio.Event()
    up = spec(broker.port, backlog_rate=0.0, max_records_per_message=1000, publish_timeout=5.0)
    fwd = mqtt_forwarder(box, GatedUplink(ready, up), SITE, up)
    async with running(alarm_watch(ready)), running(fwd.run()):
        await asyncio.wait_for(ready.wait(), 10)
        await eventually(lambda: fwd.stats.backfill_records >= 20_000, 30, "the drain to run")
        raised = time.monotonic()
        await box.put([encode_alarms([alarm("raise")])])
        await eventually(lambda: bool(got), 10, "the alarm")
        pending = (await box.stats()).pending_records["telemetry"]
    latency = got[0] - raised
    assert pending > 0, "the backlog was already drained: the test proves nothing"
    assert latency < 5.0, f"alarm took {latency:.3f} s behind the backlog"
