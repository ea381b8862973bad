"""Delivery health end to end: a real agent publishes its counters on the health topic, keeps
them in status.json, and `dust-agent status` shows them; the message follows
docs/schema/health.schema.json."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.service.status_file import STATUS_NAME, read_status
from firmware_sim.harness import Broker, dump_toml
from tests.conftest import REPO
from tests.e2e import BIN, Collector, Proc, agent_config, simulator, start_agent, wait_for
from tests.unit.test_payload import check

pytestmark = pytest.mark.integration


def configure(cfg: Path, **sections: dict[str, Any]) -> Path:
    """Merge `sections` (table name → keys) into a generated agent config."""
    data = tomllib.loads(cfg.read_text())
    for name, keys in sections.items():
        if name == "buses":
            for bus in data["buses"]:
                bus.update(keys)
        else:
            data.setdefault(name, {}).update(keys)
    cfg.write_text(dump_toml(data))
    return cfg


def health(col: Collector) -> list[dict[str, Any]]:
    """The health messages received so far, each checked against its JSON Schema."""
    got = col.stream("health")
    for body in got:
        check(orjson.dumps(body), "health")
    return got


def latest(col: Collector) -> dict[str, Any]:
    got = health(col)
    return got[-1] if got else {}


def status_health(state: Path) -> dict[str, Any]:
    try:
        section: dict[str, Any] = read_status(state / STATUS_NAME).get("health", {})
    except (OSError, ValueError):
        return {}
    return section


def alive(agent: Proc) -> None:
    """The agent is still the same process (no crash, no restart) and logged no traceback."""
    assert agent.proc.poll() is None, f"the agent exited:\n{agent.text()[-3000:]}"
    assert "Traceback" not in agent.text(), agent.text()[-3000:]


def test_health_on_the_broker_in_status_json_and_in_dust_agent_status(
    broker: Broker, tmp_path: Path
) -> None:
    col = Collector(broker.port)
    col.start()
    state = tmp_path / "state"
    try:
        with simulator(tmp_path, "--scenario", "none") as (_, sim_port):
            cfg = configure(
                agent_config(tmp_path, sim_port, broker.port), uplink={"health_interval": 1.0}
            )
            agent = start_agent(cfg, tmp_path / "agent.log")
            try:
                wait_for(lambda: len(health(col)) >= 3, 40, "three health messages")
                first = health(col)[0]
                wait_for(
                    lambda: latest(col)["acknowledged"] > first["acknowledged"] + 2,
                    30,
                    "acknowledged to grow",
                )
                # the telemetry of each poll is acknowledged well within the health interval
                wait_for(
                    lambda: any(h["pending_records"] == 0 for h in health(col)),
                    30,
                    "a health message with nothing pending",
                )
                h = latest(col)
                assert h["enterprise"] == "130100000001" and h["gateway"] == "13010000000101"
                assert h["connected"] is True and h["reconnects"] == 0 and h["failures"] == 0
                assert h["published"] >= h["acknowledged"] > 0
                assert h["published_records"] >= h["acknowledged_records"] >= 16
                assert h["storage_error"] is None and h["held_in_memory"] == 0
                assert h["dropped_records"] == 0 and h["storage_failures"] == 0
                assert h["db_bytes"] > 0 and h["max_bytes"] > 1024 * 1024

                broker.stop(hard=True)  # the agent notices, reconnects with backoff
                broker.start()
                wait_for(
                    lambda: latest(col).get("reconnects", 0) >= 1 and latest(col)["connected"],
                    40,
                    "a health message counting the reconnect",
                )
                h = latest(col)
                assert h["failures"] >= 1 and h["last_error"]
                mqtt = h["uplinks"]["mqtt"]  # its own oldest unacknowledged record
                age = mqtt["oldest_unsent_age_s"]
                assert age is None or (age >= 0 and isinstance(mqtt["oldest_unsent"], int)), mqtt
                wait_for(
                    lambda: status_health(state).get("reconnects", 0) >= 1,
                    30,
                    "the reconnect in status.json",
                )
                section = status_health(state)
                assert section["acknowledged"] >= first["acknowledged"]
                assert set(section) == set(h) - {"v", "enterprise", "gateway", "ts"}

                shown = subprocess.run(
                    [str(BIN / "dust-agent"), "status", "-c", str(cfg)],
                    check=False,
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                    timeout=30,
                )
                assert shown.returncode == 0, shown.stdout + shown.stderr
                for word in (
                    "published",
                    "acknowledged",
                    "pending",
                    "dropped",
                    "oldest unsent",
                    "reconnects",
                ):
                    assert word in shown.stdout, shown.stdout
                alive(agent)
            finally:
                assert agent.stop() == 0, agent.text()[-3000:]
    finally:
        col.stop()
