"""Logs under systemd: a priority prefix and a level per line, no timestamp of our own, and one
line when a fault starts, not one per poll."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from firmware_sim.harness import free_port
from tests.e2e import BIN, Proc, agent_config, wait_for


def cycles(state: Path) -> int:
    try:
        doc = json.loads((state / "status.json").read_text())
    except (OSError, ValueError):
        return 0
    return sum(int(b.get("cycles", 0)) for b in doc.get("buses", []))


def test_journald_lines_once_per_fault(tmp_path: Path) -> None:
    # Neither the device nor the broker is there: two faults that last the whole run.
    cfg = agent_config(tmp_path, free_port(), free_port())
    agent = Proc(
        [str(BIN / "dust-agent"), "run", "-c", str(cfg)],
        tmp_path / "agent.log",
        env={"JOURNAL_STREAM": "8:12345"},  # what systemd sets for a journal-connected stderr
    )
    try:
        agent.wait_log(r"uplink down", timeout=60)
        # Many poll cycles and reconnect attempts go by while both faults persist.
        wait_for(lambda: cycles(tmp_path / "state") >= 8, 60, "eight poll cycles")
    finally:
        assert agent.stop(signal.SIGTERM) == 0, agent.text()[-3000:]

    lines = [line for line in agent.text().splitlines() if line.strip()]
    assert lines
    for line in lines:
        assert re.match(r"<[0-7]>(DEBUG|INFO|WARNING|ERROR|CRITICAL) ", line), line
        assert not re.search(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d", line), f"timestamp in {line!r}"
    uplink_down = [line for line in lines if "uplink down" in line]
    assert len(uplink_down) == 1, uplink_down
    assert uplink_down[0].startswith("<4>WARNING")
    device_lines = [line for line in lines if "DC-1" in line and line.startswith("<4>")]
    assert 1 <= len(device_lines) <= 3, device_lines  # start of the fault, not one per poll
