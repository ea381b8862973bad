"""agent.service.clock (sync probe, jump detection), agent.service.systemd (notify, watchdog
progress) and the
status table, with injected clocks and a real datagram socket; no sleeps."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from agent.cli.status import exit_code, to_table
from agent.service.clock import ClockMonitor, probe_sync
from agent.service.status_file import StatusFile, read_status
from agent.service.systemd import Progress, Watchdog, sd_notify, watchdog_interval


class FakeClock:
    def __init__(self) -> None:
        self.wall, self.mono = 1_700_000_000.0, 100.0

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds


def monitor(clock: FakeClock) -> ClockMonitor:
    return ClockMonitor(
        wall=lambda: clock.wall, mono=lambda: clock.mono, probe=lambda: (True, "test")
    )


def test_steady_clock_is_no_jump() -> None:
    c = FakeClock()
    m = monitor(c)
    for _ in range(5):
        c.tick(1.0)
        assert m.check() is None
    c.tick(1.0)
    c.wall += 1.5  # below the 2 s threshold: NTP slewing or scheduling jitter
    assert m.check() is None


@pytest.mark.parametrize("step", [3600.0, -86400.0, 2.5])
def test_wall_clock_jump_is_detected_once(step: float) -> None:
    c = FakeClock()
    m = monitor(c)
    c.tick(1.0)
    c.wall += step
    jump = m.check()
    assert jump is not None and jump.step == pytest.approx(step)
    assert jump.to_event()["step_s"] == pytest.approx(step)
    c.tick(1.0)
    assert m.check() is None  # the new wall time is the new baseline
    assert m.jumps == 1 and m.snapshot()["last_jump"] is not None


def test_sync_state_and_override(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter([(None, "unknown"), (True, "adjtimex"), (True, "adjtimex")])
    m = ClockMonitor(probe=lambda: next(answers))
    assert not m.synced()
    assert m.refresh_sync() is False and not m.synced()  # unknown counts as unsynchronised
    assert m.refresh_sync() is True and m.synced()
    assert m.refresh_sync() is False
    monkeypatch.setenv("DUST_AGENT_CLOCK_SYNC", "no")
    assert probe_sync() == (False, "$DUST_AGENT_CLOCK_SYNC")
    monkeypatch.setenv("DUST_AGENT_CLOCK_SYNC", "auto")
    state, source = probe_sync()  # the real probe answers something on any Linux box
    assert state in (True, False, None) and source


def test_sd_notify_and_watchdog_interval(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify("READY=1") is False  # not under systemd: a no-op
    path = tmp_path / "n.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sd_notify("READY=1\nSTATUS=x")
        assert s.recv(100) == b"READY=1\nSTATUS=x"
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval() == 15.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert watchdog_interval() is None


def test_watchdog_is_fed_only_while_work_progresses() -> None:
    p = Progress(created=0.0)
    p.expect("bus 'a'", 10.0)
    p.expect("uplink", 60.0)
    sent: list[str] = []
    now = [5.0]

    def notify(msg: str) -> bool:
        sent.append(msg)
        return True

    wd = Watchdog(lambda: p.stalled(now[0]), 1.0, notify=notify)
    assert wd.tick() and sent == ["WATCHDOG=1"]
    now[0] = 12.0  # bus 'a' never delivered a frame: a hung poller
    assert not wd.tick() and "bus 'a' silent" in (wd.withheld or "")
    assert sent[-1].startswith("STATUS=stalled")
    p.mark("bus 'a'", 11.5)
    p.mark("uplink", 11.5)
    assert wd.tick() and sent[-1] == "WATCHDOG=1"
    now[0] = 11.5 + 61.0
    p.mark("bus 'a'", now[0])
    assert not wd.tick() and "uplink" in (wd.withheld or "")


def test_status_file_and_table(tmp_path: Path) -> None:
    sf = StatusFile(tmp_path)
    now = time.time()
    sf.update("agent", {"state": "running", "pid": None, "version": "9", "uptime_s": 5})
    sf.update(
        "clock",
        {
            "synced": False,
            "source": "adjtimex",
            "jumps": 1,
            "last_jump": {"step_s": 3600.0, "now": round(now * 1000)},
        },
    )
    sf.update("uplink", {"target": "mqtt://x:1", "connected": False, "last_error": "refused"})
    sf.update("outbox", {"pending_records": {"telemetry": 7}, "oldest_unsent_age_s": 90})
    sf.update(
        "buses",
        [
            {
                "name": "plant",
                "connected": True,
                "devices": [{"name": "DC-1", "unit": 1, "state": "down", "last_good": None}],
            }
        ],
    )
    sf.update("alarms", [])
    sf.write(now)
    doc = read_status(sf.path)
    table = to_table(doc, now)
    for text in ("NOT synchronised", "DISCONNECTED", "DOWN", "telemetry 7", "+3600.0 s"):
        assert text in table, table
    assert exit_code(doc, now) == 0
    assert exit_code(doc, now + 600) == 3  # a stale snapshot: the agent is not running
