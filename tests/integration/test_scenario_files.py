"""`dust-sim run-scenario`: the shipped scenario files pass their own expectations against the
real agent and broker, a wrong expectation fails readably, and device faults and a bus outage
in a timeline reach the agent as comm-loss alarms."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from firmware_sim.scenario_file import SHIPPED, shipped_names
from tests.conftest import REPO
from tests.e2e import BIN

pytestmark = pytest.mark.integration

SHIPPED_SET = {
    "smoulder",
    "filter_blinding",
    "broken_bag",
    "spark_burst",
    "airlock_stopped",
    "fan_off",
    "wet_low_flow",
    "hydrogen_rising",
}


def run_scenario(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dust-sim"), "run-scenario", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=timeout,
        check=False,
    )


def test_every_shipped_scenario_passes_its_expectations() -> None:
    assert set(shipped_names()) >= SHIPPED_SET
    out = run_scenario(*sorted(str(SHIPPED / f"{n}.toml") for n in shipped_names()))
    assert out.returncode == 0, out.stdout + out.stderr
    n = len(shipped_names())
    assert f"{n}/{n} scenarios passed" in out.stdout
    assert out.stdout.count(": PASS") == n and "FAIL" not in out.stdout


WRONG = """
name = "wrong"
duration = 15
[agent]
poll_interval = 0.25
[agent.rules.defaults]
on_delay = 1.0
[[timeline]]
at = 3
point = "DC-1.airlock_state"
set = 2                       # fault: a state alarm
[[expect]]
alarm = "DC-1.airlock_state"
kind = "state"
between = [3, 8]
[[expect]]
alarm = "DC-2.hopper_temp"     # wrong: nothing heats DC-2
kind = "threshold"
between = [5, 10]
[[expect]]
no_alarm = "DC-1"              # wrong: the air-lock fault is on DC-1
"""


def test_a_wrong_expectation_fails_with_a_readable_table(tmp_path: Path) -> None:
    path = tmp_path / "wrong.toml"
    path.write_text(WRONG)
    out = run_scenario(str(path))
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].endswith(": FAIL")
    assert lines[1].split() == ["result", "expectation", "observed"]
    row = {line.split()[0]: line for line in lines[2:5]}
    assert "PASS" in row and "state alarm raise at" in row["PASS"]
    fails = [line for line in lines if line.strip().startswith("FAIL")]
    assert len(fails) == 2
    assert "DC-2.hopper_temp threshold raised between 5 and 10 s" in fails[0]
    assert "not seen" in fails[0]
    assert "no alarm on DC-1" in fails[1] and "got state alarm raise at" in fails[1]
    assert "0/1 scenarios passed" in out.stdout and "logs kept in" in out.stdout


FAULTS = """
name = "faults"
duration = 30
[agent]
poll_interval = 0.25
[agent.rules.defaults]
on_delay = 1.0
[[timeline]]
at = 2
device = "DC-2"
fault = "silent"
[[timeline]]
at = 9
device = "DC-2"
fault = "recovered"
[[timeline]]
at = 9
device = "WC-3"
fault = "busy"
[[timeline]]
at = 16
bus = "plant"
link = "down"
[[timeline]]
at = 20
bus = "plant"
link = "up"
[[expect]]
alarm = "DC-2"
kind = "comm_loss"
between = [2, 9]
[[expect]]
alarm = "DC-2"
kind = "comm_loss"
transition = "clear"
between = [9, 15]
[[expect]]
alarm = "DC-1"
kind = "comm_loss"
between = [16, 22]
[[expect]]
alarm = "DC-1"
kind = "comm_loss"
transition = "clear"
between = [20, 29]
"""


def test_device_faults_and_bus_outage_reach_the_agent(tmp_path: Path) -> None:
    path = tmp_path / "faults.toml"
    path.write_text(FAULTS)
    out = run_scenario(str(path))
    assert out.returncode == 0, out.stdout + out.stderr


def test_bad_scenario_file_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[[timeline]]\nat = 1\npoint = "DC-9.x"\nset = 1\n')
    out = run_scenario(str(path), timeout=60)
    assert out.returncode == 2 and "DC-9.x" in out.stderr, out.stderr
