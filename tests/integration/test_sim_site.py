"""`dust-sim serve --config`: the simulator serves a site's own config, and the real agent
pointed at it with that same config reads every point good and raises no alarm.

Each config is served with `--local` (TCP buses on free loopback ports, RTU buses on socat pty
pairs) and `--agent-config`, the agent runs on the rewritten copy with its rule delays cut to
at most 2 s and a 0.25 s poll (so any condition that holds in steady state would raise within
the run), and the test waits for readings of every point, then checks quality, the decoded
values against the simulator's own signal ranges, and the alarm stream.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.config import load_config
from firmware_sim.codec import resolution
from firmware_sim.harness import Broker, dump_toml
from firmware_sim.site import SiteModel
from tests.conftest import REPO
from tests.e2e import BIN, Collector, Proc, start_agent, wait_for

pytestmark = pytest.mark.integration

FAST = {
    "on_delay": 2.0,
    "off_delay": 3.0,
    "rate_hold": 2.0,
    "idle_delay": 2.0,
    "state_delay": 0.0,
    "deviation_hold": 2.0,
}
READINGS = 30  # per point: 7.5 s of polls at 0.25 s after the first good one


def one_device_config(tmp: Path, profile: Path) -> Path:
    data: dict[str, Any] = {
        "profiles_dir": str(profile.parent),
        "site": {"enterprise_code": "130100000001", "gateway_id": "GWT", "name": "t"},
        "buses": [{"name": "b", "type": "tcp", "host": "10.9.9.9", "port": 502}],
        "devices": [{"name": "D-1", "bus": "b", "unit": 7, "profile": profile.stem}],
        "uplink": {"host": "127.0.0.1", "port": 1883},
        "storage": {"dir": str(tmp / "unused")},
    }
    path = tmp / f"site-{profile.stem}.toml"
    path.write_text(dump_toml(data))
    return path


def exotic_config(tmp: Path) -> Path:
    """Every bus type and every encoding: 64-bit types, word orders, offsets, bits, coils."""
    pts = [
        {
            "key": "t64",
            "table": "holding",
            "address": 0,
            "type": "float64",
            "order": "BADC",
            "kind": "material_temperature",
        },
        {"key": "cnt", "table": "holding", "address": 4, "type": "int64", "order": "DCBA"},
        {
            "key": "flow",
            "table": "holding",
            "address": 8,
            "type": "uint32",
            "order": "CDAB",
            "scale": 0.01,
            "offset": 5.0,
            "kind": "wet_flow",
            "rule": {"low_warning": 9.0},
        },
        {
            "key": "co",
            "table": "input",
            "address": 0,
            "type": "int16",
            "scale": 0.1,
            "offset": -10.0,
            "kind": "co",
        },
        {
            "key": "vel",
            "table": "input",
            "address": 1,
            "type": "float32",
            "order": "DCBA",
            "kind": "duct_velocity",
        },
        {"key": "fan_running", "table": "input", "address": 3, "bit": 0, "kind": "fan_running"},
        {"key": "vent", "table": "input", "address": 3, "bit": 3, "kind": "explosion_protection"},
        {"key": "ext", "table": "coil", "address": 2, "kind": "extinguisher_fault"},
        {"key": "prod", "table": "discrete", "address": 5, "kind": "producer_running"},
    ]
    devices = [
        {"name": n, "bus": b, "unit": u, "points": pts}
        for n, b, u in (("T-1", "tcp", 1), ("R-2", "line", 2), ("G-3", "gw", 3))
    ]
    data: dict[str, Any] = {
        "site": {"enterprise_code": "130100000001", "gateway_id": "GWX", "name": "x"},
        "buses": [
            {"name": "tcp", "type": "tcp", "host": "10.9.9.9", "port": 502},
            {"name": "line", "type": "rtu", "port": "/dev/ttyUSB9", "baud": 38400, "timeout": 0.3},
            {"name": "gw", "type": "rtu_tcp", "host": "10.9.9.8", "port": 4001, "baud": 19200},
        ],
        "devices": devices,
        "uplink": {"host": "127.0.0.1", "port": 1883},
        "storage": {"dir": str(tmp / "unused")},
    }
    path = tmp / "site-exotic.toml"
    path.write_text(dump_toml(data))
    return path


CONFIGS = [
    "config/agent.example.toml",
    "systemd/agent.example.toml",
    *[f"profile:{p.name}" for p in sorted((REPO / "config" / "profiles").glob("*.toml"))],
    "exotic",
]


def site_config(tmp: Path, which: str) -> Path:
    if which == "exotic":
        return exotic_config(tmp)
    if which.startswith("profile:"):
        return one_device_config(tmp, REPO / "config" / "profiles" / which.split(":")[1])
    return REPO / which


def fast_agent_config(served: Path, tmp: Path, broker_port: int) -> Path:
    data = tomllib.loads(served.read_text())
    for bus in data["buses"]:
        bus["poll_interval"] = 0.25
    data["uplink"]["port"] = broker_port
    data["uplink"]["host"] = "127.0.0.1"
    data["storage"] = {"dir": str(tmp / "state")}
    data.setdefault("rules", {}).setdefault("defaults", {}).update(FAST)
    path = tmp / "agent.toml"
    path.write_text(dump_toml(data))
    return path


def serve(tmp: Path, site: Path, *extra: str) -> tuple[Proc, Path]:
    out = tmp / "served.toml"
    sim = Proc(
        [
            str(BIN / "dust-sim"),
            "serve",
            "--config",
            str(site),
            "--local",
            "--agent-config",
            str(out),
            *extra,
        ],
        tmp / "sim.log",
    )
    sim.wait_log(r'\{"dust_sim":"serving".*\}')
    return sim, out


@pytest.mark.parametrize("which", CONFIGS)
def test_agent_reads_every_point_good_and_no_alarm(
    broker: Broker, tmp_path: Path, which: str
) -> None:
    site = site_config(tmp_path, which)
    model = SiteModel(load_config(site))
    collector = Collector(broker.port)
    collector.start()
    sim, served = serve(tmp_path, site)
    agent = start_agent(fast_agent_config(served, tmp_path, broker.port), tmp_path / "agent.log")
    codes = {p.code: p for p in model.cfg.points}

    def enough() -> bool:
        counts = dict.fromkeys(codes, 0)
        for r in collector.readings():
            if r["point"] in counts and r["quality"] == 0:
                counts[r["point"]] += 1
        return min(counts.values()) >= READINGS

    try:
        wait_for(enough, 60, f"{READINGS} good readings of every point")
    finally:
        assert agent.stop() == 0, agent.text()[-3000:]
        sim.stop()
        collector.stop()
    readings = [r for r in collector.readings() if r["point"] in codes]
    bad = [r for r in readings if r["quality"] != 0 or r["value"] is None]
    assert not bad, bad[:5]
    for r in readings:
        p = codes[r["point"]]
        s = model.signals[p.index]
        tol = resolution(p.type, p.scale) + 1e-3 * max(1.0, abs(s.centre))
        assert s.low - tol <= r["value"] <= s.high + tol, (p.device, p.key, r["value"], s)
    assert collector.alarm_records() == []


def test_bind_names_a_bus(tmp_path: Path) -> None:
    site = REPO / "config" / "agent.example.toml"
    sim = Proc(
        [str(BIN / "dust-sim"), "serve", "--config", str(site), "--bind", "plant=127.0.0.1:0"],
        tmp_path / "sim.log",
    )
    try:
        m = sim.wait_log(r"(\{\"dust_sim\".*\})")
        line = orjson.loads(m.group(1))
        assert line["buses"]["plant"]["host"] == "127.0.0.1" and line["buses"]["plant"]["port"]
        assert line["devices"] == 2 and line["points"] == 16
    finally:
        sim.stop()
    bad = Proc(
        [str(BIN / "dust-sim"), "serve", "--config", str(site), "--bind", "nope=127.0.0.1:0"],
        tmp_path / "bad.log",
    )
    assert bad.proc.wait(30) == 2
    assert "names no bus" in bad.text()
