"""Every rule kind of the vectorized engine against the independent reference (hypothesis;
tests/oracles/rules_reference.py, written from the documents, sharing no code with the engine),
plus targeted lifecycle cases: gates, counter wrap, latch and ack, shelving, chattering,
restart snapshot, and noise around a threshold."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.model import AlarmEvent, Frame, PointSpec, ThresholdRule
from agent.core.rulespec import PointRules
from agent.rules import RuleEngine
from tests.factories import point
from tests.oracles.rules_reference import Change, RulesReference

NAN = math.nan


def spec(i: int, rule: ThresholdRule | None = None, **rules: object) -> PointSpec:
    return point(
        i,
        name_zh="点",
        name_en="point",
        unit="u",
        rule=rule,
        rules=PointRules(**rules),  # type: ignore[arg-type]
    )


def frame(idx: Sequence[int], ts: Sequence[float], xs: Sequence[float]) -> Frame:
    v = np.array(xs, dtype=np.float64)
    return Frame(
        np.array(idx, dtype=np.intp),
        np.array(ts, dtype=np.float64),
        v,
        np.where(np.isnan(v), 1, 0).astype(np.uint8),
    )


def compact(events: Sequence[AlarmEvent]) -> list[tuple[str, str, str | None]]:
    return sorted((e.alarm_id, e.transition, e.level) for e in events)


def timed(events: Sequence[AlarmEvent]) -> list[tuple[str, str, str | None, float]]:
    return sorted((e.alarm_id, e.transition, e.level, e.ts) for e in events)


def oracle(changes: Sequence[Change]) -> list[tuple[str, str, str | None, float]]:
    return sorted((c.alarm_id, c.transition, c.level, c.ts) for c in changes)


FAST = ThresholdRule(on_delay=0.0, off_delay=0.0)
KIND_RULES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "rate": st.fixed_dictionaries(
        {
            "rate_warning": st.sampled_from([2.0, -2.0, 5.0]),
            "rate_alarm": st.sampled_from([None, 6.0, -6.0, 10.0]),
            "rate_window": st.sampled_from([4.0, 10.0, 30.0]),
            "rate_hold": st.sampled_from([0.0, 1.0, 3.0]),
            "rate_relative": st.booleans(),
        }
    ),
    "deviation": st.fixed_dictionaries(
        {
            "deviation_warning": st.sampled_from([-10.0, 10.0, 25.0]),
            "deviation_alarm": st.sampled_from([None, -30.0, 40.0]),
            "baseline_tau": st.sampled_from([5.0, 60.0]),
        }
    ),
    "drop": st.fixed_dictionaries(
        {
            "drop_warning": st.sampled_from([None, 20.0]),
            "drop_alarm": st.sampled_from([40.0, 60.0]),
            "drop_window": st.sampled_from([5.0, 20.0]),
        }
    ),
    "count": st.fixed_dictionaries(
        {
            "count_warning": st.sampled_from([1.0, 2.0]),
            "count_alarm": st.sampled_from([None, 3.0, 5.0]),
            "count_window": st.sampled_from([5.0, 20.0]),
            "count_bits": st.sampled_from([4, 16, 32]),
        }
    ),
    "state": st.fixed_dictionaries(
        {
            "state_warning": st.sampled_from([(), (3,)]),
            "state_alarm": st.sampled_from([(2,), (2, 4)]),
            "state_critical": st.sampled_from([(), (1,)]),
            "state_delay": st.sampled_from([0.0, 2.0]),
            "idle_states": st.sampled_from([(), (0,)]),
            "idle_delay": st.sampled_from([0.0, 3.0]),
        }
    ),
    "quality": st.fixed_dictionaries(
        {
            "stale_after": st.sampled_from([None, 2.0]),
            "frozen_polls": st.sampled_from([None, 3, 5]),
            "range_min": st.sampled_from([None, 0.0]),
            "range_max": st.sampled_from([None, 100.0]),
            "loop_ma": st.booleans(),
        }
    ),
}
VALUES = {
    "rate": st.floats(0, 100).map(lambda v: round(v, 1)) | st.just(NAN),
    "deviation": st.sampled_from([0.0, 50.0, 100.0, 95.0, 80.0, 60.0, 120.0, 150.0, NAN]),
    "drop": st.sampled_from([100.0, 90.0, 70.0, 50.0, 30.0, 10.0, 0.0, NAN]),
    "count": st.integers(0, 20).map(float) | st.just(NAN),
    "state": st.sampled_from([0.0, 1.0, 2.0, 3.0, 4.0, 1.5, -1.0, NAN]),
    "quality": st.sampled_from([50.0, 50.0, 0.0, -0.5, -3.0, 100.0, 101.0, 106.0, NAN]),
}


@settings(max_examples=120, deadline=None)
@given(st.data(), st.sampled_from(sorted(KIND_RULES)))
def test_each_kind_matches_the_scalar_reference(data: st.DataObject, kind: str) -> None:
    n = data.draw(st.integers(1, 4), label="points")
    gated = data.draw(st.booleans(), label="gated")
    points = []
    for i in range(n):
        drawn: dict[str, Any] = data.draw(KIND_RULES[kind], label=f"rules{i}")
        kw = dict(drawn)
        if kw.get("loop_ma") and (kw.get("range_min") is None or kw.get("range_max") is None):
            kw["loop_ma"] = False
        if gated or kw.get("idle_states"):
            kw["when"] = n  # the gate point, index n
        points.append(spec(i, FAST, **kw))
    points.append(spec(n))  # the gate: 0/1 readings, no rules
    eng, ref = RuleEngine(points), RulesReference(points)
    last = [50.0] * n
    hist: list[object] = []
    gate = 1.0
    t = 1000.0
    for _ in range(data.draw(st.integers(1, 60), label="frames")):
        t += data.draw(st.sampled_from([0.25, 0.5, 1.0, 1.0, 2.0, 7.0, -3.0]))
        if data.draw(st.integers(0, 9)) == 0:
            gate = data.draw(st.sampled_from([0.0, 1.0, NAN]))
        subset = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
        for i in subset:
            if data.draw(st.booleans()):
                last[i] = data.draw(VALUES[kind])
        f = frame([*subset, n], [t] * (len(subset) + 1), [*(last[i] for i in subset), gate])
        hist.append((f.index.tolist(), t, f.value.tolist()))
        assert timed(eng.step(f)) == oracle(ref.step(f)), hist


def test_every_kind_at_scale_matches_the_reference() -> None:
    rng = np.random.default_rng(3)
    kinds: list[dict[str, Any]] = [
        {"rate_warning": 3.0, "rate_alarm": 8.0, "rate_window": 10.0, "rate_hold": 2.0},
        {"deviation_warning": -10.0, "baseline_tau": 30.0},
        {"drop_alarm": 40.0, "drop_window": 20.0, "when": 0},
        {"count_warning": 1.0, "count_alarm": 3.0, "count_window": 10.0, "count_bits": 8},
        {"stale_after": 2.0, "frozen_polls": 4, "range_min": 0.0, "range_max": 100.0},
    ]
    points = [spec(0)] + [
        spec(
            i,
            ThresholdRule(high_warning=60.0, high_alarm=70.0, on_delay=1.0, off_delay=2.0),
            **kinds[i % len(kinds)],
        )
        for i in range(1, 301)
    ]
    eng, ref = RuleEngine(points), RulesReference(points)
    level = rng.uniform(20, 80, 301)
    total = 0
    for k in range(400):
        level += rng.normal(0, 4, 301)
        xs = np.round(level + rng.normal(0, 1, 301), 1)
        xs[0] = float(k % 50 < 40)  # the gate
        xs[rng.random(301) < 0.03] = NAN
        subset = np.sort(rng.permutation(301)[: rng.integers(1, 301)])
        f = frame(subset.tolist(), [k * 0.5] * subset.size, xs[subset].tolist())
        got = timed(eng.step(f))
        assert got == oracle(ref.step(f))
        total += len(got)
    assert total > 300


# --- targeted cases --------------------------------------------------------------------------


def run(
    eng: RuleEngine, rows: Sequence[tuple[float, Sequence[float]]]
) -> list[tuple[str, str, str | None]]:
    out = []
    for t, xs in rows:
        out += compact(eng.step(frame(range(len(xs)), [t] * len(xs), xs)))
    return out


def test_low_dp_counts_only_while_the_fan_runs() -> None:
    dp = spec(0, ThresholdRule(low_warning=300.0, low_alarm=150.0, on_delay=2, off_delay=2), when=1)
    eng = RuleEngine([dp, spec(1)])
    # fan off: ΔP at 20 Pa for a minute, nothing
    assert run(eng, [(t, [20.0, 0.0]) for t in range(60)]) == []
    # fan on with ΔP still low: raises after the on-delay
    ev = run(eng, [(60 + t, [20.0, 1.0]) for t in range(4)])
    assert ("P000:low", "raise", "alarm") in ev
    # fan off again: the condition no longer counts, the alarm clears after the off-delay
    assert run(eng, [(70 + t, [20.0, 0.0]) for t in range(4)]) == [("P000:low", "clear", None)]


def test_counter_wrap_counts_the_events_across_it_and_a_reset_counts_none() -> None:
    sparks = spec(0, None, count_warning=1.0, count_alarm=3.0, count_window=60.0, count_bits=32)
    eng = RuleEngine([sparks])
    top = 2.0**32
    ev = run(eng, [(0, [top - 2]), (1, [top - 1]), (2, [0.0]), (3, [1.0])])
    assert ev == [("P000:count", "raise", "warning"), ("P000:count", "escalate", "alarm")]
    eng2 = RuleEngine([sparks])
    assert run(eng2, [(0, [1000.0]), (1, [3.0]), (2, [3.0])]) == []  # device restart


def test_noise_around_a_threshold_does_not_chatter() -> None:
    rule = ThresholdRule(high_warning=60.0, hysteresis_pct=2.0, on_delay=30.0, off_delay=60.0)
    eng = RuleEngine([spec(0, rule, chatter_count=6)])
    rng = np.random.default_rng(1)
    xs = 60.0 + rng.normal(0, 0.6, 3600)  # ±1 % noise straddling the threshold, 1 h at 1 Hz
    events = []
    for t, x in enumerate(xs):
        events += eng.step(frame([0], [float(t)], [float(x)]))
    assert len(events) <= 2, [(e.transition, e.ts) for e in events]
    assert not any(e.extra.get("chattering") for e in events)


def test_chattering_is_flagged() -> None:
    eng = RuleEngine(
        [
            spec(
                0,
                ThresholdRule(high_alarm=10.0, on_delay=0, off_delay=0, hysteresis_pct=0),
                chatter_count=4,
            )
        ]
    )
    events = []
    for t in range(10):
        events += eng.step(frame([0], [float(t)], [20.0 if t % 2 else 0.0]))
    assert [bool(e.extra.get("chattering")) for e in events][:5] == [
        False,
        False,
        False,
        True,
        True,
    ]


def test_latch_holds_until_acknowledged_then_clears() -> None:
    rule = ThresholdRule(high_alarm=10.0, on_delay=0, off_delay=0)
    eng = RuleEngine([spec(0, rule, latch=True)])
    assert compact(eng.step(frame([0], [0.0], [20.0]))) == [("P000:high", "raise", "alarm")]
    assert eng.step(frame([0], [1.0], [0.0])) == []  # back to normal, but latched
    assert [a.level for a in eng.active()] == ["alarm"]
    ack = eng.ack("P000:high", "张三", 2.0, note="checked")
    assert [(e.transition, e.level) for e in ack] == [("ack", "alarm"), ("clear", None)]
    assert ack[0].extra == {"by": "张三", "note": "checked"} and "张三" in ack[0].text_zh
    assert eng.active() == []


def test_shelved_alarm_is_silent_until_the_shelf_expires() -> None:
    eng = RuleEngine([spec(0, ThresholdRule(high_alarm=10.0, on_delay=0, off_delay=0))])
    shelf = eng.shelve("P000:high", until=100.0, by="li", ts=0.0)
    assert shelf[0].transition == "shelve" and shelf[0].extra["until"] == 100000
    assert eng.step(frame([0], [1.0], [20.0])) == []
    assert eng.step(frame([0], [50.0], [20.0])) == []
    expired = eng.step(frame([0], [101.0], [20.0]))
    assert [(e.transition, e.level) for e in expired] == [("unshelve", None), ("raise", "alarm")]


def test_snapshot_restore_neither_re_raises_nor_forgets() -> None:
    rule = ThresholdRule(high_warning=60.0, high_alarm=70.0, on_delay=0, off_delay=5)
    points = [spec(0, rule), spec(1, rule)]
    eng = RuleEngine(points)
    eng.step(frame([0, 1], [0.0, 0.0], [75.0, 75.0]))
    saved = eng.snapshot()
    after = RuleEngine(points)
    assert after.restore(saved) == []
    # point 0 still hot: nothing new; point 1 cooled while down: cleared after the off-delay
    ev = []
    for t in range(1, 10):
        ev += compact(after.step(frame([0, 1], [float(t)] * 2, [75.0, 20.0])))
    assert ev == [("P001:high", "clear", None)]
    assert [a.alarm_id for a in after.active()] == ["P000:high"]


def test_unknown_alarm_ids_are_named() -> None:
    eng = RuleEngine([spec(0, ThresholdRule(high_alarm=10.0))])
    calls: list[Callable[[], object]] = [
        lambda: eng.ack("NOPE:high", "x", 0.0),
        lambda: eng.ack("P000:high", "x", 0.0),
    ]
    for call in calls:
        try:
            call()
        except LookupError as exc:
            assert "NOPE:high" in str(exc) or "not active" in str(exc)
        else:
            raise AssertionError("expected LookupError")


def test_restore_drops_ids_the_config_no_longer_has() -> None:
    eng = RuleEngine([spec(0, FAST)])
    assert eng.restore({"GONE:high": {"published": 2, "computed": 2}}) == ["GONE:high"]
    assert dataclasses.asdict(PointRules())["latch"] is False


def test_loop_fault_clears_inside_the_ne43_measurement_range() -> None:
    pts = [spec(0, FAST, range_min=0.0, range_max=100.0, loop_ma=True)]
    eng, ref = RuleEngine(pts), RulesReference(pts)
    # -3 % of the span: 3.52 mA (fault); -1.5625 %: 3.75 mA (not yet healthy by NE43); 0 %: 4 mA
    # (healthy); 103.5 %: 21.56 mA (fault); 97.5 %: 20.6 mA (not yet); 96.875 %: 20.5 mA (healthy)
    series = [50.0, -3.0, -1.5625, -1.5625, 0.0, 0.0, 103.5, 97.5, 97.5, 96.875, 96.875]
    for t, x in enumerate(series):
        f = frame([0], [float(t)], [x])
        assert timed(eng.step(f)) == oracle(ref.step(f))
