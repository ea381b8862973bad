"""RuleEngine: targeted lifecycle cases and a property test against the independent reference
(tests/oracles/rules_reference.py)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.model import AlarmEvent, Frame, PointSpec, ThresholdRule
from agent.rules import RuleEngine
from tests.factories import point
from tests.oracles.rules_reference import Change, RulesReference

NAN = math.nan


def spec(index: int, rule: ThresholdRule | None, unit: str = "°C") -> PointSpec:
    return point(
        index, name_zh="灰斗温度", name_en="ash-hopper temperature", bus="bus0", table="holding",
        unit=unit, kind="hopper_temperature", rule=rule,
    )  # fmt: skip


def frame(index: Sequence[int], ts: Sequence[float] | float, value: Sequence[float]) -> Frame:
    n = len(index)
    t = np.full(n, ts, dtype=np.float64) if isinstance(ts, float | int) else np.array(ts)
    v = np.array(value, dtype=np.float64)
    return Frame(
        index=np.array(index, dtype=np.intp),
        ts=t.astype(np.float64),
        value=v,
        quality=np.where(np.isnan(v), 1, 0).astype(np.uint8),
    )


def published(events: Sequence[AlarmEvent]) -> list[tuple[str, str, str | None, float, float]]:
    return [(e.alarm_id, e.transition, e.level, e.ts, e.threshold) for e in events]


def expected(changes: Sequence[Change]) -> list[tuple[str, str, str | None, float, float]]:
    return [(c.alarm_id, c.transition, c.level, c.ts, c.threshold) for c in changes]


def run(engine: RuleEngine, series: Sequence[tuple[float, float]], i: int = 0) -> list[AlarmEvent]:
    """Feed (ts, value) readings of one point; return all events."""
    out: list[AlarmEvent] = []
    for t, v in series:
        out += engine.step(frame([i], t, [v]))
    return out


# --- targeted cases -------------------------------------------------------------------------

HOT = ThresholdRule(high_warning=60, high_alarm=70, hysteresis_pct=2, on_delay=0, off_delay=0)


def test_raise_escalate_deescalate_clear_with_texts() -> None:
    eng = RuleEngine([spec(0, HOT)])
    ev = run(eng, [(0, 65.0), (1, 72.4), (2, 69.0), (3, 66.0), (4, 59.0), (5, 58.8)])
    assert [(e.transition, e.prev_level, e.level, e.threshold, e.ts) for e in ev] == [
        ("raise", None, "warning", 60.0, 0.0),
        ("escalate", "warning", "alarm", 70.0, 1.0),
        ("deescalate", "alarm", "warning", 60.0, 3.0),  # 69.0 is not yet back to 68.6
        ("clear", "warning", None, 60.0, 5.0),  # 59.0 is not yet back to 60 - 1.2 = 58.8
    ]
    esc = ev[1]
    assert esc.alarm_id == "P000:high"
    assert esc.text_zh == "DC-1 灰斗温度 报警：72.4 °C ≥ 70 °C"
    assert esc.text_en == "DC-1 ash-hopper temperature ALARM: 72.4 °C ≥ 70 °C (high)"
    assert ev[0].text_zh == "DC-1 灰斗温度 预警：65 °C ≥ 60 °C"
    assert ev[0].text_en == "DC-1 ash-hopper temperature warning: 65 °C ≥ 60 °C (high)"
    assert ev[3].text_zh == "DC-1 灰斗温度 预警消除：58.8 °C ≤ 60 °C"
    assert ev[3].text_en == "DC-1 ash-hopper temperature warning cleared: 58.8 °C ≤ 60 °C (high)"
    assert eng.active() == []


def test_jump_straight_to_alarm_and_clear_reports_alarm_threshold() -> None:
    eng = RuleEngine([spec(0, HOT)])
    ev = run(eng, [(0, 75.0), (1, 20.0)])
    assert [(e.transition, e.prev_level, e.level, e.threshold) for e in ev] == [
        ("raise", None, "alarm", 70.0),
        ("clear", "alarm", None, 70.0),
    ]
    assert ev[1].text_zh == "DC-1 灰斗温度 报警消除：20 °C ≤ 70 °C"
    assert ev[1].text_en == "DC-1 ash-hopper temperature ALARM cleared: 20 °C ≤ 70 °C (high)"


def test_noise_inside_the_band_does_not_chatter() -> None:
    rule = ThresholdRule(high_alarm=70, hysteresis_pct=2, on_delay=0, off_delay=0)
    eng = RuleEngine([spec(0, rule)])
    noisy = [70.5, 69.5, 70.2, 68.7, 70.0, 69.9, 68.61, 71.0]
    ev = run(eng, list(enumerate(noisy, start=0)))
    assert [e.transition for e in ev] == ["raise"]
    assert run(eng, [(100, 68.6)])[0].transition == "clear"  # band edge is inclusive


def test_on_delay_is_respected_and_restarts_on_a_dip() -> None:
    rule = ThresholdRule(high_alarm=70, on_delay=30, off_delay=60)
    eng = RuleEngine([spec(0, rule)])
    assert run(eng, [(0, 71), (10, 71), (20, 69.9), (25, 71), (50, 71)]) == []
    ev = run(eng, [(55, 72)])
    assert [(e.transition, e.ts) for e in ev] == [("raise", 55.0)]
    # off delay: 60 s continuously inside the band
    assert run(eng, [(60, 60), (100, 60), (110, 70), (120, 60), (179, 60)]) == []
    assert [e.transition for e in run(eng, [(180, 60)])] == ["clear"]


def test_nan_keeps_an_active_alarm_and_restarts_timers() -> None:
    rule = ThresholdRule(high_alarm=70, on_delay=0, off_delay=10)
    eng = RuleEngine([spec(0, rule)])
    assert [e.transition for e in run(eng, [(0, 80)])] == ["raise"]
    assert run(eng, [(t, NAN) for t in range(1, 1000, 7)]) == []
    (act,) = eng.active()
    assert (act.alarm_id, act.level, act.since, act.threshold) == ("P000:high", "alarm", 0, 70)
    assert act.value == 80  # what the rule measured at the raise
    assert math.isnan(act.reading)  # the latest reading was bad
    # a bad reading in the middle of the off-delay restarts it
    assert run(eng, [(1000, 50), (1009, NAN), (1015, 50), (1024, 50)]) == []
    assert [e.ts for e in run(eng, [(1025, 50)])] == [1025.0]
    # and a bad reading during the on-delay does too
    eng2 = RuleEngine([spec(0, ThresholdRule(high_alarm=70, on_delay=5))])
    assert run(eng2, [(0, 80), (3, NAN), (6, 80), (10, 80)]) == []
    assert len(run(eng2, [(11, 80)])) == 1


def test_low_direction_two_levels() -> None:
    rule = ThresholdRule(
        high_alarm=1800, high_warning=1500, low_warning=300, low_alarm=150, on_delay=0, off_delay=0
    )
    eng = RuleEngine([spec(0, rule, unit="Pa")])
    ev = run(eng, [(0, 250), (1, 100), (2, 152), (3, 154), (4, 305), (5, 306)])
    assert [(e.direction, e.transition, e.level, e.threshold) for e in ev] == [
        ("low", "raise", "warning", 300.0),
        ("low", "escalate", "alarm", 150.0),
        ("low", "deescalate", "warning", 300.0),  # 150 + 2 % = 153
        ("low", "clear", None, 300.0),  # 300 + 2 % = 306
    ]
    assert ev[1].text_zh == "DC-1 灰斗温度 报警：100 Pa ≤ 150 Pa"
    assert ev[1].text_en.endswith("ALARM: 100 Pa ≤ 150 Pa (low)")
    assert ev[1].alarm_id == "P000:low"


def test_high_and_low_are_independent_and_subsets_leave_other_points_alone() -> None:
    both = ThresholdRule(high_alarm=10, low_alarm=-10, hysteresis_pct=0, on_delay=0, off_delay=0)
    eng = RuleEngine([spec(0, both), spec(1, both), spec(2, None)])
    ev = eng.step(frame([2, 0], 0.0, [1e9, 20]))
    assert [e.alarm_id for e in ev] == ["P000:high"]
    ev = eng.step(frame([1], 1.0, [-20]))
    assert [e.alarm_id for e in ev] == ["P001:low"]
    assert [a.alarm_id for a in eng.active()] == ["P000:high", "P001:low"]
    ev = eng.step(frame([0, 1], 2.0, [-20, 20]))
    assert [(e.alarm_id, e.transition) for e in ev] == [
        ("P000:high", "clear"),
        ("P000:low", "raise"),
        ("P001:high", "raise"),
        ("P001:low", "clear"),
    ]
    assert eng.step(frame([], 3.0, [])) == []


def test_clock_step_back_restarts_a_pending_timer() -> None:
    eng = RuleEngine([spec(0, ThresholdRule(high_alarm=70, on_delay=10))])
    assert run(eng, [(1000, 80), (5, 80), (14, 80)]) == []
    assert len(run(eng, [(15, 80)])) == 1


# --- property: vectorized engine == the independent reference ------------------------------

VALUES = [-12, -10, -9.9, -5, -4.9, 0, 0.1, 4.9, 5, 5.1, 9.8, 10, 10.2, 30]
VALUES += [58, 58.8, 59.9, 60, 61, 64, 65, 68.6, 69.9, 70, 71, 75, 80, NAN, NAN]

rules = st.none() | st.builds(
    ThresholdRule,
    high_alarm=st.sampled_from([None, 70.0, 60.0, 75.0]),
    high_warning=st.sampled_from([None, 60.0, 65.0, 70.0]),
    low_warning=st.sampled_from([None, 10.0, 0.0, -5.0]),
    low_alarm=st.sampled_from([None, 5.0, 0.0, -10.0]),
    hysteresis_pct=st.sampled_from([0.0, 2.0, 5.0, 10.0]),
    on_delay=st.sampled_from([0.0, 1.0, 2.5, 5.0, 30.0]),
    off_delay=st.sampled_from([0.0, 1.0, 2.5, 5.0, 60.0]),
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_engine_matches_scalar_reference(data: st.DataObject) -> None:
    n = data.draw(st.integers(1, 5), label="points")
    points = [spec(i, data.draw(rules, label=f"rule{i}")) for i in range(n)]
    eng, ref = RuleEngine(points), RulesReference(points)
    last = [VALUES[0]] * n
    base = 0.0
    for _ in range(data.draw(st.integers(1, 60), label="frames")):
        subset = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n, unique=True))
        base += data.draw(st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 5.0, 30.0, -3.0]))
        ts = [base + data.draw(st.sampled_from([0.0, 0.0, 0.1, 0.7])) for _ in subset]
        for i in subset:
            if data.draw(st.booleans()):  # hold the value: debounce needs runs of readings
                last[i] = data.draw(st.sampled_from(VALUES) | st.floats(-30, 130))
        f = frame(subset, ts, [last[i] for i in subset])
        assert published(eng.step(f)) == expected(ref.step(f))
    active = {(a.point, a.direction, a.level) for a in eng.active()}
    levels = {None: None, 1: "warning", 2: "alarm"}
    assert active == {
        (r.spec.code, slot, levels[lvl])
        for r in ref.points.values()
        for slot, lvl in r.published.items()
        if lvl
    }


def test_engine_matches_scalar_reference_at_scale() -> None:
    rng = np.random.default_rng(7)
    n = 300
    points = [
        spec(
            i,
            ThresholdRule(
                high_alarm=70.0 + rng.integers(0, 3),
                high_warning=None if i % 7 == 0 else 60.0,
                low_warning=None if i % 5 == 0 else 10.0,
                low_alarm=0.0,
                hysteresis_pct=float(rng.choice([0, 2, 5])),
                on_delay=float(rng.choice([0, 2, 10])),
                off_delay=float(rng.choice([0, 3, 20])),
            ),
        )
        for i in range(n)
    ]
    eng, ref = RuleEngine(points), RulesReference(points)
    level = rng.uniform(-10, 80, n)
    count = 0
    for k in range(600):
        subset = rng.permutation(n)[: rng.integers(1, n)]
        level += rng.normal(0, 3, n)
        value = level[subset] + rng.normal(0, 1, subset.size)
        value[rng.random(subset.size) < 0.03] = NAN
        ts = k * 1.0 + rng.uniform(0, 0.5, subset.size)
        f = frame(subset.tolist(), ts.tolist(), value.tolist())
        got = eng.step(f)
        assert published(got) == expected(ref.step(f))
        count += len(got)
    assert count > 1000  # the comparison exercised plenty of transitions
