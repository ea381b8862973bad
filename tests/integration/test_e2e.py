"""The whole path, real at every stage: dust-sim → dust-agent → mosquitto → a subscriber."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from firmware_sim.harness import Broker
from tests.conftest import REPO
from tests.e2e import BIN, Collector, agent_config, seq_gaps, simulator, start_agent, wait_for

pytestmark = pytest.mark.integration


def outbox_query(state: Path, sql: str) -> int:
    """One integer from the agent's outbox, read-only (the agent keeps writing)."""
    con = sqlite3.connect(f"file:{state / 'outbox.db'}?mode=ro", uri=True, timeout=5)
    try:
        (value,) = con.execute(sql).fetchone()
        return int(value or 0)
    finally:
        con.close()


def pending_telemetry_rows(state: Path) -> int:
    try:
        return outbox_query(state, "SELECT count(*) FROM outbox WHERE stream='telemetry'")
    except sqlite3.Error:
        return 0


def test_readings_arrive_with_values_and_units(broker: Broker, tmp_path: Path) -> None:
    collector = Collector(broker.port)
    collector.start()
    with simulator(tmp_path, "--scenario", "none") as (_, sim_port):
        agent = start_agent(agent_config(tmp_path, sim_port, broker.port), tmp_path / "agent.log")
        try:
            wait_for(
                lambda: len(collector.stream("telemetry")) >= 3, 30, "three telemetry messages"
            )
            started = time.time()
        finally:
            assert agent.stop() == 0, agent.text()[-3000:]
    collector.stop()

    readings = list(collector.readings())
    by_point: dict[str, list[dict[str, object]]] = {}
    for r in readings:
        by_point.setdefault(f"{r['device']}.{r['key']}", []).append(r)
    assert set(by_point) == {
        f"DC-{u}.{k}"
        for u in (1, 2)
        for k in (
            "hopper_temp",
            "diff_pressure",
            "inlet_temp",
            "outlet_temp",
            "pulse_pressure",
            "fan_running",
            "airlock_state",
            "spark_count",
        )
    }
    expect = {
        "hopper_temp": ("°C", 25.0, 50.0),
        "diff_pressure": ("Pa", 500.0, 1600.0),
        "inlet_temp": ("°C", 15.0, 40.0),
        "outlet_temp": ("°C", 15.0, 45.0),
        "pulse_pressure": ("MPa", 0.45, 0.75),
        "fan_running": ("", 1.0, 1.0),
        "airlock_state": ("", 1.0, 1.0),
        "spark_count": ("", 0.0, 0.0),
    }
    for name, rows in by_point.items():
        unit, lo, hi = expect[name.split(".", 1)[1]]
        for r in rows:
            assert r["quality"] == 0, r
            assert r["unit"] == unit, r
            value = r["value"]
            assert isinstance(value, float | int) and lo <= value <= hi, r
            ts = r["ts"]
            assert isinstance(ts, int) and abs(ts / 1000 - started) < 60, r
    # the hopper point of DC-1 carries its platform code from the example config
    assert {r["point"] for r in by_point["DC-1.hopper_temp"]} == {"1301000000010101001"}
    # seq: per stream, gap-free
    assert seq_gaps(collector.telemetry_seqs()) == []
    status = [m for m in collector.snapshot() if m.topic.endswith("/status")]
    assert status and status[-1].body["state"] == "offline"
    assert any(m.body["state"] == "online" for m in status)


def test_smoulder_raises_hopper_alarm_and_journal_has_it(broker: Broker, tmp_path: Path) -> None:
    collector = Collector(broker.port)
    collector.start()
    cfg = agent_config(tmp_path, 0, broker.port)
    with simulator(tmp_path, "--scenario", "smoulder", "--speed", "2") as (_, sim_port):
        cfg = agent_config(tmp_path, sim_port, broker.port)
        agent = start_agent(cfg, tmp_path / "agent.log")
        try:

            def alarmed() -> bool:
                return any(
                    r["key"] == "hopper_temp"
                    and r["device"] == "DC-1"
                    and r["level"] == "alarm"
                    and r["kind"] == "threshold"
                    for r in collector.alarm_records()
                )

            wait_for(alarmed, 90, "the DC-1 hopper temperature alarm")
        finally:
            assert agent.stop() == 0, agent.text()[-3000:]
    collector.stop()

    every = [
        r for r in collector.alarm_records() if r["device"] == "DC-1" and r["key"] == "hopper_temp"
    ]
    # the rate-of-rise rule sees the smoulder before the absolute threshold does
    assert every[0]["kind"] == "rate", every
    hopper = [r for r in every if r["kind"] == "threshold"]
    # warning first, then escalation to alarm, with thresholds, unit and both texts
    assert [(r["transition"], r["level"]) for r in hopper][:2] == [
        ("raise", "warning"),
        ("escalate", "alarm"),
    ]
    warn, alarm = hopper[0], hopper[1]
    assert warn["threshold"] == 60.0 and alarm["threshold"] == 70.0
    assert alarm["value"] >= 70.0 and alarm["unit"] == "°C"
    assert "灰斗温度" in alarm["text_zh"] and "hopper" in alarm["text_en"]
    assert alarm["alarm_id"] == "1301000000010101001:high"
    assert not [r for r in collector.alarm_records() if r["device"] == "DC-2"]

    out = subprocess.run(
        [str(BIN / "dust-agent"), "alarms", "-c", str(cfg)],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "DUST_AGENT_LANG": "zh"},  # the Chinese texts (agent.cli.locale)
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert "DC-1" in out.stdout and "升级" in out.stdout and "灰斗温度" in out.stdout
    active = subprocess.run(
        [str(BIN / "dust-agent"), "alarms", "-c", str(cfg), "--active"],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
    )
    assert active.returncode == 0 and "DC-1" in active.stdout


def test_broker_outage_loses_nothing(pbroker: Broker, tmp_path: Path) -> None:
    collector = Collector(pbroker.port)
    collector.start()
    state = tmp_path / "state"
    with simulator(tmp_path, "--scenario", "none") as (_, sim_port):
        agent = start_agent(agent_config(tmp_path, sim_port, pbroker.port), tmp_path / "agent.log")
        try:
            wait_for(
                lambda: len(collector.stream("telemetry")) >= 3, 30, "telemetry before the outage"
            )
            pbroker.stop()  # graceful: the broker saves the collector's session
            wait_for(
                lambda: pending_telemetry_rows(state) >= 4, 30, "records piling up in the outbox"
            )
            pbroker.start()
            wait_for(lambda: pending_telemetry_rows(state) == 0, 60, "the backlog to drain")
            produced = outbox_query(
                state, "SELECT next_seq - 1 FROM streams WHERE stream='telemetry'"
            )
            wait_for(
                lambda: max(collector.telemetry_seqs(), default=0) >= produced,
                30,
                f"telemetry up to seq {produced} at the collector",
            )
        finally:
            assert agent.stop() == 0, agent.text()[-3000:]
    collector.stop()

    seqs = collector.telemetry_seqs()
    assert min(seqs) == 1
    assert seq_gaps(seqs) == [], "records lost across the outage"
    assert any(b["backfill"] for b in collector.stream("telemetry")), "backlog not marked backfill"
    assert any(not b["backfill"] for b in collector.stream("telemetry"))


def test_sigkill_resumes_sequence_and_sends_unacknowledged(pbroker: Broker, tmp_path: Path) -> None:
    collector = Collector(pbroker.port)
    collector.start()
    state = tmp_path / "state"
    with simulator(tmp_path, "--scenario", "none") as (_, sim_port):
        cfg = agent_config(tmp_path, sim_port, pbroker.port)
        first = start_agent(cfg, tmp_path / "agent1.log")
        wait_for(
            lambda: len(collector.stream("telemetry")) >= 2, 30, "telemetry from the first run"
        )
        pbroker.stop()
        wait_for(lambda: pending_telemetry_rows(state) >= 3, 30, "unsent records in the outbox")
        first.stop(signal.SIGKILL)
        at_kill = outbox_query(state, "SELECT next_seq - 1 FROM streams WHERE stream='telemetry'")
        pending_at_kill = pending_telemetry_rows(state)
        assert pending_at_kill >= 3
        pbroker.start()
        second = start_agent(cfg, tmp_path / "agent2.log")
        try:
            wait_for(
                lambda: max(collector.telemetry_seqs(), default=0) > at_kill + 2,
                60,
                "telemetry from the second run",
            )
        finally:
            assert second.stop() == 0, second.text()[-3000:]
    collector.stop()

    seqs = collector.telemetry_seqs()
    assert min(seqs) == 1
    assert seq_gaps(seqs) == [], "records lost across the SIGKILL"
    assert set(range(1, at_kill + 1)) <= set(seqs), (
        "records unsent at the kill were not sent after restart"
    )
    # the sequence resumed rather than restarting at 1: no seq was used for two different readings
    by_seq: dict[int, tuple[object, object]] = {}
    for r in collector.readings():
        key = (r["point"], r["ts"])
        seq = r["seq"]
        assert isinstance(seq, int)
        assert by_seq.setdefault(seq, key) == key, f"seq {seq} reused for another reading"
    starts = [
        r
        for body in collector.stream("event")
        for r in body["records"]
        if r.get("kind") == "agent_started"
    ]
    assert len(starts) == 2
    assert starts[0]["seq"] < starts[1]["seq"]
