"""The agent's storage on a real filesystem that fails: a small tmpfs that fills up during a
broker outage, and a storage dir that is read-only when the agent starts and becomes writable
while it runs. Needs root (mount(8)); fails, never skips, without it.

Alarms come from the simulator being frozen (SIGSTOP: comm_loss raised for DC-1 and DC-2)
and thawed (cleared) while the disk refuses writes.

Why no remount of a running agent's dir: the kernel refuses `remount,ro` (EBUSY) while a file
on it is open for writing, which the outbox always is; a filesystem that turns read-only under
a running agent (ext4 errors=remount-ro) fails SQLite writes the same way as a full disk.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.harness import Broker
from tests.e2e import Collector, Proc, agent_config, simulator, start_agent, wait_for
from tests.integration.test_health import alive, configure, health, latest, status_health

pytestmark = pytest.mark.integration

COMM_LOSS = {(d, t) for d in ("DC-1", "DC-2") for t in ("raise", "clear")}


def mount(*args: str) -> None:
    got = subprocess.run(["mount", *args], check=False, capture_output=True, text=True, timeout=30)
    assert got.returncode == 0, f"mount {' '.join(args)}: {got.stderr.strip()}"


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `path`, unmounted on exit."""
    if os.geteuid() != 0:
        pytest.fail(
            "this test mounts a tmpfs for the agent's storage dir and needs root for mount(8): "
            "run it as root (e.g. in the CI container)"
        )
    path.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path))
    try:
        yield path
    finally:
        got = subprocess.run(["umount", str(path)], check=False, capture_output=True, timeout=30)
        if got.returncode != 0:  # something still holds it open: detach it anyway
            subprocess.run(
                ["umount", "-l", str(path)], check=False, capture_output=True, timeout=30
            )


def fill(directory: Path) -> Path:
    """Write a ballast file until the filesystem reports ENOSPC."""
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
        with pytest.raises(OSError) as full:
            os.write(fd, b"\0" * 4096)
        assert full.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return ballast


def pending_rows(state: Path) -> int:
    """Rows waiting in the agent's outbox, read-only (the agent keeps writing)."""
    try:
        con = sqlite3.connect(f"file:{state / 'outbox.db'}?mode=ro", uri=True, timeout=5)
        try:
            return int(con.execute("SELECT count(*) FROM outbox").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def events(col: Collector, kind: str) -> list[dict[str, Any]]:
    return [r for body in col.stream("event") for r in body["records"] if r["kind"] == kind]


def comm_loss(col: Collector) -> set[tuple[str, str]]:
    return {(r["device"], r["transition"]) for r in col.alarm_records() if r["kind"] == "comm_loss"}


def freeze_and_thaw(sim: Proc, agent: Proc) -> None:
    """comm_loss alarms raised and cleared for both devices, while the disk refuses writes."""
    os.kill(sim.proc.pid, signal.SIGSTOP)
    try:
        agent.wait_log(r"alarm raise DC-2:comm_loss", 30)
        agent.wait_log(r"alarm raise DC-1:comm_loss", 30)
    finally:
        os.kill(sim.proc.pid, signal.SIGCONT)
    agent.wait_log(r"alarm clear DC-2:comm_loss", 30)
    agent.wait_log(r"alarm clear DC-1:comm_loss", 30)


def fast_config(tmp_path: Path, sim_port: int, broker_port: int) -> Path:
    return configure(
        agent_config(tmp_path, sim_port, broker_port),
        uplink={"health_interval": 1.0},
        buses={"timeout": 0.3, "quarantine_after": 2, "quarantine_first": 0.5},
    )


def assert_recovered(col: Collector, agent: Proc, since: float) -> None:
    """After the disk works again: held alarms, the loss report and the recovery are delivered."""
    wait_for(lambda: comm_loss(col) >= COMM_LOSS, 30, "the comm_loss alarms held in memory")
    wait_for(lambda: bool(events(col, "storage_recovered")), 30, "a storage_recovered event")
    wait_for(
        lambda: any(e["data"]["reason"] == "storage_error" for e in events(col, "data_dropped")),
        30,
        "a data_dropped event for the storage error",
    )
    lost = [e["data"] for e in events(col, "data_dropped")]
    assert all(d["reason"] == "storage_error" and d["stream"] == "telemetry" for d in lost), lost
    # polling went on: every cycle's 16 readings were counted while they could not be stored
    records = sum(d["records"] for d in lost)
    assert records > 0 and records % 16 == 0, lost
    assert min(d["from_ts"] for d in lost) / 1000 >= since - 1, lost
    assert max(d["to_ts"] for d in lost) > min(d["from_ts"] for d in lost), lost
    recovered = events(col, "storage_recovered")[0]["data"]
    assert recovered["error"] and recovered["since"] / 1000 >= since - 1
    wait_for(
        lambda: (
            latest(col).get("storage_error", "?") is None
            and latest(col)["held_in_memory"] == 0
            and latest(col)["pending_records"] == 0
        ),
        30,
        "a health message: writes work again and everything was delivered",
    )
    h = latest(col)
    assert h["storage_failures"] >= 1 and h["dropped_records"] >= records
    wait_for(
        lambda: (
            status_health(agent_state(agent)).get("storage_failures", 0) >= 1
            and status_health(agent_state(agent)).get("storage_error", "?") is None
        ),
        30,
        "status.json to show the past storage failure",
    )
    alive(agent)


def agent_state(agent: Proc) -> Path:
    return agent.log.parent / "state"


def test_disk_full_during_a_broker_outage(broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.port)
    col.start()
    try:
        with (
            tmpfs(tmp_path / "state", "4m") as state,
            simulator(tmp_path, "--scenario", "none") as (sim, sim_port),
        ):
            cfg = fast_config(tmp_path, sim_port, broker.port)
            agent = start_agent(cfg, tmp_path / "agent.log")
            try:
                wait_for(lambda: bool(health(col)), 30, "the agent to connect")
                broker.stop(hard=True)
                # a backlog to send (and delete after its PUBACKs) while the disk is full
                wait_for(lambda: pending_rows(state) >= 3, 30, "a backlog in the outbox")
                since = time.time()
                ballast = fill(state)
                agent.wait_log(r"cannot write the outbox database .*disk is full", 20)
                freeze_and_thaw(sim, agent)
                broker.start()  # the broker is back, the disk still full
                wait_for(
                    lambda: (
                        bool(latest(col).get("storage_error")) and latest(col)["held_in_memory"] > 0
                    ),
                    30,
                    "a health message reporting the storage error and held alarms",
                )
                alive(agent)
                ballast.unlink()
                assert_recovered(col, agent, since)
            finally:
                assert agent.stop() == 0, agent.text()[-3000:]
    finally:
        col.stop()


def test_read_only_storage_at_start_then_writable(broker: Broker, tmp_path: Path) -> None:
    col = Collector(broker.port)
    col.start()
    try:
        with (
            tmpfs(tmp_path / "state", "16m") as state,
            simulator(tmp_path, "--scenario", "none") as (sim, sim_port),
        ):
            cfg = fast_config(tmp_path, sim_port, broker.port)
            agent = start_agent(cfg, tmp_path / "agent.log")
            try:  # a first run leaves a backlog behind (the broker is down)
                wait_for(lambda: bool(health(col)), 30, "the agent to connect")
                broker.stop(hard=True)
                agent.wait_log(r"uplink down", 20)
            finally:
                assert agent.stop() == 0, agent.text()[-3000:]
            mount("-o", "remount,ro", str(state))
            since = time.time()
            broker.start()
            agent = start_agent(cfg, tmp_path / "agent2.log")
            try:
                wait_for(lambda: bool(latest(col).get("storage_error")), 30, "the storage error")
                freeze_and_thaw(sim, agent)
                alive(agent)
                mount("-o", "remount,rw", str(state))
                assert_recovered(col, agent, since)
                # the backlog of the first run went out too
                assert any(b["backfill"] for b in col.stream("telemetry"))
            finally:
                assert agent.stop() == 0, agent.text()[-3000:]
    finally:
        col.stop()
