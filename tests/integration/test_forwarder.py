"""Forwarder + MqttUplink against a real mosquitto: delivery, status, outages, frozen broker."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import orjson
import pytest

from agent.core.backoff import Backoff
from agent.core.model import AlarmEvent, Frame, PointSpec, SiteSpec, Transition, UplinkSpec
from agent.store.outbox import Outbox
from agent.uplink.flow import honour_cancel
from agent.uplink.forwarder import Forwarder, mqtt_forwarder
from agent.uplink.mqtt import MqttUplink, UplinkError
from agent.uplink.payload import encode_alarms, encode_telemetry
from firmware_sim.harness import Broker, free_port
from tests.factories import point

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PREFIX = "dust"
SITE = SiteSpec(enterprise_code="E100", gateway_id="gw-1")
N_POINTS = 5


def spec(port: int, **kw: Any) -> UplinkSpec:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "topic_prefix": PREFIX,
        "client_id": "gw-1",
        "keepalive": 5,
        "publish_timeout": 1.0,
        "max_records_per_message": 50,
        "backoff_base": 0.05,
        "backoff_cap": 0.5,
    }
    base.update(kw)
    return UplinkSpec(**base)


def topic(stream: str) -> str:
    return f"{PREFIX}/{SITE.enterprise_code}/{SITE.gateway_id}/{stream}"


def make_points() -> list[PointSpec]:
    return [
        point(i, device="dc1", key=f"k{i}", code=f"P{i}", name_zh="压力", name_en="pressure",
              bus="b1", unit="kPa", kind="pressure")
        for i in range(N_POINTS)
    ]  # fmt: skip


POINTS = make_points()


def frame(k: int, age: float = 0.0) -> Frame:
    return Frame(
        index=np.arange(N_POINTS, dtype=np.intp),
        ts=np.full(N_POINTS, time.time() - age),
        value=np.arange(N_POINTS, dtype=np.float64) + k,
        quality=np.zeros(N_POINTS, dtype=np.uint8),
    )


def alarm(transition: Transition) -> AlarmEvent:
    return AlarmEvent(
        alarm_id="P0:high",
        point="P0",
        device="dc1",
        key="k0",
        direction="high",
        transition=transition,
        level="alarm" if transition == "raise" else None,
        prev_level=None if transition == "raise" else "alarm",
        value=12.5,
        threshold=10.0,
        unit="kPa",
        ts=time.time(),
        text_zh="压力高报警",
        text_en="pressure high alarm",
        reading=12.5,
    )


async def eventually(pred: Callable[[], bool], within: float, what: str) -> None:
    """Wait for a condition with a deadline (no fixed sleeps as synchronisation)."""
    deadline = time.monotonic() + within
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.01)


class Collector:
    """A subscriber on the gateway's topics that reconnects after a broker outage."""

    def __init__(self, port: int, name: str = "collector") -> None:
        self.port, self.name = port, name
        self.messages: list[tuple[str, dict[str, Any], bool]] = []
        self.ready = asyncio.Event()  # connected and subscribed

    async def run(self) -> None:
        while True:
            honour_cancel()  # aiomqtt's wait_for may swallow the test's cancel (Python 3.11)
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=self.name) as c:
                    await c.subscribe(f"{PREFIX}/#", qos=1)
                    self.ready.set()
                    async for m in c.messages:
                        assert isinstance(m.payload, bytes)
                        self.messages.append((str(m.topic), orjson.loads(m.payload), m.retain))
            except aiomqtt.MqttError:
                self.ready.clear()
                await asyncio.sleep(0.02)  # retry interval while the broker is down

    def docs(self, stream: str) -> list[dict[str, Any]]:
        return [d for t, d, _ in self.messages if t == topic(stream)]

    def seqs(self, stream: str) -> list[int]:
        out: list[int] = []
        for d in self.docs(stream):
            rec = d["records"]
            out.extend(rec["seq"] if stream == "telemetry" else [r["seq"] for r in rec])
        return out

    def states(self) -> list[tuple[str, str]]:
        return [(d["state"], d["reason"]) for d in self.docs("status")]


class GatedUplink(MqttUplink):
    """Reaches the broker only while the test's subscriber is subscribed, so it misses nothing.

    While the gate is closed it dials a port nobody listens on: real refused connections.
    """

    def __init__(self, gate: asyncio.Event, up: UplinkSpec) -> None:
        super().__init__(up, SITE)
        self.gate = gate
        self.live, self.dead = up, spec(free_port())

    async def connect(self) -> None:
        self.spec = self.live if self.gate.is_set() else self.dead
        await super().connect()


@asynccontextmanager
async def running(coro: Any) -> AsyncIterator[asyncio.Task[Any]]:
    task = asyncio.create_task(coro)
    try:
        yield task
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            async with asyncio.timeout(20):  # a task that ignores the cancel fails the test
                await task


class Producer:
    """Puts one telemetry frame every 10 ms, like a fast poll loop."""

    def __init__(self, box: Outbox) -> None:
        self.box, self.records = box, 0
        self.stop = asyncio.Event()  # not cancel: a cancelled put may still commit

    async def run(self) -> None:
        k = 0
        while not self.stop.is_set():
            k += 1
            await self.box.put([encode_telemetry(frame(k), POINTS)])
            self.records += N_POINTS
            await asyncio.sleep(0.01)  # the poll interval


@pytest.fixture
async def outbox(tmp_path: Path) -> AsyncIterator[Outbox]:
    box = Outbox(tmp_path / "outbox.db", 50_000_000)
    await box.open()
    try:
        yield box
    finally:
        await box.close()


def diagnose(col: Collector, fwd: Forwarder, produced: int) -> str:
    missing = sorted(set(range(1, produced + 1)) - set(col.seqs("telemetry")))
    return (
        f"missing {len(missing)} seqs {missing[:5]}..{missing[-5:]}; forwarder {fwd.stats}; "
        f"status {col.states()}; subscriber ready {col.ready.is_set()}"
    )


async def all_delivered(col: Collector, fwd: Forwarder, produced: int) -> None:
    want = set(range(1, produced + 1))
    try:
        await eventually(lambda: set(col.seqs("telemetry")) >= want, 20, "all records")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {diagnose(col, fwd, produced)}") from None


def check_complete(col: Collector, produced: int, max_dups: int) -> None:
    seqs = col.seqs("telemetry")
    assert set(seqs) == set(range(1, produced + 1)), "lost records or a seq gap"
    assert len(seqs) - len(set(seqs)) <= max_dups, "duplicates beyond the in-flight batch"


async def test_records_arrive_alarms_first_with_online_status(
    broker: Broker, outbox: Outbox
) -> None:
    col = Collector(broker.port)
    # read a minute ago, before this agent's connection: backfill
    await outbox.put([encode_telemetry(frame(k, age=60.0), POINTS) for k in range(30)])
    await outbox.put([encode_alarms([alarm("raise"), alarm("clear")])])
    async with running(col.run()):
        await asyncio.wait_for(col.ready.wait(), 10)
        fwd = mqtt_forwarder(outbox, MqttUplink(spec(broker.port), SITE), SITE, spec(broker.port))
        async with running(fwd.run()):
            await eventually(lambda: len(col.seqs("telemetry")) == 150, 10, "150 records")
            await eventually(lambda: fwd.stats.records == 152, 10, "the last acks")
            # retained birth, seen by a subscriber that comes later
            late = Collector(broker.port, "late")
            async with running(late.run()):
                await eventually(lambda: late.states() == [("online", "connected")], 10, "birth")
                assert late.messages[0][2] is True  # retained
        await eventually(lambda: ("offline", "shutdown") in col.states(), 10, "goodbye")

    streams = [t.rsplit("/", 1)[1] for t, _, _ in col.messages if not t.endswith("/status")]
    assert streams[0] == "alarm"  # the alarm did not wait behind the telemetry backlog
    assert col.seqs("alarm") == [1, 2]
    check_complete(col, 150, 0)
    docs = col.docs("telemetry")
    assert all(len(d["records"]["seq"]) <= 50 for d in docs)
    assert all(d["backfill"] for d in docs)  # all queued before the connection
    assert col.states()[-1] == ("offline", "shutdown")
    assert fwd.stats.records == 152 and fwd.stats.connects == 1 and fwd.stats.failures == 0
    assert (await outbox.stats()).pending_rows == {"alarm": 0, "event": 0, "telemetry": 0}


CHILD = """
import asyncio, sys
from pathlib import Path
from agent.core.backoff import Backoff
from agent.uplink.flow import honour_cancel
from agent.uplink.forwarder import mqtt_forwarder
from agent.core.model import SiteSpec, UplinkSpec
from agent.uplink.mqtt import MqttUplink
from agent.store.outbox import Outbox

async def main() -> None:
    box = Outbox(Path(sys.argv[2]), 10_000_000)
    await box.open()
    site = SiteSpec("E100", "gw-1")
    spec = UplinkSpec("127.0.0.1", int(sys.argv[1]), "dust", "gw-1", keepalive=5)
    await mqtt_forwarder(box, MqttUplink(spec, site), site, spec).run()

asyncio.run(main())
"""


async def test_will_offline_when_the_agent_dies(broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.port)
    async with running(col.run()):
        await asyncio.wait_for(col.ready.wait(), 10)
        proc = subprocess.Popen(  # noqa: ASYNC220 (returns at once; waited on in a thread)
            [sys.executable, "-c", CHILD, str(broker.port), str(tmp_path / "child.db")],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        try:
            await eventually(lambda: col.states() == [("online", "connected")], 15, "birth")
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait, 10)
        await eventually(lambda: len(col.states()) == 2, 10, "the will")
    assert col.states()[-1] == ("offline", "lost")


async def outage(broker: Broker, col: Collector, fwd: Forwarder, prod: Producer) -> None:
    """Kill the broker mid-stream, let a backlog build, start it again."""
    await asyncio.to_thread(broker.stop, True)
    await eventually(lambda: not col.ready.is_set(), 10, "subscriber to see the outage")
    await eventually(lambda: fwd.stats.failures >= 3, 10, "several failed attempts")
    await eventually(lambda: prod.records - len(set(col.seqs("telemetry"))) >= 300, 10, "backlog")
    await asyncio.to_thread(broker.start)
    await eventually(lambda: fwd.stats.connects >= 2, 15, "reconnect")
    await eventually(
        lambda: any(d["backfill"] for d in col.docs("telemetry")[-20:]), 10, "backfill"
    )


async def test_broker_outage_loses_nothing_and_leaves_no_gap(
    broker: Broker, outbox: Outbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent.uplink.forwarder")
    col = Collector(broker.port)
    prod = Producer(outbox)
    up = spec(broker.port)
    fwd = mqtt_forwarder(outbox, GatedUplink(col.ready, up), SITE, up)
    async with running(col.run()):
        await asyncio.wait_for(col.ready.wait(), 10)
        async with running(fwd.run()), running(prod.run()) as producing:
            await eventually(lambda: len(col.seqs("telemetry")) >= 200, 10, "live records")
            await outage(broker, col, fwd, prod)
            prod.stop.set()
            await producing
            produced = prod.records
            await all_delivered(col, fwd, produced)
            await eventually(lambda: fwd.stats.records >= produced, 10, "the last acks")
    check_complete(col, produced, max_dups=50 * 10)  # up to max_inflight batches resent
    assert (await outbox.stats()).pending_records["telemetry"] == 0
    downs = [r for r in caplog.records if "uplink down" in r.getMessage()]
    backs = [r for r in caplog.records if "is back" in r.getMessage()]
    assert len(downs) == 1 and downs[0].levelno == logging.WARNING
    assert "cannot reach MQTT broker" in fwd.stats.last_error or "lost" in fwd.stats.last_error
    assert len(backs) == 1 and backs[0].levelno == logging.INFO


async def test_frozen_broker_detected_by_publish_timeout_and_recovered(
    broker: Broker, outbox: Outbox
) -> None:
    col = Collector(broker.port)
    prod = Producer(outbox)
    up = spec(broker.port, publish_timeout=0.5)
    fwd = mqtt_forwarder(outbox, MqttUplink(up, SITE), SITE, up)
    async with running(col.run()), running(fwd.run()), running(prod.run()) as producing:
        await eventually(lambda: len(col.seqs("telemetry")) >= 100, 10, "live records")
        await asyncio.to_thread(broker.freeze)
        try:
            await eventually(
                lambda: "did not acknowledge" in fwd.stats.last_error, 10, "a publish timeout"
            )
            await eventually(lambda: fwd.stats.failures >= 2, 10, "a failed reconnect")
        finally:
            await asyncio.to_thread(broker.thaw)
        connects = fwd.stats.connects
        await eventually(lambda: fwd.stats.connects > connects, 15, "reconnect after thaw")
        prod.stop.set()
        await producing
        produced = prod.records
        await all_delivered(col, fwd, produced)
    check_complete(col, produced, max_dups=50 * 10)  # up to max_inflight batches resent


async def test_uplink_errors_are_readable() -> None:
    port = free_port()  # nothing listens there
    up = MqttUplink(spec(port), SITE)
    with pytest.raises(UplinkError) as info:
        await up.connect()
    assert str(info.value) == f"cannot reach MQTT broker 127.0.0.1:{port}: connection refused"
    await up.close(clean=True)  # safe when not connected
    with pytest.raises(UplinkError, match="not connected"):
        await up.publish(topic("telemetry"), b"{}")


def test_backoff_grows_caps_and_resets_only_after_a_stable_session() -> None:
    b = Backoff(base=1.0, cap=4.0, stable_after=0.0)
    bounds = []
    for _ in range(5):
        bounds.append(min(b.cap, b.base * 2.0**b.attempt))
        assert 0.0 <= b.next_delay() <= bounds[-1]
    assert bounds == [1.0, 2.0, 4.0, 4.0, 4.0]
    b.stable_after = 3600.0
    b.connected()  # a short session: the next delay keeps growing from where it was
    b.next_delay()
    assert b.attempt == 6
    b.stable_after = 0.0
    b.connected()  # a session that lasted stable_after: start again from base
    b.next_delay()
    assert b.attempt == 1
