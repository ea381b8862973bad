"""The simulator's site model without sockets: its own encoder against pymodbus's converter,
timeline actions, and normal signals fitted to the rules."""

from __future__ import annotations

from typing import Literal

import pytest
from pymodbus.client import AsyncModbusTcpClient as Client

from agent.config import load_config
from firmware_sim.codec import decode, encode
from firmware_sim.site import SiteModel
from firmware_sim.timeline import PointTrack, ScenarioError, parse_timeline
from tests.conftest import REPO

DT = {
    "uint16": Client.DATATYPE.UINT16,
    "int16": Client.DATATYPE.INT16,
    "uint32": Client.DATATYPE.UINT32,
    "int32": Client.DATATYPE.INT32,
    "float32": Client.DATATYPE.FLOAT32,
    "uint64": Client.DATATYPE.UINT64,
    "int64": Client.DATATYPE.INT64,
    "float64": Client.DATATYPE.FLOAT64,
}
WORD: dict[str, Literal["big", "little"]] = {"ABCD": "big", "CDAB": "little"}


@pytest.mark.parametrize("type_", list(DT))
@pytest.mark.parametrize("order", ["ABCD", "CDAB"])
def test_encode_agrees_with_pymodbus(type_: str, order: str) -> None:
    value = -1234.5 if type_.startswith(("int", "float")) else 4321.0
    if type_.endswith("16"):
        value = -123.0 if type_ == "int16" else 123.0
    regs = encode(value, type_, order)
    got = Client.convert_from_registers(regs, DT[type_], word_order=WORD[order])
    assert got == pytest.approx(value if type_.startswith("float") else round(value))


@pytest.mark.parametrize("order", ["ABCD", "CDAB", "BADC", "DCBA"])
def test_byte_orders_scale_and_offset_round_trip(order: str) -> None:
    for type_ in ("uint32", "int32", "float32", "int64", "float64"):
        regs = encode(31.43, type_, order, scale=0.01, offset=-10.0)
        assert decode(regs, type_, order, 0.01, -10.0) == pytest.approx(31.43, abs=0.006)
    assert encode(1.0, "float32", "DCBA") == [0x0000, 0x803F]
    assert encode(1.0, "float32", "BADC") == [0x803F, 0x0000]


def test_integers_saturate() -> None:
    assert encode(1e9, "uint16") == [0xFFFF] and encode(-5, "uint16") == [0]


def track(entries: list[dict[str, object]]) -> PointTrack:
    tl = parse_timeline(entries)
    return PointTrack(lambda s: 10.0, tl.for_point("D.k"))


def test_timeline_actions() -> None:
    t = track(
        [
            {"at": 1, "point": "D.k", "ramp": 2.0, "until": 16},
            {"at": 10, "point": "D.k", "hold": True},
            {"at": 20, "point": "D.k", "scale": 0.5, "over": 2},
            {"at": 30, "point": "D.k", "normal": True},
            {"at": 40, "point": "D.k", "count": 3, "over": 3},
        ]
    )
    assert t.value(0.5) == 10.0
    assert t.value(3) == 14.0 and t.value(9) == 16.0  # ramp stops at `until`
    assert t.value(15) == 16.0  # held at its value at t=10
    assert t.value(21) == pytest.approx(12.0) and t.value(25) == 8.0
    assert t.value(35) == 10.0
    assert [t.value(s) for s in (40, 41, 42, 43, 50)] == [10, 11, 12, 13, 13]


def test_timeline_faults_and_links() -> None:
    tl = parse_timeline(
        [
            {"at": 2, "device": "DC-2", "fault": "silent"},
            {"at": 5, "device": "DC-2", "fault": "busy,slow=0.2"},
            {"at": 9, "device": "DC-2", "fault": "recovered"},
            {"at": 3, "bus": "plant", "link": "down"},
            {"at": 4, "bus": "plant", "link": "up"},
        ]
    )
    assert tl.fault("DC-2", 1) is None
    silent = tl.fault("DC-2", 2)
    assert silent is not None and silent.no_answer
    busy = tl.fault("DC-2", 6)
    assert busy is not None and busy.exception == 6 and busy.delay == 0.2
    assert tl.fault("DC-2", 9) is None
    assert [tl.link_up("plant", s) for s in (2, 3.5, 4)] == [True, False, True]


@pytest.mark.parametrize(
    "entry",
    [
        {"at": 1, "point": "D.k"},
        {"at": 1, "point": "Dk", "set": 1},
        {"at": "x", "point": "D.k", "set": 1},
        {"at": 1, "device": "D", "fault": "melted"},
        {"at": 1, "bus": "b", "link": "sideways"},
    ],
)
def test_bad_timeline_entries(entry: dict[str, object]) -> None:
    with pytest.raises(ScenarioError, match=r"timeline\[0\]"):
        parse_timeline([entry])


def test_normal_signals_sit_inside_their_rules() -> None:
    cfg = load_config(REPO / "config" / "agent.example.toml")
    model = SiteModel(cfg)
    for p in cfg.points:
        s = model.signals[p.index]
        if p.rule is not None and p.rule.high_warning is not None:
            assert s.high < p.rule.high_warning * 0.95, p.key
        if p.rule is not None and p.rule.low_warning is not None:
            assert s.low > p.rule.low_warning * 1.05, p.key
        if p.rules.rate_warning is not None and not p.rules.rate_relative:
            assert s.noise * 3 <= p.rules.rate_warning / p.rules.rate_per / 4, p.key
    # the spark counter must not count: >= 1 spark in 60 s is a warning
    spark = next(p for p in cfg.points if p.key == "spark_count")
    assert model.value(spark, 0) == model.value(spark, 500)


def test_reads_outside_the_map_are_illegal_address() -> None:
    cfg = load_config(REPO / "config" / "agent.example.toml")
    model = SiteModel(cfg)
    assert model.read("plant", 1, 4, 0, 11, t=1.0) != 2
    assert model.read("plant", 1, 4, 5, 7, t=1.0) == 2
    assert model.read("plant", 1, 3, 0, 1, t=1.0) == 2
    assert model.read("plant", 9, 4, 0, 1, t=1.0) == 2
