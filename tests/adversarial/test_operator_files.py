"""Files and secrets around the operator channel: a wrong-shaped alarm_state.json at start,
and commands that must work without reading secrets (only `run` reads them)."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import orjson
import pytest

from firmware_sim.harness import Broker, dump_toml
from tests.adversarial.plant import ALARM, plant
from tests.conftest import REPO
from tests.e2e import BIN, agent_config, wait_for

pytestmark = pytest.mark.integration


def _bad_state(state: Path) -> None:
    body = {"v": 1, "alarms": {ALARM: {"published": 9, "shelved_until": "inf"}}}
    (state / "alarm_state.json").write_bytes(orjson.dumps(body))


def test_wrong_shaped_alarm_state_is_moved_aside_and_the_agent_runs(broker: Broker) -> None:
    with plant(broker, prepare=_bad_state) as p:
        wait_for(
            lambda: any(
                e["kind"] == "alarm_state_rejected"
                for b in p.collector.stream("event")
                for e in b["records"]
            ),
            20,
            "the alarm_state_rejected event",
        )
        moved = [x.name for x in p.state.iterdir() if x.name.startswith("alarm_state.json.bad-")]
        assert len(moved) == 1, moved
        p.alarm_active()  # the alarm is raised afresh: the bad state was not adopted
        p.still_publishing()


def _dust(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dust-agent"), *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "CREDENTIALS_DIRECTORY": ""},
    )


def test_read_only_and_operator_commands_read_no_secrets(tmp_path: Path) -> None:
    """The unit's credential set-up (no $CREDENTIALS_DIRECTORY outside the service) and an
    HMAC key file nobody but the service could read: only `run` needs them."""
    path = agent_config(tmp_path, 5020, 1883)
    data = tomllib.loads(path.read_text())
    data["uplink"]["username_credential"] = "mqtt_username"
    data["uplink"]["password_credential"] = "mqtt_password"
    data["storage"]["journal_hmac_key_file"] = str(tmp_path / "missing.key")
    path.write_text(dump_toml(data))
    cfg = str(path)
    check = _dust("check", "-c", cfg)
    assert check.returncode == 0 and ": OK" in check.stdout, check
    alarms = _dust("alarms", "-c", cfg)
    assert alarms.returncode == 0, alarms
    status = _dust("status", "-c", cfg)
    assert status.returncode != 78, status
    ack = _dust("ack", ALARM, "--by", "zhang", "-c", cfg)
    assert ack.returncode == 69 and "does not exist" in ack.stderr, ack
    run = _dust("run", "-c", cfg)
    assert run.returncode == 78 and "credential" in run.stderr, run
    for out in (check, alarms, status, ack, run):
        assert "Traceback" not in out.stdout + out.stderr, out
    del data["uplink"]["username_credential"], data["uplink"]["password_credential"]
    path.write_text(dump_toml(data))
    keyless = _dust("run", "-c", cfg)
    assert keyless.returncode == 78 and "journal_hmac_key_file" in keyless.stderr, keyless
