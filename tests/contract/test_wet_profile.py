"""config/profiles/wet_collector.toml matches the simulator's wet collector register map, and
the profile's gated rules resolve against its own points."""

from __future__ import annotations

import tomllib

from agent.config import load_config
from firmware_sim.harness import dump_toml
from firmware_sim.plant import WET_COLLECTOR_MAP, Plant, decode
from tests.conftest import REPO


def test_profile_points_match_the_simulator_map() -> None:
    profile = tomllib.loads((REPO / "config/profiles/wet_collector.toml").read_text())
    got = {
        (p["key"], p["address"], p.get("type", "uint16"), p.get("scale", 1.0))
        for p in profile["points"]
    }
    want = {(p.key, p.address, p.type, p.scale) for p in WET_COLLECTOR_MAP}
    assert got == want
    regs = Plant(seed=1).collector_registers(3, 5.0)
    flow = next(p for p in WET_COLLECTOR_MAP if p.key == "recirc_flow")
    assert 9.5 < decode(regs[flow.address :], flow.type, flow.order, flow.scale) < 10.5


def test_wet_device_gates_resolve(tmp_path: object) -> None:
    from pathlib import Path

    tmp = Path(str(tmp_path))
    data = tomllib.loads((REPO / "config/agent.example.toml").read_text())
    data["profiles_dir"] = str(REPO / "config/profiles")
    data["rules_pack"] = str(REPO / "config/rules/default.toml")
    data["devices"].append({"name": "WC-3", "bus": "plant", "unit": 3, "profile": "wet_collector"})
    cfg_file = tmp / "agent.toml"
    cfg_file.write_text(dump_toml(data))
    cfg = load_config(cfg_file)
    by = {f"{p.device}.{p.key}": p for p in cfg.points}
    assert by["WC-3.recirc_flow"].rules.when == by["WC-3.grinder_running"].index
    assert by["DC-1.airlock_state"].rules.when == by["DC-1.fan_running"].index


def test_a_gate_naming_no_point_is_a_config_error_with_its_key_path(tmp_path: object) -> None:
    from pathlib import Path

    import pytest

    from agent.config import ConfigError

    tmp = Path(str(tmp_path))
    data = tomllib.loads((REPO / "config/agent.example.toml").read_text())
    data["profiles_dir"] = str(REPO / "config/profiles")
    data["rules_pack"] = str(REPO / "config/rules/default.toml")
    data["devices"][0]["override"]["airlock_state"] = {"rule": {"when": "fan_runing"}}
    cfg_file = tmp / "agent.toml"
    cfg_file.write_text(dump_toml(data))
    with pytest.raises(ConfigError) as err:
        load_config(cfg_file)
    text = str(err.value)
    assert "devices[0].override.airlock_state.rule.when" in text
    assert "did you mean 'fan_running'" in text and str(cfg_file) in text
