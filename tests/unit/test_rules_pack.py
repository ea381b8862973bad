"""The pack rules added to the engine (difference, CO above background, levels in percent of a
reference, gates on alarms only), stale vs comm_loss, and the busy-column skip, each against
the plain-Python reference (hypothesis) and through the config loader."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, load_config
from agent.core.model import AlarmEvent, Frame, PointSpec, Quality, ThresholdRule
from agent.core.rulespec import PointRules
from agent.rules import RuleEngine
from agent.service.comm import comm_loss_events
from agent.source.poller import DeviceChange
from firmware_sim.harness import dump_toml
from tests.conftest import REPO
from tests.factories import point
from tests.oracles.rules_reference import Change, RulesReference

NAN = math.nan
COMM = int(Quality.COMM_FAIL)


def spec(
    i: int, rule: ThresholdRule | None = None, *, unit: int = 1, device: str = "DC-1", **kw: Any
) -> PointSpec:
    return point(
        i, device=device, name_zh="点", name_en="point", unit_id=unit, unit="u", rule=rule,
        rules=PointRules(**kw),
    )  # fmt: skip


def frame(
    idx: Sequence[int], t: float, xs: Sequence[float], qs: Sequence[int] | None = None
) -> Frame:
    v = np.array(xs, dtype=np.float64)
    q = np.where(np.isnan(v), COMM, 0) if qs is None else np.array(qs)
    return Frame(np.array(idx, dtype=np.intp), np.full(len(idx), float(t)), v, q.astype(np.uint8))


def compact(events: Sequence[AlarmEvent]) -> list[tuple[str, str, str | None]]:
    return sorted((e.alarm_id, e.transition, e.level) for e in events)


def oracle(changes: Sequence[Change]) -> list[tuple[str, str, str | None]]:
    return sorted((c.alarm_id, c.transition, c.level) for c in changes)


# --- new kinds and options against the reference ---------------------------------------------

DELAYS = st.builds(
    ThresholdRule,
    high_warning=st.sampled_from([None, 60.0]),
    high_alarm=st.sampled_from([None, 70.0]),
    low_warning=st.sampled_from([None, 20.0]),
    low_alarm=st.sampled_from([None, 10.0]),
    hysteresis_pct=st.sampled_from([0.0, 2.0, 10.0]),
    on_delay=st.sampled_from([0.0, 1.0, 2.5]),
    off_delay=st.sampled_from([0.0, 1.0, 3.0]),
)
OPTIONS: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "difference": st.fixed_dictionaries(
        {
            "diff_warning": st.sampled_from([5.0, -5.0, 15.0]),
            "diff_alarm": st.sampled_from([None, 20.0, -20.0]),
            "when_min_level": st.sampled_from([1, 2]),
        }
    ),
    "co": st.fixed_dictionaries(
        {
            "deviation_warning": st.sampled_from([2.0, -2.0, 10.0]),
            "deviation_alarm": st.sampled_from([None, 5.0, -8.0, 30.0]),
            "deviation_absolute": st.booleans(),
            "deviation_hold": st.sampled_from([None, 0.0, 3.0]),
            "baseline_tau": st.sampled_from([5.0, 60.0]),
        }
    ),
    "alarm_gate": st.fixed_dictionaries(
        {
            "when_min_level": st.sampled_from([1, 2]),
            "rate_warning": st.sampled_from([None, 2.0]),
            "rate_alarm": st.sampled_from([None, 5.0]),
            "rate_window": st.just(4.0),
            "rate_hold": st.sampled_from([0.0, 1.0]),
            "drop_warning": st.sampled_from([None, 20.0]),
            "drop_alarm": st.sampled_from([None, 40.0]),
            "drop_window": st.just(5.0),
        }
    ),
}
VALUES = st.sampled_from([0.0, 5.0, 15.0, 21.0, 30.0, 40.0, 45.0, 50.0, 55.0, 64.0, 75.0, NAN])


@settings(max_examples=150, deadline=None)
@given(st.data(), st.sampled_from(sorted(OPTIONS)))
def test_new_options_match_the_scalar_reference(data: st.DataObject, kind: str) -> None:
    n = data.draw(st.integers(1, 4), label="points")
    gate, ref = n, n + 1
    gated = data.draw(st.booleans(), label="gated")
    points = []
    for i in range(n):
        kw = dict(data.draw(OPTIONS[kind], label=f"options{i}"))
        if kind == "difference":
            kw["minus"] = ref
        if gated:
            kw["when"] = gate
        points.append(spec(i, data.draw(DELAYS, label=f"rule{i}"), **kw))
    points += [spec(gate), spec(ref)]
    eng, scalar = RuleEngine(points), RulesReference(points)
    last = [40.0] * (n + 2)
    last[gate] = 1.0
    t = 1000.0
    for _ in range(data.draw(st.integers(1, 50), label="frames")):
        t += data.draw(st.sampled_from([0.5, 1.0, 1.0, 2.0, 7.0, -3.0]))
        if data.draw(st.integers(0, 7)) == 0:
            last[gate] = data.draw(st.sampled_from([0.0, 1.0, NAN]))
        subset = sorted(data.draw(st.sets(st.integers(0, n + 1), min_size=1)))
        for i in subset:
            if i != gate and data.draw(st.booleans()):
                last[i] = data.draw(VALUES)
        f = frame(subset, t, [last[i] for i in subset])
        assert compact(eng.step(f)) == oracle(scalar.step(f))


QUALITIES = st.sampled_from([0, 0, 0, COMM, int(Quality.PROTOCOL), int(Quality.BAD_VALUE)])


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_quality_with_failing_units_matches_the_scalar_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(2, 6), label="points")
    units = [data.draw(st.sampled_from([1, 2, 3]), label=f"unit{i}") for i in range(n)]
    points = [
        spec(
            i,
            unit=units[i],
            stale_after=data.draw(st.sampled_from([1.0, 2.0, 3.0])),
            frozen_polls=data.draw(st.sampled_from([None, 3])),
            range_min=0.0,
            range_max=100.0,
        )
        for i in range(n)
    ]
    eng, scalar = RuleEngine(points), RulesReference(points)
    t = 0.0
    for _ in range(data.draw(st.integers(1, 60), label="frames")):
        t += data.draw(st.sampled_from([0.5, 1.0, 1.0, 2.0]))
        down = data.draw(st.sets(st.sampled_from([1, 2, 3])), label="units down")
        qs = [COMM if units[i] in down else data.draw(QUALITIES) for i in range(n)]
        xs = [data.draw(st.sampled_from([50.0, 51.0, 120.0])) if q == 0 else NAN for q in qs]
        subset = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
        f = frame(subset, t, [xs[i] for i in subset], [qs[i] for i in subset])
        assert compact(eng.step(f)) == oracle(scalar.step(f))


def test_everything_at_scale_matches_the_reference() -> None:
    """Many points, every kind, gates flipping and units failing: the busy-column skip never
    misses a detector that the reference advances."""
    rng = np.random.default_rng(11)
    n = 400
    th = ThresholdRule(high_warning=60.0, high_alarm=70.0, low_warning=20.0, on_delay=1.0)
    kinds: list[dict[str, Any]] = [
        {"rate_warning": 3.0, "rate_alarm": 8.0, "rate_window": 10.0, "rate_hold": 2.0},
        {"deviation_warning": 5.0, "deviation_absolute": True, "deviation_hold": 3.0},
        {"drop_alarm": 30.0, "drop_window": 20.0, "when_min_level": 2},
        {"count_warning": 1.0, "count_alarm": 3.0, "count_window": 10.0, "count_bits": 8},
        {"diff_warning": 10.0, "diff_alarm": -10.0, "minus": 1},
        {"state_alarm": (2,), "idle_states": (0,), "idle_delay": 2.0},
        {"stale_after": 2.0, "frozen_polls": 4, "range_min": 0.0, "range_max": 100.0},
    ]
    points = [spec(0), spec(1)] + [
        spec(i, th, unit=2 + i // 20, when=0 if i % 3 else None, **kinds[i % len(kinds)])
        for i in range(2, n)
    ]
    eng, scalar = RuleEngine(points), RulesReference(points)
    level = rng.uniform(20, 80, n)
    total = 0
    for k in range(300):
        level += rng.normal(0, 3, n)
        xs = np.round(level, 0)
        xs[0] = float(k % 40 < 30)  # the gate
        qs = np.zeros(n, dtype=np.int64)
        qs[rng.random(n) < 0.02] = COMM
        down = 2 + (k // 30) % 20  # one unit dead for 30 frames at a time
        qs[[i for i in range(2, n) if 2 + i // 20 == down]] = COMM
        xs[qs != 0] = NAN
        subset = np.sort(rng.permutation(n)[: rng.integers(n // 2, n)])
        f = frame(subset.tolist(), k * 0.5, xs[subset].tolist(), qs[subset].tolist())
        got = compact(eng.step(f))
        assert got == oracle(scalar.step(f))
        total += len(got)
    assert total > 300


# --- stale vs comm_loss -----------------------------------------------------------------------


def test_a_dead_device_raises_exactly_one_alarm() -> None:
    """Unit 1 (DC-1) stops answering: its points go silent in the engine and the poller's
    comm_loss is the one alarm. A block that times out while the rest of its unit answers
    still goes stale."""
    points = [spec(i, unit=1, stale_after=3.0) for i in range(3)]
    points += [spec(i, unit=2, device="DC-2", stale_after=3.0) for i in (3, 4)]
    eng = RuleEngine(points)
    idx = list(range(5))
    events: list[AlarmEvent] = []
    for t in range(3):
        events += eng.step(frame(idx, t, [50.0] * 5))
    for t in range(3, 120):  # DC-1 dead; DC-2 answers
        events += eng.step(frame(idx, t, [NAN, NAN, NAN, 50.0, 50.0]))
    lost = DeviceChange("b", 1, ("DC-1",), lost=True, ts=6.0, reason="timeout")
    events += comm_loss_events(lost)
    assert [(e.alarm_id, e.transition, e.kind) for e in events] == [
        ("DC-1:comm_loss", "raise", "comm_loss")
    ]
    # DC-1 answers again with good readings: nothing more from the engine
    assert eng.step(frame(idx, 120, [50.0] * 5)) == []
    # one block of DC-2 times out while the rest of DC-2 answers: that point goes stale
    ev: list[AlarmEvent] = []
    for t in range(121, 130):
        ev += eng.step(frame(idx, t, [50.0, 50.0, 50.0, 50.0, NAN]))
    assert [(e.alarm_id, e.transition, e.ts) for e in ev] == [("P004:stale", "raise", 123.0)]


def test_stale_held_while_the_unit_is_dead_and_resolved_when_it_answers() -> None:
    points = [spec(0, stale_after=2.0), spec(1, stale_after=2.0)]
    eng = RuleEngine(points)
    eng.step(frame([0, 1], 0, [50.0, 50.0]))
    bad = int(Quality.BAD_VALUE)
    ev = []
    for t in range(1, 5):  # the device answers, point 0 decodes to garbage: stale
        ev += eng.step(frame([0, 1], t, [NAN, 50.0], [bad, 0]))
    assert compact(ev) == [("P000:stale", "raise", "warning")]
    for t in range(5, 60):  # then the whole unit goes silent: held, neither raised nor cleared
        assert eng.step(frame([0, 1], t, [NAN, NAN])) == []
    assert [a.alarm_id for a in eng.active()] == ["P000:stale"]
    assert compact(eng.step(frame([0, 1], 60, [50.0, 50.0]))) == [("P000:stale", "clear", None)]


# --- targeted behaviour of the pack rules ------------------------------------------------------


def test_outlet_minus_inlet_warns_with_texts() -> None:
    rule = ThresholdRule(high_alarm=70.0, on_delay=0.0, off_delay=0.0)
    outlet = spec(0, rule, diff_warning=15.0, minus=1)
    eng = RuleEngine([outlet, spec(1)])
    assert eng.step(frame([0, 1], 0, [50.0, 40.0])) == []
    (ev,) = eng.step(frame([0, 1], 1, [56.0, 40.0]))
    assert (ev.alarm_id, ev.transition, ev.level, ev.kind) == (
        "P000:diff",
        "raise",
        "warning",
        "difference",
    )
    assert (ev.value, ev.threshold, ev.unit) == (16.0, 15.0, "u")
    assert ev.text_zh == "DC-1 点 差值预警：16 u（限值 15 u）"
    assert ev.text_en == "DC-1 point difference warning: 16 u (limit 15 u)"
    # evaluated when the outlet is read, against the inlet's latest reading
    assert eng.step(frame([1], 2, [41.4])) == []  # the outlet was not read
    assert eng.step(frame([0], 3, [56.0]))[0].transition == "clear"  # 14.6 <= 15 - 2 %


def test_co_above_background_warns_after_ten_minutes_and_alarms_at_plus_thirty() -> None:
    co = spec(
        0,
        ThresholdRule(high_alarm=50.0, on_delay=30.0, off_delay=60.0),
        deviation_warning=10.0,
        deviation_alarm=30.0,
        deviation_absolute=True,
        deviation_hold=600.0,
        baseline_tau=14400.0,
    )
    eng = RuleEngine([co])
    out: list[AlarmEvent] = []
    for t in range(0, 600, 10):  # background 4 ppm
        out += eng.step(frame([0], t, [4.0]))
    for t in range(600, 1800, 10):  # smouldering: 16 ppm, i.e. background + 12
        out += eng.step(frame([0], t, [16.0]))
    assert [(e.alarm_id, e.transition, e.level, e.ts) for e in out] == [
        ("P000:deviation", "raise", "warning", 1200.0)
    ]
    assert out[0].unit == "u" and out[0].threshold == 10.0
    for t in range(1800, 1900, 10):  # background + 40: alarm after the 30 s on-delay
        out += eng.step(frame([0], t, [44.0]))
    assert [(e.transition, e.level, e.ts) for e in out[1:]] == [("escalate", "alarm", 1830.0)]


def test_wet_tank_warns_always_and_alarms_only_while_producers_run() -> None:
    rule = ThresholdRule(low_warning=0.88, low_alarm=0.8, on_delay=0.0, off_delay=0.0)
    tank = spec(0, rule, when=1, when_min_level=2)
    eng = RuleEngine([tank, spec(1)])
    assert compact(eng.step(frame([0, 1], 0, [0.7, 0.0]))) == [("P000:low", "raise", "warning")]
    assert compact(eng.step(frame([0, 1], 1, [0.7, 1.0]))) == [("P000:low", "escalate", "alarm")]
    assert compact(eng.step(frame([0, 1], 2, [0.7, 0.0]))) == [
        ("P000:low", "deescalate", "warning")
    ]


# --- through the config loader -----------------------------------------------------------

BASE: dict[str, Any] = {
    "profiles_dir": str(REPO / "config" / "profiles"),
    "site": {"enterprise_code": "E1", "gateway_id": "G1"},
    "buses": [{"name": "plant", "host": "127.0.0.1", "port": 5020}],
    "devices": [
        {"name": "DC-1", "bus": "plant", "unit": 1, "profile": "dry_collector"},
        {"name": "WC-1", "bus": "plant", "unit": 2, "profile": "wet_collector"},
        {
            "name": "X",
            "bus": "plant",
            "unit": 3,
            "points": [
                {"key": "dust", "table": "input", "address": 0, "type": "uint16"},
                {"key": "co", "table": "input", "address": 1, "type": "uint16"},
            ],
        },
    ],
    "storage": {"dir": "var"},
}


def load(tmp_path: Path, **changes: Any) -> dict[str, PointSpec]:
    d = copy.deepcopy(BASE)
    x = d["devices"][2]["points"]
    x[0]["kind"], x[1]["kind"] = "dust_concentration", "co"
    for k, v in changes.items():
        d[k] = v
    f = tmp_path / "agent.toml"
    f.write_text(dump_toml(d))
    return {f"{p.device}.{p.key}": p for p in load_config(f).points}


def test_pack_rules_resolve(tmp_path: Path) -> None:
    rules = {"kinds": {"dust_concentration": {"reference": 40.0}}}
    pts = load(tmp_path, rules=rules)
    out, inlet = pts["DC-1.outlet_temp"], pts["DC-1.inlet_temp"]
    assert (out.rules.minus, out.rules.diff_warning) == (inlet.index, 15.0)
    dust = pts["X.dust"].rule
    assert dust is not None and (dust.high_warning, dust.high_alarm) == (10.0, 20.0)
    co = pts["X.co"]
    assert co.rule is not None and co.rule.high_alarm == 50.0
    q = co.rules
    assert (q.deviation_absolute, q.deviation_warning, q.deviation_hold) == (True, 10.0, 600.0)
    tank = pts["WC-1.tank_level"]
    assert tank.rules.when_min_level == 2  # the profile's absolute setpoints stay
    assert tank.rule is not None and (tank.rule.low_warning, tank.rule.low_alarm) == (0.9, 0.8)


def test_levels_from_a_reference_setpoint(tmp_path: Path) -> None:
    rules = {"kinds": {"wet_tank_level": {"reference": 0.5}}}
    d = copy.deepcopy(BASE)
    d["devices"][1]["override"] = {
        "tank_level": {"rule": {"low_warning": "off", "low_alarm": "off"}}
    }
    f = tmp_path / "agent.toml"
    f.write_text(dump_toml({**d, "rules": rules}))
    (tank,) = [p for p in load_config(f).points if p.key == "tank_level"]
    assert tank.rule is not None
    assert tank.rule.low_warning == pytest.approx(0.55)
    assert tank.rule.low_alarm == 0.5


def test_a_level_set_both_ways_is_an_error(tmp_path: Path) -> None:
    rules = {"kinds": {"dust_concentration": {"reference": 40.0, "high_alarm": 30.0}}}
    with pytest.raises(ConfigError, match=r"high_alarm = 30 and high_alarm_pct = 50"):
        load(tmp_path, rules=rules)


def test_minus_that_names_no_point_is_an_error(tmp_path: Path) -> None:
    d = copy.deepcopy(BASE)
    d["devices"][0]["override"] = {"outlet_temp": {"rule": {"minus": "inlet_tmp"}}}
    f = tmp_path / "agent.toml"
    f.write_text(dump_toml(d))
    with pytest.raises(ConfigError) as err:
        load_config(f)
    msg = str(err.value)
    assert "override.outlet_temp.rule.minus" in msg and "did you mean 'inlet_temp'" in msg


def test_diff_without_minus_is_an_error(tmp_path: Path) -> None:
    rules = {"kinds": {"hopper_temperature": {"diff_warning": 5.0}}}
    with pytest.raises(ConfigError, match="need minus"):
        load(tmp_path, rules=rules)
