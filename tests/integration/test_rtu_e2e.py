"""RTU end to end: dust-sim over socat pty pairs (real RTU framing) and over TCP, dust-agent,
a real mosquitto; asserts what reaches the broker."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from firmware_sim.harness import Broker, dump_toml
from tests.conftest import REPO
from tests.e2e import BIN, Collector, Proc, start_agent, wait_for
from tests.pty import PtyPair

DEADLINE = 60.0  # generous: two shared cores; the happy path takes a few seconds
POLL = 1.0  # the faulty units cost up to ~0.8 s in their worst cycle at 19200 baud
GOOD, COMM, PROTO = 0, 1, 2


@contextlib.contextmanager
def sim(tmp: Path, name: str, *args: str) -> Iterator[Proc]:
    proc = Proc([str(BIN / "dust-sim"), "serve", "--scenario", "none", *args], tmp / f"{name}.log")
    try:
        proc.wait_log(r"dust-sim: serving")
        yield proc
    finally:
        proc.stop()


def device(name: str, bus: str, unit: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "bus": bus, "unit": unit, "profile": "dry_collector", **extra}


def write_config(
    tmp: Path, broker: Broker, buses: list[dict[str, Any]], devices: list[Any]
) -> Path:
    data = {
        "profiles_dir": str(REPO / "config" / "profiles"),
        "rules_pack": str(REPO / "config" / "rules" / "default.toml"),
        "site": {"enterprise_code": "E1", "gateway_id": "GW"},
        "buses": buses,
        "devices": devices,
        "uplink": {"host": "127.0.0.1", "port": broker.port, "topic_prefix": "t"},
        "storage": {"dir": str(tmp / "state")},
    }
    path = tmp / "agent.toml"
    path.write_text(dump_toml(data))
    return path


def records(col: Collector, device: str, key: str | None = None) -> list[dict[str, Any]]:
    return [r for r in col.readings() if r["device"] == device and (key is None or r["key"] == key)]


def alarms(col: Collector, alarm_id: str) -> list[dict[str, Any]]:
    return [a for a in col.alarm_records() if a["alarm_id"] == alarm_id]


def events(col: Collector, kind: str) -> list[dict[str, Any]]:
    return [r for body in col.stream("event") for r in body["records"] if r["kind"] == kind]


def rtu_bus(path: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": "line",
        "type": "rtu",
        "port": path,
        "baud": 19200,
        "timeout": 0.2,
        "poll_interval": POLL,
        **extra,
    }


def test_mixed_line_with_faults_and_tcp_buses(tmp_path: Path, broker: Broker) -> None:
    """One RS-485 line with a healthy unit, CRC errors, garbage, a dead unit and late replies,
    plus a Modbus TCP bus and an RTU-over-TCP bus in the same agent."""
    pty = PtyPair(tmp_path)
    pty.start()
    col = Collector(broker.port)
    col.start()
    # units 3 and 4 of the plant are wet collectors: the dry ones used here are 1, 2, 5, 6, 8
    faults = ["2:crc,every=3", "5:garbage,every=3", "6:no_answer", "8:delay=0.3,every=2"]
    with (
        sim(tmp_path, "rtu", "--rtu", pty.a, "--baud", "19200", "--units", "1,2,5,6,8",
            *[a for f in faults for a in ("--fault", f)]) as _,
        sim(tmp_path, "tcp", "--port", "0", "--units", "1") as tcp,
        sim(tmp_path, "rtutcp", "--rtu-tcp", "--port", "0", "--units", "7") as rtutcp,
    ):  # fmt: skip
        tcp_port = int(tcp.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1))
        rtutcp_port = int(rtutcp.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1))
        dc1_points = [
            {"key": "hopper_temp", "table": "input", "address": 0, "type": "float32"},
            {"key": "inlet_temp", "table": "input", "address": 4, "type": "int16", "scale": 0.1},
            {"key": "run_bit", "table": "input", "address": 7, "bit": 0},  # fan running = 1
            {"key": "bit1", "table": "input", "address": 7, "bit": 1},  # 0
            {"key": "ghost", "table": "input", "address": 11},  # not in the map: exception 2
            {"key": "fan_coil", "table": "coil", "address": 0},  # unit 1: bit 0 of 1 = 1
            {"key": "coil1", "table": "coil", "address": 1},  # 0
        ]
        cfg = write_config(
            tmp_path,
            broker,
            [
                rtu_bus(pty.b),
                {"name": "tcp", "type": "tcp", "host": "127.0.0.1", "port": tcp_port,
                 "timeout": 0.5, "poll_interval": POLL},
                {"name": "gw", "type": "rtu_tcp", "host": "127.0.0.1", "port": rtutcp_port,
                 "timeout": 0.3, "poll_interval": POLL},
            ],
            [
                {"name": "DC-1", "bus": "line", "unit": 1, "points": dc1_points},
                *(device(f"DC-{u}", "line", u) for u in (2, 5, 6, 8)),
                device("T-1", "tcp", 1),
                device("G-7", "gw", 7),
            ],
        )  # fmt: skip
        agent = start_agent(cfg, tmp_path / "agent.log")
        try:
            wait_for(
                lambda: len(alarms(col, "DC-6:comm_loss")) >= 1, DEADLINE, "DC-6 comm_loss alarm"
            )
            wait_for(
                lambda: all(
                    sum(r["quality"] == GOOD for r in records(col, d, "hopper_temp")) >= 6
                    for d in ("DC-1", "DC-2", "DC-5", "DC-8", "T-1", "G-7")
                ),
                DEADLINE,
                "good readings from every live device",
            )
            wait_for(
                lambda: all(
                    any(r["quality"] == COMM for r in records(col, d, "hopper_temp"))
                    for d in ("DC-2", "DC-5", "DC-8")
                ),
                DEADLINE,
                "the injected CRC, garbage and late-reply failures",
            )
        finally:
            assert agent.stop() == 0, agent.text()[-3000:]
    col.stop()
    pty.kill()

    # values: every good reading is a plausible plant value, never a corrupted frame's
    for d in ("DC-1", "DC-2", "DC-5", "DC-8", "T-1", "G-7"):
        for r in records(col, d):
            if r["quality"] == GOOD and r["key"] == "hopper_temp":
                assert 30.0 < r["value"] < 45.0, (d, r)
            if r["quality"] == GOOD and r["key"] == "inlet_temp":
                assert 20.0 < r["value"] < 30.0, (d, r)
            if r["quality"] != GOOD:
                assert r["value"] is None, r
    # bits, bit fields, and the bad address found once while the rest of the block reads on
    assert {r["value"] for r in records(col, "DC-1", "fan_coil") if r["quality"] == GOOD} == {1}
    assert {r["value"] for r in records(col, "DC-1", "coil1") if r["quality"] == GOOD} == {0}
    assert {r["value"] for r in records(col, "DC-1", "run_bit") if r["quality"] == GOOD} == {1}
    assert {r["value"] for r in records(col, "DC-1", "bit1") if r["quality"] == GOOD} == {0}
    ghost = records(col, "DC-1", "ghost")
    assert ghost and all(r["quality"] == PROTO and r["value"] is None for r in ghost)
    dc1 = [r for r in records(col, "DC-1") if r["key"] != "ghost"]
    assert sum(r["quality"] == GOOD for r in dc1) >= 0.9 * len(dc1)
    log = agent.text()
    assert log.count("illegal data address") == 1, log[-3000:]
    assert "ghost (input 11) marked bad" in log
    # the dead unit: comm_fail all along, one alarm, one log line; the healthy unit's cycle
    assert all(r["quality"] == COMM for r in records(col, "DC-6"))
    (raised,) = alarms(col, "DC-6:comm_loss")
    assert raised["transition"] == "raise" and raised["level"] == "alarm"
    assert raised["kind"] == "comm_loss" and raised["direction"] == "none"
    assert raised["text_zh"] == "DC-6 通讯中断" and raised["point"] == "DC-6"
    assert log.count("unit 6 (DC-6) not answering") == 1
    ts = sorted({r["ts"] for r in records(col, "DC-1", "hopper_temp")})
    gaps = [b - a for a, b in zip(ts[-6:], ts[-5:], strict=False)]
    assert statistics.median(gaps) < 1.6 * POLL * 1000, gaps  # ms
    # CRC, garbage and late replies cost one cycle each time, never a quarantine
    for d in ("DC-2", "DC-5", "DC-8"):
        assert not alarms(col, f"{d}:comm_loss"), d


def test_port_disappears_and_comes_back(tmp_path: Path, broker: Broker) -> None:
    """The serial port vanishes (socat killed: the adapter unplugged) and comes back at the
    same path: comm_fail meanwhile, comm_loss raised and cleared, one bus_down and one bus_up
    event with the outage's duration, the agent keeps running."""
    pty = PtyPair(tmp_path)
    pty.start()
    col = Collector(broker.port)
    col.start()
    with sim(tmp_path, "rtu", "--rtu", pty.a, "--baud", "19200", "--units", "1,2"):
        cfg = write_config(
            tmp_path,
            broker,
            [rtu_bus(pty.b, quarantine_first=0.5, quarantine_max=1.0)],
            [device("DC-1", "line", 1), device("DC-2", "line", 2)],
        )
        agent = start_agent(cfg, tmp_path / "agent.log")
        try:

            def good(d: str) -> int:
                return sum(r["quality"] == GOOD for r in records(col, d, "hopper_temp"))

            wait_for(lambda: good("DC-1") >= 3 and good("DC-2") >= 3, DEADLINE, "readings")
            t_unplug = time.monotonic()
            pty.kill()
            wait_for(
                lambda: (
                    len(alarms(col, "DC-1:comm_loss")) == 1
                    and len(alarms(col, "DC-2:comm_loss")) == 1
                ),
                DEADLINE,
                "comm_loss raised for both devices while the port is gone",
            )
            before = good("DC-1")
            wait_for(lambda: len(events(col, "bus_down")) >= 1, DEADLINE, "bus_down event")
            t_replug = time.monotonic()
            pty.start()
            wait_for(lambda: good("DC-1") >= before + 3, DEADLINE, "readings after the replug")
            wait_for(
                lambda: (
                    len(alarms(col, "DC-1:comm_loss")) == 2
                    and len(alarms(col, "DC-2:comm_loss")) == 2
                ),
                DEADLINE,
                "comm_loss cleared",
            )
            wait_for(lambda: len(events(col, "bus_up")) >= 1, DEADLINE, "bus_up event")
            t_up = time.monotonic()
        finally:
            assert agent.stop() == 0, agent.text()[-3000:]
    col.stop()
    pty.kill()
    for d in ("DC-1", "DC-2"):
        raised, cleared = alarms(col, f"{d}:comm_loss")
        assert raised["transition"] == "raise" and cleared["transition"] == "clear"
        assert cleared["text_zh"] == f"{d} 通讯恢复"
    outage = [r for r in records(col, "DC-1") if r["quality"] != GOOD]
    assert outage and all(r["quality"] == COMM and r["value"] is None for r in outage)
    log = agent.text()
    assert log.count("port lost") <= 1, log[-3000:]  # reported once, not per attempt
    assert "connected again after" in log
    # the bus-level report: one bus_down and one bus_up for the outage, not one per retry
    (down,) = events(col, "bus_down")
    (up,) = events(col, "bus_up")
    assert down["data"]["bus"] == "line" and up["data"]["bus"] == "line"
    assert "port lost" in down["data"]["reason"] or "no such port" in down["data"]["reason"]
    assert down["seq"] < up["seq"] and down["ts"] <= up["ts"]
    outage = up["data"]["outage_s"]
    # down is noticed within a cycle or two of the unplug, up after the replug (+ backoff)
    assert t_replug - t_unplug - 2 * POLL - 1.0 <= outage <= t_up - t_unplug, outage
    assert abs((up["ts"] - down["ts"]) / 1000 - outage) < 0.5


def test_point_read_mode_for_a_device_that_rejects_multi_register_reads(
    tmp_path: Path, broker: Broker
) -> None:
    """Units 1 and 2 both answer reads of more than 2 registers with exception 3 (illegal data
    value). DC-1 has `read_mode = "point"`: one request per point, every point reads good.
    DC-2 keeps block mode: its one block read is refused, so its points carry PROTOCOL."""
    pty = PtyPair(tmp_path)
    pty.start()
    col = Collector(broker.port)
    col.start()
    faults = ("--fault", "1:max_count=2", "--fault", "2:max_count=2")
    with sim(tmp_path, "rtu", "--rtu", pty.a, "--baud", "19200", "--units", "1,2", *faults):
        cfg = write_config(
            tmp_path,
            broker,
            [rtu_bus(pty.b)],
            [device("DC-1", "line", 1, read_mode="point"), device("DC-2", "line", 2)],
        )
        agent = start_agent(cfg, tmp_path / "agent.log")
        try:
            wait_for(lambda: len(records(col, "DC-2")) > 0, DEADLINE, "DC-2 records")
            keys = {r["key"] for r in records(col, "DC-2")}  # every point of the profile

            def good_cycles(key: str) -> int:
                return sum(r["quality"] == GOOD for r in records(col, "DC-1", key))

            wait_for(
                lambda: all(good_cycles(k) >= 3 for k in keys),
                DEADLINE,
                "good readings of every DC-1 point in point mode",
            )
        finally:
            assert agent.stop() == 0, agent.text()[-3000:]
    col.stop()
    pty.kill()
    assert len(keys) >= 8, keys
    dc1 = records(col, "DC-1")
    assert {r["key"] for r in dc1} == keys
    assert all(r["quality"] == GOOD for r in dc1), [r for r in dc1 if r["quality"] != GOOD][:3]
    for r in records(col, "DC-1", "hopper_temp"):
        assert 30.0 < r["value"] < 45.0, r
    dc2 = records(col, "DC-2")
    assert all(r["quality"] == PROTO and r["value"] is None for r in dc2), dc2[:3]
    log = agent.text()
    assert "illegal data value" in log, log[-3000:]
    assert not alarms(col, "DC-1:comm_loss") and not alarms(col, "DC-2:comm_loss")
