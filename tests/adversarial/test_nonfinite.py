"""±Inf readings (BAD_VALUE) never reach the value rules: only sensor-quality alarms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from agent.config import load_config
from agent.core.model import AgentConfig, Frame, Quality
from agent.rules.engine import RuleEngine
from tests.conftest import REPO
from tests.oracles.rules_reference import RulesReference

VALUE_KINDS = {"threshold", "rate", "deviation", "drop", "difference"}

# One point per value rule kind, all on one device; `t` has a transmitter span too.
CONFIG = f"""
profiles_dir = "{REPO / "config" / "profiles"}"
[site]
enterprise_code = "E1"
gateway_id = "G1"
[[buses]]
name = "b"
host = "127.0.0.1"
port = 5020
[[devices]]
name = "D"
bus = "b"
unit = 1
[[devices.points]]
key = "t"
table = "input"
address = 0
type = "float32"
unit = "°C"
[devices.points.rule]
high_alarm = 70.0
low_alarm = -20.0
on_delay = 0.0
off_delay = 0.0
rate_alarm = 5.0
rate_window = 10.0
deviation_alarm = 50.0
drop_alarm = 30.0
drop_window = 10.0
range_min = -40.0
range_max = 200.0
stale_polls = 3
[[devices.points]]
key = "pct"
table = "input"
address = 2
type = "float32"
[devices.points.rule]
reference = 100.0
high_alarm_pct = 50.0
on_delay = 0.0
diff_alarm = 10.0
minus = "t"
stale_polls = 3
[storage]
dir = "var"
"""


@pytest.fixture
def cfg(tmp_path: Path) -> AgentConfig:
    f = tmp_path / "agent.toml"
    f.write_text(CONFIG)
    return load_config(f)


def _frames(values: list[tuple[float, float]]) -> list[Frame]:
    frames = []
    for i, (a, b) in enumerate(values):
        v = np.array([a, b])
        q = np.where(np.isfinite(v), 0, Quality.BAD_VALUE).astype(np.uint8)
        frames.append(Frame(np.array([0, 1], dtype=np.intp), np.full(2, 1000.0 + i), v, q, bus="b"))
    return frames


@pytest.mark.parametrize("bad", [math.inf, -math.inf], ids=["+inf", "-inf"])
def test_infinite_readings_raise_no_value_alarm(cfg: AgentConfig, bad: float) -> None:
    engine = RuleEngine(cfg.points)
    good = [(20.0, 20.0)] * 5
    events = []
    for frame in _frames(good + [(bad, bad)] * 10):
        events += engine.step(frame)
    kinds = {e.kind for e in events}
    assert not kinds & VALUE_KINDS, [(e.kind, e.text_en) for e in events]
    assert not any("inf" in e.text_en and e.kind in VALUE_KINDS for e in events)
    # the sensor-quality alarms say the readings are bad instead
    assert {"range", "stale"} <= kinds, kinds


def test_infinite_reading_keeps_an_active_value_alarm_as_it_is(cfg: AgentConfig) -> None:
    """A raised 80 °C alarm is neither cleared nor escalated by -Inf / +Inf readings."""
    engine = RuleEngine(cfg.points)
    events = []
    for frame in _frames([(80.0, 20.0)] * 3 + [(-math.inf, 20.0), (math.inf, 20.0)] * 3):
        events += engine.step(frame)
    threshold = [e for e in events if e.kind == "threshold" and e.key == "t"]
    assert [e.transition for e in threshold] == ["raise"]


def test_scalar_reference_agrees_on_infinite_readings(cfg: AgentConfig) -> None:
    engine, ref = RuleEngine(cfg.points), RulesReference(cfg.points)
    seq = [(20.0, 20.0), (math.inf, 90.0), (25.0, -math.inf), (math.inf, math.inf)] * 4
    for frame in _frames(seq):
        got = sorted((e.alarm_id, e.transition, e.level) for e in engine.step(frame))
        want = sorted((c.alarm_id, c.transition, c.level) for c in ref.step(frame))
        assert got == want
