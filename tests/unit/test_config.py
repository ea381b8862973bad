"""Config validation: a table of bad configs, each with the message it must give."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config import EX_CONFIG, ConfigError, load_config
from firmware_sim.harness import dump_toml
from tests.conftest import REPO

PROFILES = REPO / "config" / "profiles"

BASE: dict[str, Any] = {
    "profiles_dir": str(PROFILES),
    "site": {"enterprise_code": "E1", "gateway_id": "G1"},
    "buses": [{"name": "plant", "host": "127.0.0.1", "port": 5020}],
    "devices": [
        {"name": "DC-1", "bus": "plant", "unit": 1, "profile": "dry_collector"},
        {"name": "DC-2", "bus": "plant", "unit": 2, "profile": "dry_collector"},
        {
            "name": "X",
            "bus": "plant",
            "unit": 3,
            "points": [
                {"key": "a", "table": "holding", "address": 0, "type": "uint16"},
                {"key": "b", "table": "holding", "address": 1, "type": "float32"},
            ],
        },
    ],
    "storage": {"dir": "var"},
}


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    f = tmp_path / "agent.toml"
    f.write_text(dump_toml(data))
    return f


def mutate(fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    d = copy.deepcopy(BASE)
    fn(d)
    return d


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def fn(d: dict[str, Any]) -> None:
        node: Any = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    return fn


BAD: list[tuple[str, Callable[[dict[str, Any]], None], str, str]] = [
    # (case, mutation, key path, message fragment)
    (
        "wrong type",
        _set(["devices", 2, "points", 1, "type"], "flaot32"),
        "devices[2].points[1].type",
        "invalid value 'flaot32' (did you mean 'float32'?)",
    ),
    (
        "wrong value type",
        _set(["devices", 0, "unit"], "one"),
        "devices[0].unit",
        "expected a whole number, got a text in quotes",
    ),
    (
        "unknown key",
        _set(["devices", 2, "points", 0, "adress"], 5),
        "devices[2].points[0].adress",
        "unknown key 'adress' (did you mean 'address'?)",
    ),
    (
        "unknown top key",
        _set(["uplnk"], {}),
        "uplnk",
        "unknown key 'uplnk' (did you mean 'uplink'?)",
    ),
    (
        "missing profile",
        _set(["devices", 1, "profile"], "dry_colector"),
        "devices[1].profile",
        "no equipment profile 'dry_colector'",
    ),
    (
        "overlapping register",
        _set(["devices", 2, "points", 1, "address"], 0),
        "devices[2].points",
        "overlaps X.a (holding registers 0..0) on unit 3 of bus 'plant'",
    ),
    (
        "missing key",
        lambda d: d["site"].pop("gateway_id"),
        "site.gateway_id",
        "required key 'gateway_id' is missing",
    ),
    (
        "unknown bus",
        _set(["devices", 0, "bus"], "plnt"),
        "devices[0].bus",
        "no bus named 'plnt' (did you mean 'plant'?)",
    ),
    (
        "unknown override point",
        _set(["devices", 0, "override"], {"hoper_temp": {"code": "Z"}}),
        "devices[0].override.hoper_temp",
        "has no point 'hoper_temp' (did you mean 'hopper_temp'?)",
    ),
    (
        "duplicate code",
        _set(["devices", 0, "override"], {"hopper_temp": {"code": "DC-2.hopper_temp"}}),
        "devices[1]",
        "point code 'DC-2.hopper_temp' of DC-2.hopper_temp is already used by DC-1.hopper_temp",
    ),
    (
        "bad kind",
        _set(["devices", 2, "points", 0, "kind"], "hoper_temperature"),
        "devices[2].points[0].kind",
        "unknown sensor kind 'hoper_temperature' (did you mean 'hopper_temperature'?)",
    ),
    (
        "threshold order",
        _set(["rules"], {"kinds": {"hopper_temperature": {"high_warning": 80.0}}}),
        "rules.kinds.hopper_temperature",
        "the high warning must not be above the high alarm",
    ),
    ("duplicate device", _set(["devices", 1, "name"], "DC-1"), "devices[1].name", "used twice"),
    (
        "bad address",
        _set(["devices", 2, "points", 0, "address"], 70000),
        "devices[2].points[0].address",
        "outside 0..65535",
    ),
    (
        "bad bus type",
        _set(["buses", 0, "type"], "serial"),
        "buses[0].type",
        "expected one of: tcp, rtu, rtu_tcp",
    ),
    ("rtu without a path", _set(["buses", 0, "type"], "rtu"), "buses[0].port", "serial device"),
    ("no buses", _set(["buses"], []), "buses", "no bus configured"),
    ("busy retries", _set(["buses", 0, "busy_retries"], 9), "buses[0].busy_retries", "0..5"),
    ("busy delay", _set(["buses", 0, "busy_delay"], 3.0), "buses[0].busy_delay", "0..1 seconds"),
    ("round trip", _set(["buses", 0, "round_trip"], 0), "buses[0].round_trip", "above 0"),
    ("bad hole", _set(["devices", 2, "holes"], [3, -1]), "devices[2].holes[1]", "outside"),
    (
        "point on a hole",
        _set(["devices", 2, "holes"], [0]),
        "devices[2].points[0].address",
        "covers register 0, which the device declares a hole",
    ),
]


@pytest.mark.parametrize(("case", "fn", "path", "fragment"), BAD, ids=[b[0] for b in BAD])
def test_bad_config_message(
    tmp_path: Path, case: str, fn: Callable[[dict[str, Any]], None], path: str, fragment: str
) -> None:
    f = write(tmp_path, mutate(fn))
    with pytest.raises(ConfigError) as info:
        load_config(f)
    text = str(info.value)
    assert path in text, text
    assert fragment in text, text
    assert str(info.value.file).endswith(".toml")


def test_profile_error_names_profile_file(tmp_path: Path) -> None:
    pdir = tmp_path / "profiles"
    pdir.mkdir()
    text = (
        (PROFILES / "dry_collector.toml").read_text().replace('order = "CDAB"', 'order = "CBDA"', 1)
    )
    (pdir / "dry_collector.toml").write_text(text)
    f = write(tmp_path, mutate(_set(["profiles_dir"], str(pdir))))
    with pytest.raises(ConfigError) as info:
        load_config(f)
    assert info.value.file == pdir / "dry_collector.toml"
    assert info.value.path == "points[1].order"
    assert "expected one of: ABCD, CDAB, BADC, DCBA" in str(info.value)


def test_not_toml(tmp_path: Path) -> None:
    f = tmp_path / "agent.toml"
    f.write_text("[site\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_good_config_resolves(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE))
    assert len(cfg.points) == 8 + 8 + 2
    assert [p.index for p in cfg.points] == list(range(len(cfg.points)))
    hopper = cfg.points[0]
    assert (hopper.code, hopper.unit, hopper.type, hopper.order) == (
        "DC-1.hopper_temp",
        "°C",
        "float32",
        "ABCD",
    )
    assert (
        hopper.rule is not None and hopper.rule.high_alarm == 70.0 and hopper.rule.on_delay == 30.0
    )
    assert cfg.storage.dir == (tmp_path / "var").resolve()


def test_overrides_apply(tmp_path: Path) -> None:
    d = mutate(
        _set(
            ["devices", 0, "override"],
            {"hopper_temp": {"code": "HT1", "rule": {"high_alarm": 75.0, "high_warning": "off"}}},
        )
    )
    d["rules"] = {"defaults": {"on_delay": 5.0}}
    cfg = load_config(write(tmp_path, d))
    p = cfg.points[0]
    assert p.code == "HT1"
    assert p.rule is not None
    assert (p.rule.high_alarm, p.rule.high_warning, p.rule.on_delay) == (75.0, None, 5.0)


def test_example_config_is_valid() -> None:
    cfg = load_config(REPO / "config" / "agent.example.toml")
    assert {p.device for p in cfg.points} == {"DC-1", "DC-2"}


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *args],
        check=False,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_check_prints_plan() -> None:
    r = run_cli("check", "-c", "config/agent.example.toml")
    assert r.returncode == 0, r.stderr
    assert "plant" in r.stdout and "DC-1.diff_pressure" in r.stdout


@pytest.mark.parametrize(
    "case", ["wrong type", "unknown key", "missing profile", "overlapping register"]
)
def test_check_exits_78(tmp_path: Path, case: str) -> None:
    fn = next(b[1] for b in BAD if b[0] == case)
    r = run_cli("check", "-c", str(write(tmp_path, mutate(fn))))
    assert r.returncode == EX_CONFIG
    assert "config error" in r.stderr and "agent.toml" in r.stderr
