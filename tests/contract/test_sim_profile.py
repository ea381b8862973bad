"""The simulator speaks the register map of config/profiles/dry_collector.toml, and the demo
writes a config the agent accepts and reads the documented wire format."""

from __future__ import annotations

import io
import tomllib
from pathlib import Path
from typing import Any, Literal

import orjson
import pytest
from pymodbus.client import AsyncModbusTcpClient as Client

from firmware_sim.demo import make_agent_config
from firmware_sim.demo_view import Printer
from firmware_sim.harness import dump_toml
from firmware_sim.plant import DRY_COLLECTOR_MAP, DRY_COLLECTOR_TABLE, Plant

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "config" / "profiles" / "dry_collector.toml"
EXAMPLE = REPO / "config" / "agent.example.toml"

DATATYPE = {
    "uint16": Client.DATATYPE.UINT16,
    "int16": Client.DATATYPE.INT16,
    "uint32": Client.DATATYPE.UINT32,
    "int32": Client.DATATYPE.INT32,
    "float32": Client.DATATYPE.FLOAT32,
}
WORD_ORDER: dict[str, Literal["big", "little"]] = {"ABCD": "big", "CDAB": "little"}


def profile_points() -> list[dict[str, Any]]:
    with PROFILE.open("rb") as f:
        points: list[dict[str, Any]] = tomllib.load(f)["points"]
    return points


def test_register_map_matches_profile() -> None:
    points = profile_points()
    sim = {p.key: p for p in DRY_COLLECTOR_MAP}
    assert [p["key"] for p in points] == [p.key for p in DRY_COLLECTOR_MAP]
    for p in points:
        s = sim[p["key"]]
        assert p["table"] == DRY_COLLECTOR_TABLE, p["key"]
        assert p["address"] == s.address, p["key"]
        assert p["type"] == s.type, p["key"]
        assert p.get("order", "ABCD") == s.order, p["key"]
        assert p.get("scale", 1.0) == s.scale, p["key"]
        assert p.get("offset", 0.0) == 0.0, p["key"]


def decode_as_profile(regs: list[int], p: dict[str, Any]) -> float:
    """Decode one profile point with pymodbus's converter (independent of the simulator's)."""
    width = 2 if p["type"].endswith("32") else 1
    raw = regs[p["address"] : p["address"] + width]
    value = Client.convert_from_registers(
        raw, DATATYPE[p["type"]], word_order=WORD_ORDER[p.get("order", "ABCD")]
    )
    assert isinstance(value, int | float)
    scale, offset = float(p.get("scale", 1.0)), float(p.get("offset", 0.0))
    return float(value) * scale + offset


@pytest.mark.parametrize("t", [0.0, 7.5, 33.3, 61.0, 250.0])
@pytest.mark.parametrize("unit", [1, 2])
def test_registers_decode_per_profile(unit: int, t: float) -> None:
    plant = Plant(seed=9, scenario="smoulder")
    regs = plant.collector_registers(unit, t)
    state = plant.collector(unit, t)
    for p in profile_points():
        got = decode_as_profile(regs, p)
        want = state.value(p["key"])
        assert got == pytest.approx(want, abs=p.get("scale", 1.0) / 2 + 1e-3), p["key"]


def test_demo_config_is_accepted_by_the_agent(tmp_path: Path) -> None:
    load_config = pytest.importorskip("agent.config").load_config
    with EXAMPLE.open("rb") as f:
        template = tomllib.load(f)
    cfg = make_agent_config(
        template,
        template_dir=EXAMPLE.parent,
        sim_port=15020,
        broker_port=11883,
        storage_dir=tmp_path / "storage",
    )
    assert {b["port"] for b in cfg["buses"]} == {15020}
    assert cfg["uplink"]["port"] == 11883
    cfg_file = tmp_path / "elsewhere" / "agent.toml"
    cfg_file.parent.mkdir()
    cfg_file.write_text(dump_toml(cfg))
    loaded = load_config(cfg_file)
    assert {p.unit_id for p in loaded.points} >= {1, 2}
    assert {p.key for p in loaded.points} >= {"hopper_temp", "diff_pressure"}


def test_demo_reads_the_wire_format() -> None:
    out = io.StringIO()
    printer = Printer(out, color=False)
    telemetry = {
        "v": 1,
        "gateway": "GW01",
        "stream": "telemetry",
        "backfill": False,
        "records": {
            "seq": [1, 2, 3, 4],
            "point": ["P1", "P2", "P3", "P4"],
            "device": ["DC-1", "DC-1", "DC-1", "DC-2"],
            "key": ["hopper_temp", "diff_pressure", "fan_running", "hopper_temp"],
            "ts": [1_700_000_000_000] * 4,
            "value": [38.24, 1012.4, 1, None],
            "quality": [0, 0, 0, 1],
            "unit": ["°C", "Pa", "", "°C"],
        },
    }
    alarm = {
        "v": 1,
        "gateway": "GW01",
        "stream": "alarm",
        "records": [
            {
                "seq": 1,
                "alarm_id": "a1",
                "point": "P1",
                "device": "DC-1",
                "key": "hopper_temp",
                "direction": "high",
                "transition": "raise",
                "level": "warning",
                "prev_level": None,
                "value": 61.234,
                "threshold": 60.0,
                "unit": "°C",
                "ts": 1_700_000_030_000,
                "text_zh": "灰斗温度预警",
                "text_en": "hopper temperature warning",
            }
        ],
    }
    printer.handle("dust/E/GW01/telemetry", orjson.dumps(telemetry))
    printer.handle("dust/E/GW01/alarm", orjson.dumps(alarm))
    printer.handle("dust/E/GW01/status", b'"online"')
    text = out.getvalue()
    assert "DC-1   hopper 38.2 °C  ΔP 1012 Pa  fan on" in text
    assert "DC-2   hopper -- (comm fail)" in text
    assert "ALARM RAISE  DC-1 hopper_temp  灰斗温度预警 / hopper temperature warning" in text
    assert "61.23 °C ≥ 60 °C (warning)" in text
    tally = printer.tally
    assert (tally.readings, tally.good_readings) == (4, 3)
    assert tally.smoulder_alarm() is not None
    assert tally.messages == {"telemetry": 1, "alarm": 1, "status": 1}
