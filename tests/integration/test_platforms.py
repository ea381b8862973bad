"""Platform uplinks over real HTTP on loopback, against the reference receivers (and mosquitto)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import orjson
import pytest

from agent.core.model import Frame
from agent.core.platformspec import PlatformSpec
from agent.store.outbox import Outbox
from agent.uplink.forwarder import Forwarder, mqtt_forwarder
from agent.uplink.mqtt import MqttUplink
from agent.uplink.payload import encode_alarms, encode_telemetry
from agent.uplink.platforms import hebei, mem
from agent.uplink.platforms.forwarder import make_platform_forwarder
from agent.uplink.platforms.http import HttpUplink, PlatformRefused
from agent.uplink.platforms.receiver import Receiver
from firmware_sim.harness import Broker
from tests.e2e import Proc
from tests.integration.test_forwarder import (
    N_POINTS,
    POINTS,
    SITE,
    Collector,
    alarm,
    eventually,
    running,
    spec,
)

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
CODES = frozenset(p.code for p in POINTS)
BASE_TS = float(int(time.time()) - 7200)  # readings of two hours ago: a backlog
TZ = ZoneInfo("Asia/Shanghai")


def hebei_spec(url: str = "http://127.0.0.1:1", **kw: Any) -> PlatformSpec:
    base: dict[str, Any] = {
        "name": "hebei",
        "profile": "hebei_v1_1",
        "url": url,
        "enterprise_code": "130100000001",
        "gateway_code": "13010000000101",
        "key": b"k3y-8byt",
        "iv": b"1v-8byte",
        "telemetry": hebei.RTS,
        "alarm": hebei.EVENTS,
        "codes": CODES,
        "decimals": {"P1": 1},
        "period": 1.0,  # one value per point and second: every test frame is sent
        "timeout": 2.0,
        "backoff_base": 0.05,
        "backoff_cap": 0.3,
    }
    base.update(kw)
    return PlatformSpec(**base)


def mem_spec(url: str = "http://127.0.0.1:1") -> PlatformSpec:
    return hebei_spec(
        url,
        name="mem",
        profile="mem",
        key=b"0123456789abcdef",
        iv=b"fedcba9876543210",
        telemetry=mem.EXAMPLE_TELEMETRY,
        alarm=mem.EXAMPLE_ALARM,
        appid="APP-1",
        appsecret="S3CRET",
        hex_upper=False,
    )


def frame(k: int) -> Frame:
    """Reading k: BASE_TS + k seconds, values k + point index (+ 0.25)."""
    return Frame(
        index=np.arange(N_POINTS, dtype=np.intp),
        ts=np.full(N_POINTS, BASE_TS + k),
        value=np.arange(N_POINTS, dtype=np.float64) + k + 0.25,
        quality=np.zeros(N_POINTS, dtype=np.uint8),
    )


def local(ts: float) -> str:
    return datetime.fromtimestamp(ts, TZ).strftime("%Y-%m-%d %H:%M:%S")


def expected_rts(frames: range, sp: PlatformSpec) -> set[tuple[str, str, str]]:
    return {
        (p.code, local(BASE_TS + k), f"{k + p.index + 0.25:.{sp.decimals_of(p.code)}f}")
        for k in frames
        for p in POINTS
    }


def got_rts(rec: Receiver) -> set[tuple[str, str, str]]:
    return {(i["tnm"], i["ts"], i["val"]) for i in rec.items("rtsData")}


@pytest.fixture
async def box(tmp_path: Path) -> AsyncIterator[Outbox]:
    b = Outbox(tmp_path / "outbox.db", 50_000_000, consumers=("mqtt", "hebei"))
    await b.open()
    try:
        yield b
    finally:
        await b.close()


@pytest.fixture
def receiver() -> Any:
    rec = Receiver(hebei_spec())
    rec.start()
    rec.spec = hebei_spec(rec.url)
    try:
        yield rec
    finally:
        rec.stop()


def platform(box: Outbox, rec: Receiver, sp: PlatformSpec | None = None) -> Forwarder:
    return make_platform_forwarder(box.consumer("hebei"), sp or hebei_spec(rec.url))


async def test_values_and_events_arrive_decrypted_and_field_correct(
    box: Outbox, receiver: Receiver
) -> None:
    await box.put([encode_telemetry(frame(k), POINTS) for k in range(20)])
    await box.put([encode_alarms([alarm("raise"), alarm("clear")])])
    pf = platform(box, receiver)
    async with running(pf.run()):
        await eventually(lambda: len(receiver.items("rtsData")) == 100, 20, "100 values")
        await eventually(lambda: len(receiver.items("eventsData")) == 2, 20, "2 events")
        await eventually(lambda: pf.stats.records == 102, 20, "the acks")
    assert receiver.refused == []
    assert got_rts(receiver) == expected_rts(range(20), receiver.spec)
    raise_, clear = receiver.items("eventsData")
    assert raise_["oname"] == "P0" and raise_["scd"] == 4 and clear["scd"] == 0
    assert raise_["avx"] == "12.50" and raise_["threshold"] == "10.00"
    assert raise_["content"] == "压力高报警"
    # the alarms went first, in one request; the values in requests of many points
    assert receiver.received[0].endpoint == "eventsData"
    assert all(len(r.items) > N_POINTS for r in receiver.received[1:])
    assert (await box.consumer("hebei").pending()) == {"alarm": 0, "event": 0, "telemetry": 0}


async def test_ministry_envelope_and_mapping(tmp_path: Path) -> None:
    b = Outbox(tmp_path / "outbox.db", 50_000_000, consumers=("mqtt", "mem"))
    await b.open()
    rec = Receiver(mem_spec())
    rec.start()
    rec.spec = mem_spec(rec.url)
    try:
        await b.put([encode_telemetry(frame(k), POINTS) for k in range(3)])
        await b.put([encode_alarms([alarm("raise")])])
        pf = make_platform_forwarder(b.consumer("mem"), rec.spec)
        async with running(pf.run()):
            await eventually(lambda: len(rec.items("realtime")) == 15, 20, "15 values")
            await eventually(lambda: len(rec.items("alarm")) == 1, 20, "1 alarm")
        assert rec.refused == []
        assert rec.received[-1].doc["qybm"] == "130100000001"
        (a,) = rec.items("alarm")
        assert a["status"] == 4 and a["content"] == "压力高报警" and a["pointCode"] == "P0"
    finally:
        rec.stop()
        await b.close()


async def test_receiver_outage_loses_nothing_while_mqtt_keeps_flowing(
    broker: Broker, box: Outbox, receiver: Receiver
) -> None:
    col = Collector(broker.port)
    up = spec(broker.port)
    fwd = mqtt_forwarder(box, MqttUplink(up, SITE), SITE, up)
    pf = platform(box, receiver)
    produced = 0
    stop = asyncio.Event()

    async def produce() -> None:
        nonlocal produced
        while not stop.is_set():
            await box.put([encode_telemetry(frame(produced), POINTS)])
            produced += 1
            await asyncio.sleep(0.01)

    async with running(col.run()):
        await asyncio.wait_for(col.ready.wait(), 10)
        async with running(fwd.run()), running(pf.run()), running(produce()) as producing:
            await eventually(lambda: len(receiver.items("rtsData")) >= 50, 20, "values")
            await asyncio.to_thread(receiver.stop)  # the platform goes down
            await eventually(lambda: pf.stats.failures >= 3, 20, "failed attempts")
            seen = len(set(col.seqs("telemetry")))
            await eventually(
                lambda: len(set(col.seqs("telemetry"))) >= seen + 500, 20, "MQTT flowing"
            )
            assert not pf.stats.connected and "cannot reach platform hebei" in pf.stats.last_error
            pending = await box.consumer("hebei").pending()
            assert pending["telemetry"] > 0
            await asyncio.to_thread(receiver.start)  # back, on the same port
            await eventually(lambda: pf.stats.connected, 20, "the platform accepting again")
            stop.set()
            await producing
            want = expected_rts(range(produced), receiver.spec)
            await eventually(lambda: got_rts(receiver) >= want, 30, "the whole backlog")
            await eventually(
                lambda: set(col.seqs("telemetry")) >= set(range(1, produced * N_POINTS + 1)),
                20,
                "every record over MQTT",
            )
            # The receiver has everything; wait for the forwarder to record its last ack
            # while it still runs (stopping it first would cancel that ack).
            await eventually(lambda: pf.stats.records >= produced * N_POINTS, 10, "the last ack")
            # the same for MQTT: the collector can have a message before its PUBACK is acked
            await eventually(lambda: fwd.stats.records >= produced * N_POINTS, 10, "MQTT acks")
    assert got_rts(receiver) == want
    assert receiver.refused == []
    stats = await box.stats()
    assert stats.pending_records["telemetry"] == 0  # both acked: the rows are gone


async def test_refusal_is_retried_not_lost(box: Outbox, receiver: Receiver) -> None:
    receiver.answer_code = 503
    await box.put([encode_telemetry(frame(k), POINTS) for k in range(10)])
    pf = platform(box, receiver)
    async with running(pf.run()):
        await eventually(lambda: pf.stats.failures >= 3, 20, "refusals")
        assert "code 503" in pf.stats.last_error
        assert (await box.consumer("hebei").pending())["telemetry"] == 50
        assert receiver.received == []
        receiver.answer_code = 200
        await eventually(lambda: len(got_rts(receiver)) == 50, 20, "values after the refusals")
    assert got_rts(receiver) == expected_rts(range(10), receiver.spec)


async def test_a_pending_alarm_cuts_the_backoff_to_the_probe_interval(
    box: Outbox, receiver: Receiver
) -> None:
    """Issue 12 item 6: after a run of faults a new alarm waited out the whole backoff."""
    pf = platform(box, receiver)
    pf.policy = dataclasses.replace(pf.policy, alarm_probe=0.5)
    started = time.monotonic()
    await pf._backoff(1.5)  # nothing pending: the backoff as it is
    assert time.monotonic() - started >= 1.5
    await box.put([encode_alarms([alarm("raise")])])
    started = time.monotonic()
    await pf._backoff(60.0)  # an alarm is pending: tried again after the probe interval
    assert time.monotonic() - started < 30.0  # far below the 60 s backoff
    assert (
        make_platform_forwarder(
            box.consumer("hebei"), hebei_spec(backoff_cap=60)
        ).policy.alarm_probe
        == 5.0
    )


async def test_wrong_key_gives_a_clear_error(box: Outbox, receiver: Receiver) -> None:
    await box.put([encode_telemetry(frame(0), POINTS)])
    pf = platform(box, receiver, hebei_spec(receiver.url, key=b"wrongkey"))
    async with running(pf.run()):
        await eventually(lambda: pf.stats.failures >= 2, 20, "refusals")
    err = pf.stats.last_error
    assert "platform hebei refused the data" in err and "code 401" in err
    assert "decryption failed" in err and "check the key and IV files" in err
    assert (await box.consumer("hebei").pending())["telemetry"] == 5


async def test_rehearse_command(tmp_path: Path) -> None:
    key = tmp_path / "hebei.key"
    key.write_text("k3y-8byt\n")
    os.chmod(key, 0o600)
    iv = tmp_path / "hebei.iv"
    iv.write_text("1v-8byte\n")
    os.chmod(iv, 0o600)
    args = ["platform-rehearse", "--profile", "hebei_v1_1", "--port", "0"]
    args += ["--key-file", str(key), "--iv-file", str(iv)]
    args += ["--enterprise", "130100000001", "--gateway", "13010000000101"]
    proc = Proc([str(BIN / "dust-agent"), *args], tmp_path / "rehearse.log")
    try:
        port = int(proc.wait_log(r"listening on http://127\.0\.0\.1:(\d+)").group(1))
        sp = hebei_spec(f"http://127.0.0.1:{port}", codes=frozenset())
        up = HttpUplink(sp, hebei.seal)
        await up.connect()
        item = {"tnm": "P0", "ts": "2024-05-01 12:00:00", "val": "27.20"}
        doc = {"qybm": "130100000001", "data": {"rts": [item]}}  # the document's shape
        await up.publish("rtsData", orjson.dumps(doc))
        bad = {**doc, "data": {"rts": [{**item, "ts": "2024-05-01T12:00"}]}}
        with pytest.raises(PlatformRefused, match=r"code 400 .*item 0\.ts"):
            await up.publish("rtsData", orjson.dumps(bad))
        await up.close(clean=True)
        proc.wait_log(r"rtsData: 1 item\(s\), answered code 200: tnm=P0 ts=2024-05-01 12:00:00")
        proc.wait_log(r"rtsData: REFUSED code 400")
    finally:
        assert proc.stop(signal.SIGTERM) == 0


def test_agent_feeds_mqtt_and_the_platform_and_reports_each(broker: Broker, tmp_path: Path) -> None:
    """The real agent process: dust-sim → dust-agent → mosquitto and the Hebei receiver."""
    import tomllib

    from agent.service.status_file import STATUS_NAME
    from firmware_sim.harness import dump_toml
    from tests.e2e import Collector as MqttCollector
    from tests.e2e import agent_config, simulator, start_agent, wait_for

    rec = Receiver(hebei_spec())
    rec.start()
    key = tmp_path / "hebei.key"
    key.write_text("k3y-8byt\n")
    os.chmod(key, 0o600)
    iv = tmp_path / "hebei.iv"
    iv.write_text("1v-8byte\n")
    os.chmod(iv, 0o600)
    collector = MqttCollector(broker.port)
    collector.start()
    try:
        with simulator(tmp_path, "--scenario", "none") as (_, sim_port):
            cfg = agent_config(tmp_path, sim_port, broker.port)
            data = tomllib.loads(cfg.read_text())
            data["platforms"] = [
                {
                    "name": "hebei",
                    "profile": "hebei_v1_1",
                    "url": rec.url,
                    "allow_http": True,
                    "period": 1.0,
                    "points": ["DC-1.hopper_temp"],
                    "point_decimals": {"DC-1.hopper_temp": 1},
                    "key_file": str(key),
                    "iv_file": str(iv),
                    "backoff_base": 0.1,
                    "backoff_cap": 0.5,
                }
            ]
            cfg.write_text(dump_toml(data))
            code = "1301000000010101001"  # the example config's explicit code
            rec.spec = hebei_spec(
                rec.url, key=b"k3y-8byt", codes=frozenset({code}), decimals={code: 1}
            )
            agent = start_agent(cfg, tmp_path / "agent.log")
            try:
                wait_for(lambda: len(rec.items("rtsData")) >= 3, 30, "values at the platform")
                wait_for(lambda: len(collector.stream("telemetry")) >= 3, 30, "MQTT telemetry")
                status = tmp_path / "state" / STATUS_NAME

                def uplinks() -> dict[str, Any]:
                    try:
                        doc = orjson.loads(status.read_bytes())
                    except (OSError, orjson.JSONDecodeError):
                        return {}
                    return dict(doc.get("health", {}).get("uplinks") or {})

                wait_for(lambda: uplinks().get("hebei", {}).get("requests", 0) > 0, 30, "health")
            finally:
                assert agent.stop() == 0
    finally:
        collector.stop()
        rec.stop()
    assert rec.refused == []
    assert {i["tnm"] for i in rec.items("rtsData")} == {code}
    got = uplinks()
    assert set(got) == {"mqtt", "hebei"}
    assert got["hebei"]["profile"] == "hebei_v1_1" and got["hebei"]["target"] == rec.url
