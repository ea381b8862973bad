"""Reconnect policy and outage logs with real mosquitto and the real agent as a subprocess.

The broker stops and comes back: the agent probes at the configured cadence while it is down,
publishes again after the restart and loses nothing. Every way a connect can fail (port closed,
a broker that stops mid-run, bad credentials, TLS to a plain port) is logged once, with its
cause, never as paho's "[code:4] The client is not currently connected.". Timing is checked
only against generous bounds; bench/fleet.py measures it.
"""

from __future__ import annotations

import itertools
import re
import signal
import statistics
import subprocess
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from firmware_sim.harness import Broker, dump_toml, free_port
from tests.e2e import BIN, Collector, Proc, agent_config, seq_gaps, simulator, wait_for

pytestmark = pytest.mark.integration

DOWN = re.compile(r"^(\S+ \S+) WARNING agent\.uplink\.forwarder: uplink down: (.*)$", re.M)
# one debug line per failed probe while the broker is down
PROBE = re.compile(r"^(\S+ \S+) DEBUG agent\.uplink\.forwarder: uplink mqtt still down: ", re.M)


def stamp(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def configure(cfg: Path, **uplink: Any) -> Path:
    data = tomllib.loads(cfg.read_text())
    data["uplink"].update(uplink)
    cfg.write_text(dump_toml(data))
    return cfg


def run_agent(cfg: Path, log: Path) -> Proc:
    return Proc(
        [str(BIN / "dust-agent"), "run", "-c", str(cfg)], log, env={"DUST_AGENT_LOG_LEVEL": "debug"}
    )


def test_restart_resumes_with_the_configured_probe_cadence(tmp_path: Path, pbroker: Broker) -> None:
    collector = Collector(pbroker.port, client_id="reconnect-collector")
    collector.start()
    with simulator(tmp_path) as (_, sim_port):
        cfg = agent_config(tmp_path, sim_port, pbroker.port)
        configure(cfg, reconnect_initial=0.5, reconnect_cap=1.0, reconnect_jitter=0.5)
        agent = run_agent(cfg, tmp_path / "agent.log")
        try:
            wait_for(lambda: len(collector.telemetry_seqs()) > 0, 60, "telemetry before the stop")
            pbroker.stop()
            agent.wait_log(r"uplink down: ", timeout=30)
            wait_for(lambda: len(PROBE.findall(agent.text())) >= 6, 30, "six failed probes")
            before = max(collector.telemetry_seqs())
            pbroker.start()
            agent.wait_log(r"is back after", timeout=30)
            wait_for(
                lambda: max(collector.telemetry_seqs()) >= before + 10,
                60,
                "telemetry after restart",
            )
        finally:
            assert agent.stop(signal.SIGTERM) == 0, agent.text()[-3000:]
    collector.stop()

    seqs = collector.telemetry_seqs()
    assert min(seqs) == 1 and seq_gaps(seqs) == [], "every record delivered"
    text = agent.text()
    (down,) = DOWN.findall(text)
    assert "connection refused" in down[1], down  # the cause the reconnect attempt got
    assert "code:4" not in text and "not currently connected" not in text
    # reconnect_cap = 1: probes every 0.5..1 s (a probe itself takes well under a millisecond)
    probes = [stamp(m) for m in PROBE.findall(text)]
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert 0.4 <= statistics.median(gaps) <= 1.5, gaps
    assert max(gaps) < 4.0, gaps  # generous: a loaded machine may delay a wake-up


def password_broker(tmp_path: Path) -> Broker:
    """mosquitto that accepts only user "gw" with password "right"."""
    d = tmp_path / "auth-broker"
    b = Broker(d)
    passwd = d / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwd), "gw", "right"],
        check=True,
        capture_output=True,
    )
    conf = b.conf.read_text().replace(
        "allow_anonymous true\n", f"allow_anonymous false\npassword_file {passwd}\nuser root\n"
    )
    b.conf.write_text(conf)
    return b


def secret(tmp_path: Path, name: str, value: str) -> str:
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.mark.parametrize("case", ["port closed", "bad credentials", "tls to a plain port"])
def test_failed_connect_is_logged_once_with_its_cause(
    tmp_path: Path, broker: Broker, case: str
) -> None:
    expected = {
        "port closed": r"cannot reach MQTT broker \S+: connection refused",
        "bad credentials": r"refused the login: (not authorised|bad user name or password)",
        "tls to a plain port": r"TLS handshake with MQTT broker \S+ failed",
    }[case]
    port = broker.port
    extra: dict[str, Any] = {}
    auth: Broker | None = None
    if case == "port closed":
        port = free_port()
    elif case == "bad credentials":
        auth = password_broker(tmp_path)
        auth.start()
        port = auth.port
        extra = {
            "username_file": secret(tmp_path, "user", "gw"),
            "password_file": secret(tmp_path, "password", "wrong"),
            "allow_plaintext_password": True,  # a broker on this host
        }
    else:
        extra = {"tls": True}
    cfg = configure(agent_config(tmp_path, free_port(), port), **extra)
    agent = run_agent(cfg, tmp_path / "agent.log")
    try:
        agent.wait_log(r"uplink down: ", timeout=60)
        if case == "port closed":  # a few probes go by, each refused, none logged as warning
            wait_for(lambda: len(PROBE.findall(agent.text())) >= 3, 30, "three failed probes")
    finally:
        assert agent.stop(signal.SIGTERM) == 0, agent.text()[-3000:]
        if auth is not None:
            auth.stop(hard=True)
    text = agent.text()
    downs = DOWN.findall(text)
    assert len(downs) == 1, downs
    assert re.search(expected, downs[0][1]), downs[0][1]
    assert "code:4" not in text and "not currently connected" not in text
