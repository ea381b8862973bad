"""`dust-sim replay`: telemetry recorded from the agent (as mosquitto_sub would print it) is
served again through the same register map, and the agent reads the recorded values again,
within each point's resolution."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from agent.config import load_config
from firmware_sim.codec import resolution
from firmware_sim.harness import Broker
from tests.conftest import REPO
from tests.e2e import BIN, Collector, Proc, start_agent, wait_for
from tests.integration.test_sim_site import fast_agent_config

pytestmark = pytest.mark.integration

SITE = REPO / "config" / "agent.example.toml"
READINGS = 24


def run_once(
    tmp: Path, broker: Broker, name: str, sim_args: list[str]
) -> tuple[Collector, dict[str, list[float]]]:
    work = tmp / name
    work.mkdir()
    collector = Collector(broker.port, client_id=f"collector-{name}")
    collector.start()
    served = work / "served.toml"
    sim = Proc(
        [
            str(BIN / "dust-sim"),
            *sim_args,
            "--config",
            str(SITE),
            "--local",
            "--agent-config",
            str(served),
        ],
        work / "sim.log",
    )
    sim.wait_log(r'\{"dust_sim":"serving".*\}')
    agent = start_agent(fast_agent_config(served, work, broker.port), work / "agent.log")
    codes = [p.code for p in load_config(SITE).points]

    def series() -> dict[str, list[float]]:
        out: dict[str, list[float]] = defaultdict(list)
        for r in collector.readings():
            if r["quality"] == 0 and r["value"] is not None:
                out[r["point"]].append(float(r["value"]))
        return out

    try:
        wait_for(lambda: min(len(series()[c]) for c in codes) >= READINGS, 60, "readings")
    finally:
        assert agent.stop() == 0, agent.text()[-2000:]
        sim.stop()
        collector.stop()
    return collector, series()


def test_replay_reproduces_the_recorded_values(broker: Broker, tmp_path: Path) -> None:
    recorder, recorded = run_once(tmp_path, broker, "record", ["serve"])
    capture = tmp_path / "capture.jsonl"
    capture.write_bytes(b"".join(orjson.dumps(b) + b"\n" for b in recorder.stream("telemetry")))
    _, replayed = run_once(tmp_path, broker, "replay", ["replay", str(capture)])
    cfg = load_config(SITE)
    for p in cfg.points:
        tol = resolution(p.type, p.scale) / 2 + 1e-6 * max(1.0, abs(recorded[p.code][0]))
        assert replayed[p.code], p.code
        for v in replayed[p.code]:
            assert any(abs(v - r) <= tol for r in recorded[p.code]), (p.code, v)
        distinct_rec = {round(r, 6) for r in recorded[p.code]}
        distinct_rep = {round(r, 6) for r in replayed[p.code]}
        # the replay walks through the recording, not just one value of it
        assert len(distinct_rep) >= min(len(distinct_rec), READINGS) // 2, p.code


def test_replay_csv_at_speed(tmp_path: Path, broker: Broker) -> None:
    capture = tmp_path / "capture.csv"
    rows = ["point,time,value"]
    rows += [f"1301000000010101001,{1_700_000_000 + 10 * i},{40 + i}" for i in range(30)]
    capture.write_text("\n".join(rows) + "\n")
    _, got = run_once(tmp_path, broker, "csv", ["replay", str(capture), "--speed", "20"])
    hopper = got["1301000000010101001"]
    assert all(v in {40.0 + i for i in range(30)} for v in hopper), hopper
    assert len(set(hopper)) >= 4  # 2 recorded steps a second at x20
    assert hopper == sorted(hopper)
