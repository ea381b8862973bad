"""The Uplink contract suite: one set of tests run over every uplink the forwarding loop drives.

MQTT (real mosquitto), the Hebei V1.1 profile and the ministry profile (real HTTP on
127.0.0.1 against the reference receivers of agent.uplink.platforms.receiver). Every
record carries its own seq as its value, so each far end's arrivals are read back as
(stream, seq) from what it decoded (MQTT: the seq field; platforms: the value of each
item), whatever the wire shape. The contract (agent.uplink.contract):

- order: the records of each stream arrive in seq order when nothing fails;
- at-least-once: every seq arrives; duplicates only from the in-flight window, at most
  max_inflight * max_records records per failure;
- a failure (broker stopped, receiver answering 503) is retried until it succeeds;
- nothing is lost across a restart of the forwarder and outbox with unacknowledged rows;
- alarms go before the telemetry backlog.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest

from agent.core.model import Frame
from agent.core.platformspec import PlatformSpec
from agent.store.outbox import Outbox, OutboxConsumer
from agent.uplink.forwarder import Forwarder, mqtt_forwarder
from agent.uplink.payload import encode_alarms, encode_telemetry
from agent.uplink.platforms.forwarder import make_platform_forwarder
from agent.uplink.platforms.receiver import Receiver
from firmware_sim.harness import Broker
from tests.integration.test_forwarder import (
    N_POINTS,
    POINTS,
    SITE,
    Collector,
    GatedUplink,
    alarm,
    eventually,
    running,
    spec,
)
from tests.integration.test_platforms import hebei_spec, mem_spec

pytestmark = pytest.mark.integration

BASE_TS = float(int(time.time()) - 7200)  # readings of two hours ago: a backlog
PEER = "peer"  # a second consumer that never reads: every ack takes the shared path
Arrival = tuple[str, int]  # (stream, seq)


class FarEnd(Protocol):
    """One uplink under test and the far end that decodes what it receives."""

    name: str
    window: int  # records that may arrive twice per failure (max_inflight * max_records)

    def forwarder(self, consumer: OutboxConsumer) -> Forwarder: ...

    def arrivals(self) -> list[Arrival]: ...

    async def fail(self) -> None: ...

    async def recover(self) -> None: ...


class MqttEnd:
    name = "mqtt"

    def __init__(self, broker: Broker, stack: AsyncExitStack) -> None:
        self.broker, self.stack = broker, stack
        # backlog at 2,000 records/s: a 5,000-record backlog drains for seconds, not ms
        self.spec = spec(broker.port, max_records_per_message=50, backlog_rate=2000.0)
        self.window = self.spec.max_inflight * self.spec.max_records_per_message
        self.col = Collector(broker.port)

    async def start(self) -> None:
        await self.stack.enter_async_context(running(self.col.run()))
        await asyncio.wait_for(self.col.ready.wait(), 10)

    def forwarder(self, consumer: OutboxConsumer) -> Forwarder:
        # connects only while the collector is subscribed, so it misses nothing
        return mqtt_forwarder(consumer, GatedUplink(self.col.ready, self.spec), SITE, self.spec)

    def arrivals(self) -> list[Arrival]:
        out: list[Arrival] = []
        for t, d, _ in self.col.messages:
            stream = t.rsplit("/", 1)[-1]
            if stream == "telemetry":
                out += [(stream, s) for s in d["records"]["seq"]]
            elif stream == "alarm":
                out += [(stream, r["seq"]) for r in d["records"]]
        return out

    async def fail(self) -> None:
        await asyncio.to_thread(self.broker.freeze)  # no PUBACK, no CONNACK: sends hang

    async def recover(self) -> None:
        await asyncio.to_thread(self.broker.thaw)


class PlatformEnd:
    def __init__(self, make_spec: Callable[[str], PlatformSpec], value_keys: dict[str, str]):
        self.receiver = Receiver(make_spec("http://127.0.0.1:1"))
        self.receiver.start()
        self.spec = dataclasses.replace(
            make_spec(self.receiver.url), max_items=20, backoff_base=0.02
        )
        self.receiver.spec = self.spec
        self.name = self.spec.name
        self.window = self.spec.max_items  # one request in flight
        self.value_keys = value_keys  # endpoint -> the item field holding the value

    async def start(self) -> None:
        return None

    def forwarder(self, consumer: OutboxConsumer) -> Forwarder:
        return make_platform_forwarder(consumer, self.spec)

    def arrivals(self) -> list[Arrival]:
        tel = self.spec.telemetry
        streams = {tel.endpoint if tel else "": "telemetry"}
        if self.spec.alarm is not None:
            streams[self.spec.alarm.endpoint] = "alarm"
        out: list[Arrival] = []
        for r in list(self.receiver.received):  # a copy: the receiver appends from its thread
            key = self.value_keys[r.endpoint]
            out += [(streams[r.endpoint], round(float(i[key]))) for i in r.items]
        return out

    async def fail(self) -> None:
        self.receiver.answer_code = 503

    async def recover(self) -> None:
        self.receiver.answer_code = 200


@pytest.fixture(params=["mqtt", "hebei", "mem"])
async def end(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    async with AsyncExitStack() as stack:
        far: MqttEnd | PlatformEnd
        if request.param == "mqtt":
            broker = request.getfixturevalue("broker")
            far = MqttEnd(broker, stack)
        elif request.param == "hebei":
            far = PlatformEnd(hebei_spec, {"rtsData": "val", "eventsData": "avx"})
        else:
            far = PlatformEnd(mem_spec, {"realtime": "value", "alarm": "value"})
        if isinstance(far, PlatformEnd):
            stack.callback(far.receiver.stop)
        await far.start()
        yield far


async def open_box(path: Path, name: str) -> Outbox:
    box = Outbox(path / "outbox.db", 50_000_000, consumers=(name, PEER))
    await box.open()
    return box


def frame(k: int) -> Frame:
    """Telemetry frame k (the k-th put, from 0): each value is its record's seq."""
    first = k * N_POINTS + 1
    return Frame(
        index=np.arange(N_POINTS, dtype=np.intp),
        ts=np.full(N_POINTS, BASE_TS + k),
        value=np.arange(first, first + N_POINTS, dtype=np.float64),
        quality=np.zeros(N_POINTS, dtype=np.uint8),
    )


async def put_frames(box: Outbox, frames: range) -> None:
    await box.put([encode_telemetry(frame(k), POINTS) for k in frames])


async def put_alarm(box: Outbox, seq: int) -> None:
    """The seq-th alarm record (from 1), its value and reading its seq. Raise and clear
    alternate, so that each record changes the point's status (what a platform is sent)."""
    ev = alarm("raise" if seq % 2 else "clear")
    await box.put([encode_alarms([dataclasses.replace(ev, value=seq, reading=float(seq))])])


def want(telemetry: int, alarms: int = 0) -> set[Arrival]:
    return {("telemetry", s) for s in range(1, telemetry + 1)} | {
        ("alarm", s) for s in range(1, alarms + 1)
    }


def duplicates(got: list[Arrival]) -> int:
    return sum(n - 1 for n in Counter(got).values())


async def all_arrive(end: FarEnd, expected: set[Arrival], within: float = 30) -> None:
    await eventually(lambda: set(end.arrivals()) >= expected, within, f"{len(expected)} records")


async def test_order_per_stream_and_each_record_once(end: FarEnd, tmp_path: Path) -> None:
    box = await open_box(tmp_path, end.name)
    try:
        await put_frames(box, range(60))
        for j in (1, 2, 3):
            await put_alarm(box, j)
        fwd = end.forwarder(box.consumer(end.name))
        async with running(fwd.run()):
            await all_arrive(end, want(60 * N_POINTS, 3))
            await eventually(lambda: fwd.stats.records == 60 * N_POINTS + 3, 10, "the acks")
        got = end.arrivals()
        assert duplicates(got) == 0  # nothing failed: nothing is sent twice
        for stream in ("telemetry", "alarm"):
            seqs = [s for st, s in got if st == stream]
            assert seqs == sorted(seqs), f"{stream} out of order"
        pending = await box.consumer(end.name).pending()
        assert pending == {"alarm": 0, "event": 0, "telemetry": 0}
    finally:
        await box.close()


async def test_alarms_go_before_the_telemetry_backlog(end: FarEnd, tmp_path: Path) -> None:
    box = await open_box(tmp_path, end.name)
    try:
        await put_frames(box, range(1000))  # 5,000 records of backlog
        await put_alarm(box, 1)  # stored after all of it
        async with running(end.forwarder(box.consumer(end.name)).run()):
            await eventually(lambda: ("alarm", 1) in end.arrivals(), 20, "the first alarm")
            assert end.arrivals()[0] == ("alarm", 1)  # first, before any of the backlog
            await eventually(lambda: len(end.arrivals()) > 50, 20, "backlog draining")
            await put_alarm(box, 2)  # raised while the backlog drains
            await all_arrive(end, want(1000 * N_POINTS, 2))
        got = end.arrivals()
        assert got.index(("alarm", 2)) < got.index(("telemetry", 1000 * N_POINTS))
    finally:
        await box.close()


async def test_failure_is_retried_and_loses_nothing(end: FarEnd, tmp_path: Path) -> None:
    box = await open_box(tmp_path, end.name)
    try:
        await put_frames(box, range(20))
        fwd = end.forwarder(box.consumer(end.name))
        async with running(fwd.run()):
            await all_arrive(end, want(20 * N_POINTS))
            await end.fail()
            try:
                await put_frames(box, range(20, 60))
                await put_alarm(box, 1)
                await eventually(lambda: fwd.stats.failures >= 2, 20, "failed attempts")
                assert not fwd.stats.connected and fwd.stats.last_error
            finally:
                await end.recover()
            await all_arrive(end, want(60 * N_POINTS, 1))
            await eventually(lambda: fwd.stats.records == 60 * N_POINTS + 1, 10, "the acks")
        assert duplicates(end.arrivals()) <= end.window * fwd.stats.failures
        assert (await box.consumer(end.name).pending())["telemetry"] == 0
    finally:
        await box.close()


async def test_restart_with_unacked_rows_loses_nothing(end: FarEnd, tmp_path: Path) -> None:
    box = await open_box(tmp_path, end.name)
    try:
        await put_frames(box, range(10))
        first = end.forwarder(box.consumer(end.name))
        async with running(first.run()):
            await all_arrive(end, want(10 * N_POINTS))
            await end.fail()
            sent = first.stats.published
            await put_frames(box, range(10, 40))
            await put_alarm(box, 1)
            await eventually(lambda: first.stats.published > sent, 20, "unacknowledged sends")
    finally:
        await box.close()  # the process stops with rows sent but never acknowledged
        await end.recover()
    box = await open_box(tmp_path, end.name)  # a new process over the same database
    try:
        second = end.forwarder(box.consumer(end.name))
        async with running(second.run()):
            await all_arrive(end, want(40 * N_POINTS, 1))
            await eventually(lambda: second.stats.records == 30 * N_POINTS + 1, 10, "the acks")
        # duplicates: at most what the first forwarder had in flight, once per failure
        assert duplicates(end.arrivals()) <= end.window * (first.stats.failures + 1)
        assert (await box.consumer(end.name).pending())["telemetry"] == 0
    finally:
        await box.close()
