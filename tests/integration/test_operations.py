"""Operations against a real agent process: systemd notify/watchdog, `dust-agent status` with a
device down and the broker down, SIGHUP with a bad and a good config, SIGTERM."""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from firmware_sim.harness import Broker, dump_toml
from tests.e2e import BIN, Collector, Proc, agent_config, simulator, wait_for

pytestmark = pytest.mark.integration


class NotifySocket:
    """A fake systemd notify socket: collects every datagram the agent sends."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue

    def count(self, prefix: str) -> int:
        return sum(
            1 for m in list(self.messages) for line in m.splitlines() if line.startswith(prefix)
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


@contextmanager
def notify_socket(tmp: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(tmp / "notify.sock")
    try:
        yield ns
    finally:
        ns.close()


def status(cfg: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dust-agent"), "status", "-c", str(cfg), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def status_json(cfg: Path) -> dict[str, Any]:
    out = status(cfg, "--json")
    if out.returncode == 1:  # no snapshot yet
        return {}
    doc: dict[str, Any] = orjson.loads(out.stdout)
    return doc


def device_states(doc: dict[str, Any]) -> dict[str, str]:
    return {d["name"]: d["state"] for b in doc.get("buses", []) for d in b["devices"]}


def events(collector: Collector, kind: str) -> list[dict[str, Any]]:
    return [r for b in collector.stream("event") for r in b["records"] if r["kind"] == kind]


def write_config(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".new")
    tmp.write_text(dump_toml(data))
    tmp.replace(path)


def test_status_reload_and_systemd_notify(broker: Broker, tmp_path: Path) -> None:
    collector = Collector(broker.port)
    collector.start()
    with simulator(tmp_path, "--scenario", "none") as (_, sim_port), notify_socket(tmp_path) as ns:
        cfg = agent_config(tmp_path, sim_port, broker.port)
        data = tomllib.loads(cfg.read_text())
        # DC-9 is not served by the simulator: a device that is down from the start.
        data["devices"].append(
            {"name": "DC-9", "bus": "plant", "unit": 9, "profile": "dry_collector"}
        )
        # An alarm that is active at once, to see it carried over a reload without a re-raise.
        data["devices"][0]["override"]["hopper_temp"]["rule"] = {
            "high_warning": -100.0,
            "on_delay": 0.0,
        }
        write_config(cfg, data)
        agent = Proc(
            [str(BIN / "dust-agent"), "run", "-c", str(cfg)],
            tmp_path / "agent.log",
            env={"NOTIFY_SOCKET": str(ns.path), "WATCHDOG_USEC": "2000000"},
        )
        try:
            # systemd protocol: READY once everything runs, then watchdog pings.
            wait_for(lambda: ns.count("READY=1") >= 1, 60, "READY=1 on the notify socket")
            wait_for(lambda: ns.count("WATCHDOG=1") >= 2, 60, "two WATCHDOG=1 pings")

            # status: the served devices are ok, DC-9 is quarantined, the alarm is active.
            last: list[Any] = [None]

            def healthy() -> bool:
                doc = last[0] = status_json(cfg)
                states = device_states(doc)
                return (
                    states.get("DC-1") == "ok"
                    and states.get("DC-9") == "quarantined"  # dead from the start
                    and bool(doc["uplink"]["connected"])
                    and any(a["alarm_id"] == "1301000000010101001:high" for a in doc["alarms"])
                )

            try:
                wait_for(healthy, 60, "status: DC-1 ok, DC-9 quarantined, uplink up, alarm active")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; last status.json: {last[0]}") from None
            table = status(cfg)
            assert table.returncode == 0, table.stderr
            assert "DC-9" in table.stdout and "QUARANTINED" in table.stdout.upper(), table.stdout
            assert "connected" in table.stdout and "1301000000010101001:high" in table.stdout
            wait_for(
                lambda: any(
                    r["alarm_id"] == "1301000000010101001:high" for r in collector.alarm_records()
                ),
                60,
                "the alarm at the broker",
            )

            good = reload_bad(agent, cfg, data, collector)
            reload_good(agent, cfg, good, collector, ns)
            broker_down(broker, cfg, ns)
        finally:
            code = agent.stop()
        assert code == 0, agent.text()[-3000:]
        assert ns.count("STOPPING=1") == 1
        gone = status(cfg)
        assert gone.returncode == 3 and "NOT RUNNING" in gone.stdout, gone.stdout
    collector.stop()


def reload_bad(agent: Proc, cfg: Path, data: dict[str, Any], collector: Collector) -> str:
    """SIGHUP with an invalid config; returns the good config text."""
    # SIGHUP with a bad config: rejected with the key path, the agent keeps polling.
    good = cfg.read_text()
    bad = dict(data, buses=[{**data["buses"][0], "poll_interval": "fast"}])
    write_config(cfg, bad)
    agent.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: bool(events(collector, "config_rejected")), 60, "a config_rejected event")
    error = events(collector, "config_rejected")[0]["data"]["error"]
    assert "buses[0].poll_interval" in error, error
    n = len(collector.stream("telemetry"))
    wait_for(lambda: len(collector.stream("telemetry")) > n + 2, 60, "telemetry goes on")
    assert agent.proc.poll() is None
    assert "REJECTED" in status(cfg).stdout
    return good


def reload_good(agent: Proc, cfg: Path, good: str, collector: Collector, ns: NotifySocket) -> None:
    # SIGHUP with a good config: DC-2 removed; the alarm stays active, not re-raised.
    cfg.write_text(good)
    data2 = tomllib.loads(good)
    data2["devices"] = [d for d in data2["devices"] if d["name"] != "DC-2"]
    write_config(cfg, data2)
    agent.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: bool(events(collector, "config_reloaded")), 60, "a config_reloaded event")
    reloaded = events(collector, "config_reloaded")[0]["data"]
    assert reloaded["removed"] == 8 and reloaded["added"] == 0, reloaded
    assert reloaded["alarm_state_carried"] is True
    n = len(collector.stream("telemetry"))
    wait_for(lambda: len(collector.stream("telemetry")) > n + 3, 60, "telemetry after")
    last = collector.stream("telemetry")[-1]["records"]
    assert "DC-2" not in set(last["device"]) and "DC-1" in set(last["device"])
    raises = [
        r
        for r in collector.alarm_records()
        if r["alarm_id"] == "1301000000010101001:high" and r["transition"] == "raise"
    ]
    assert len(raises) == 1, raises
    assert ns.count("RELOADING=1") == 1
    wait_for(lambda: "DC-2" not in device_states(status_json(cfg)), 30, "DC-2 gone")


def broker_down(broker: Broker, cfg: Path, ns: NotifySocket) -> None:
    # The broker goes down: status says so, and the outbox holds the data.
    broker.stop(hard=True)

    def uplink_down() -> bool:
        doc = status_json(cfg)
        return not doc["uplink"]["connected"] and (doc["outbox"]["oldest_unsent_age_s"] or 0) > 0

    wait_for(uplink_down, 90, "status: uplink down, data waiting in the outbox")
    table = status(cfg)
    assert "DISCONNECTED" in table.stdout and "QUARANTINED" in table.stdout, table.stdout
    # a broker outage is not a stall: pings go on while it lasts (count only those sent after
    # the outage was seen; WatchdogSec=2 s pings every second)
    pings = ns.count("WATCHDOG=1")
    wait_for(lambda: ns.count("WATCHDOG=1") >= pings + 3, 30, "WATCHDOG=1 during the outage")
    assert not status_json(cfg)["uplink"]["connected"]
