"""Under sustained load (issue 17), against the real agent, simulator and mosquitto: status
shows a delivery stall only when acknowledgements really stop (no watchdog outside systemd),
and a 5,000-point cycle reaches a broker whose max_packet_size is 64 KiB."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from firmware_sim.harness import Broker
from tests.e2e import BIN, Collector, Proc, agent_config, bench_config, simulator, wait_for

pytestmark = pytest.mark.integration

STALL_AFTER = 6.0  # DUST_AGENT_STALL_AFTER for the test (derived default: minutes)


def status(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dust-agent"), "status", "-c", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def status_json(cfg: Path) -> dict[str, Any]:
    out = status(cfg, "--json")
    doc: dict[str, Any] = orjson.loads(out.stdout) if out.returncode != 1 else {}
    return doc


def test_no_stall_while_records_flow_without_a_watchdog_and_a_frozen_broker_is_one(
    broker: Broker, tmp_path: Path
) -> None:
    collector = Collector(broker.port)
    collector.start()
    with simulator(tmp_path, "--scenario", "none") as (_, sim_port):
        cfg = agent_config(tmp_path, sim_port, broker.port)
        env = {"DUST_AGENT_STALL_AFTER": str(STALL_AFTER), "WATCHDOG_USEC": ""}
        agent = Proc([str(BIN / "dust-agent"), "run", "-c", str(cfg)], tmp_path / "a.log", env)
        try:
            # records flow for longer than the stall limit: no stall, no watchdog shown
            seen: list[dict[str, Any]] = []

            def flowed() -> bool:
                doc = status_json(cfg)
                if doc.get("agent"):
                    seen.append(doc)
                return bool(doc) and doc["agent"]["uptime_s"] > 3 * STALL_AFTER

            wait_for(flowed, 60, "the agent up for three stall limits", interval=1.0)
            assert len(seen) >= 3
            for doc in seen:
                assert doc["agent"]["watchdog"] is None, doc["agent"]
                assert doc["uplink"]["delivery"]["stalled"] is None, doc["uplink"]
            assert seen[-1]["uplink"]["records"] > 0
            table = status(cfg).stdout
            assert "STALLED" not in table and "watchdog" not in table, table
            assert len(collector.telemetry_seqs()) > 0

            broker.freeze()  # a black hole: no RST, no PUBACK
            try:
                wait_for(
                    lambda: "delivery STALLED" in status(cfg).stdout,
                    STALL_AFTER + 30,
                    "status to show the stall",
                    interval=0.5,
                )
                why = status_json(cfg)["uplink"]["delivery"]["stalled"]
                assert why.startswith(("broker down", "acknowledgements not coming")), why
            finally:
                broker.thaw()
            wait_for(
                lambda: status_json(cfg)["uplink"]["delivery"]["stalled"] is None,
                60,
                "the stall to clear once the broker answers",
                interval=0.5,
            )
        finally:
            code = agent.stop()
        assert code == 0, agent.text()[-3000:]
    collector.stop()


def test_a_5000_point_cycle_reaches_a_broker_with_a_64_kib_packet_limit(tmp_path: Path) -> None:
    limit = 64 * 1024
    broker = Broker(tmp_path / "broker")
    broker.conf.write_text(broker.conf.read_text() + f"max_packet_size {limit}\n")
    broker.start()
    collector = Collector(broker.port)
    try:
        collector.start()
        bench = ("--bench-devices", "200", "--bench-registers", "25")
        with simulator(tmp_path, *bench) as (_, sim_port):
            cfg = bench_config(
                tmp_path, sim_port, broker.port, 200, 25, max_bytes_per_message=limit
            )
            agent = Proc([str(BIN / "dust-agent"), "run", "-c", str(cfg)], tmp_path / "a.log")
            try:
                wait_for(
                    lambda: len(collector.telemetry_seqs()) >= 5 * 5000,
                    50,
                    "five cycles of 5,000 points at the collector",
                    interval=0.2,
                )
                sizes = [len(orjson.dumps(b)) for b in collector.stream("telemetry")]
                health = status_json(cfg).get("health", {})
            finally:
                code = agent.stop(signal.SIGTERM)
            assert code == 0, agent.text()[-3000:]
    finally:
        collector.stop()
        broker.stop(hard=True)
    seqs = collector.telemetry_seqs()
    assert len(seqs) == len(set(seqs)), "duplicates"
    assert sorted(seqs) == list(range(min(seqs), max(seqs) + 1)), "a gap in telemetry seq"
    assert len(sizes) >= 5 * 5 and max(sizes) <= limit, (len(sizes), max(sizes))
    assert health.get("oversize_records", 0) == 0
    log = broker.log.read_text()
    assert "exceeded" not in log.lower() and "too large" not in log.lower(), log[-2000:]
    assert "uplink down" not in agent.text(), agent.text()[-3000:]  # never refused
