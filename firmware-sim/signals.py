"""Normal operation of any point, from its sensor kind and its own rules: the steady state.

`normal_signal(point, ...)` picks a plausible value per sensor kind (DOMAIN.md's normal ranges:
hopper ~37 °C with noise, ΔP a 950-1250 Pa sawtooth knocked down by cleaning pulses, pulse air
~0.62 MPa dipping at each pulse, the fan and the air-lock running, producers running, fault and
activation states off, counters counting) and then fits it to the point's own rules as the
agent loaded them, so that a served site raises no alarm in steady state:

- the value and all its variation stay inside the threshold band (low/high warning and alarm,
  range_min/range_max), with a margin beyond the hysteresis;
- slow wander and noise stay well under the rate, deviation and drop thresholds;
- a state point takes a value none of its state or idle lists holds;
- an event counter counts only as fast as its count rules allow (a spark counter stays still);
- a difference point (outlet - inlet) stays far under its difference threshold.

Everything is a pure function of (seed, point, t): no clocks, no state.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, replace

from agent.core.model import PointSpec
from firmware_sim.codec import resolution
from firmware_sim.plant import _uniform, value_noise

# kind -> (centre, slow wander amplitude, fast noise amplitude); see DOMAIN.md
ANALOG: dict[str, tuple[float, float, float]] = {
    "hopper_temperature": (37.5, 0.8, 0.1),
    "inlet_temperature": (25.0, 0.4, 0.1),
    "outlet_temperature": (27.0, 0.4, 0.1),
    "material_temperature": (30.0, 0.5, 0.1),
    "duct_velocity": (21.5, 0.2, 0.05),
    "wet_tank_level": (1.2, 0.01, 0.003),
    "wet_flow": (10.0, 0.1, 0.03),
    "wet_pressure": (0.25, 0.003, 0.001),
    "hydrogen": (2.0, 0.3, 0.05),
    "dust_concentration": (1.0, 0.05, 0.01),
    "co": (5.0, 0.5, 0.1),
}
# kind -> the normal state
STATES: dict[str, int] = {
    "fan_running": 1,
    "airlock_valve": 1,
    "producer_running": 1,
    "extinguisher_fault": 0,
    "explosion_protection": 0,
}
WANDER_PERIOD = 300.0  # seconds of one slow wander cycle (a sine: its steepest slope is known)


def device_seed(seed: int, device: str) -> int:
    """A stable per-device number (not Python's salted hash)."""
    return seed * 1_000_003 + zlib.crc32(device.encode())


@dataclass(frozen=True, slots=True)
class Signal:
    """A point's normal value over time. shape: analog, sawtooth (ΔP), pulse_air, state,
    counter."""

    shape: str
    centre: float = 0.0
    wander: float = 0.0
    noise: float = 0.0
    span: float = 0.0  # sawtooth: low .. low + span; pulse_air: the dip at a pulse
    rate: float = 0.0  # counter: counts per second
    period: float = 25.0  # cleaning-pulse period (s)
    phase: float = 5.0  # first pulse (s)
    key: int = 0  # noise channel

    def value(self, t: float) -> float:
        k = self.key
        if self.shape == "state":
            return self.centre
        if self.shape == "counter":
            return float(math.floor(self.centre + self.rate * max(t, 0.0)))
        fast = self.noise * value_noise(0, k, 1, t, 1.0)
        if self.shape == "sawtooth":
            since = (t - self.phase) % self.period
            return self.centre + self.span * since / self.period + fast
        if self.shape == "pulse_air":
            since = (t - self.phase) % self.period
            return self.centre - self.span * math.exp(-since / 1.5) + fast
        slow = self.wander * math.sin(2 * math.pi * t / WANDER_PERIOD + (k % 628) / 100)
        return self.centre + slow + fast

    @property
    def low(self) -> float:
        """The lowest value the signal takes."""
        if self.shape == "pulse_air":
            return self.centre - self.span - self.noise
        return self.centre - self.wander - self.noise

    @property
    def high(self) -> float:
        if self.shape == "sawtooth":
            return self.centre + self.span + self.noise
        return self.centre + self.wander + self.noise


def _base(p: PointSpec, dseed: int, channel: int) -> Signal:
    period = 20.0 + 10.0 * (_uniform(dseed, 1000) + 1.0) / 2.0
    phase = 5.0 + (period - 5.0) * (_uniform(dseed, 1001) + 1.0) / 2.0
    if p.kind == "differential_pressure":
        low = 950.0 + 30.0 * _uniform(dseed, 1002)
        return Signal("sawtooth", low, 0.0, 6.0, 300.0, 0.0, period, phase, channel)
    if p.kind == "pulse_air_pressure":
        return Signal("pulse_air", 0.62, 0.0, 0.003, 0.10, 0.0, period, phase, channel)
    if p.kind in STATES or p.bit is not None or p.table in ("coil", "discrete"):
        return Signal("state", float(STATES.get(p.kind, 1 if "run" in p.key else 0)))
    if p.kind == "spark_count" or p.rules.count_warning is not None:
        return Signal("counter", float(abs(dseed + channel) % 1000), rate=0.0, key=channel)
    if p.kind in ANALOG:
        centre, wander, noise = ANALOG[p.kind]
        return Signal("analog", centre, wander, noise, key=channel)
    if p.kind == "generic" and "run" in p.key:
        return Signal("state", 1.0)
    if p.type in ("uint32", "int32", "uint64", "int64") and p.scale == 1 and p.offset == 0:
        return Signal("counter", float(abs(dseed + channel) % 100000), rate=1.0, key=channel)
    return Signal("analog", 50.0, 0.5, 0.1, key=channel)


def _rate_limit(p: PointSpec, centre: float) -> float | None:
    """The smallest rate threshold of the point, in units per second (None: no rate rule)."""
    r = p.rules
    found = [abs(v) for v in (r.rate_warning, r.rate_alarm) if v is not None]
    if not found:
        return None
    per_s = min(found) / r.rate_per
    return per_s * abs(centre) / 100.0 if r.rate_relative else per_s


def _fit_trends(p: PointSpec, s: Signal) -> Signal:
    """Slow wander and noise well under the rate, deviation and drop thresholds."""
    r = p.rules
    wander, noise, span = s.wander, s.noise, s.span
    limit = _rate_limit(p, s.centre)
    if limit is not None and s.shape == "analog":
        # steepest slopes: the wander's 2 pi A / period, the noise's 3 A per second (knots
        # 1 s apart); together well under the threshold even over a short fit
        wander = min(wander, limit * WANDER_PERIOD / (10 * math.pi))
        noise = min(noise, limit / 12)
    devs = [abs(v) for v in (r.deviation_warning, r.deviation_alarm) if v is not None]
    if devs:
        allowed = min(devs) / 4 if r.deviation_absolute else abs(s.centre) * min(devs) / 400
        wander, noise = min(wander, allowed / 2), min(noise, allowed / 2)
    drops = [v for v in (r.drop_warning, r.drop_alarm) if v is not None]
    if drops and s.shape == "sawtooth":
        span = min(span, s.centre * min(drops) / 100 / 2)
    if drops and s.shape == "analog":
        allowed = abs(s.centre) * min(drops) / 100 / 3
        wander, noise = min(wander, allowed / 2), min(noise, allowed / 2)
    return replace(s, wander=wander, noise=noise, span=span)


def _fit_band(p: PointSpec, s: Signal) -> Signal:
    """Move the signal inside the point's threshold band (with a margin past hysteresis)."""
    rule, r = p.rule, p.rules
    lows = [v for v in (r.range_min,) if v is not None]
    highs = [v for v in (r.range_max,) if v is not None]
    hyst = 0.02
    if rule is not None:
        lows += [v for v in (rule.low_warning, rule.low_alarm) if v is not None]
        highs += [v for v in (rule.high_warning, rule.high_alarm) if v is not None]
        hyst = rule.hysteresis_pct / 100
    lower = max(lows) if lows else None
    upper = min(highs) if highs else None
    if s.shape in ("state", "counter") or (lower is None and upper is None):
        return s
    lo_ok = None if lower is None else lower + abs(lower) * (hyst + 0.05) + 1e-9
    hi_ok = None if upper is None else upper - abs(upper) * (hyst + 0.05) - 1e-9
    if lo_ok is not None and hi_ok is not None and hi_ok - lo_ok < s.high - s.low:
        width = max(hi_ok - lo_ok, 0.0)
        k = width / max(s.high - s.low, 1e-12) / 2
        s = replace(s, wander=s.wander * k, noise=s.noise * k, span=s.span * k)
        return replace(s, centre=s.centre + (lo_ok + hi_ok) / 2 - (s.low + s.high) / 2)
    if lo_ok is not None and s.low < lo_ok:
        s = replace(s, centre=s.centre + lo_ok - s.low)
    if hi_ok is not None and s.high > hi_ok:
        s = replace(s, centre=s.centre - (s.high - hi_ok))
    return s


def _fit_state(p: PointSpec, s: Signal) -> Signal:
    r = p.rules
    banned = set(r.state_warning) | set(r.state_alarm) | set(r.state_critical) | set(r.idle_states)
    if s.shape != "state" or int(s.centre) not in banned:
        return s
    free = next(v for v in range(63) if v not in banned)
    return replace(s, centre=float(free))


def _fit_counter(p: PointSpec, s: Signal) -> Signal:
    r = p.rules
    if s.shape != "counter":
        return s
    counts = [v for v in (r.count_warning, r.count_alarm) if v is not None]
    if not counts:
        return s
    allowed = math.ceil(min(counts)) - 1  # events per window that stay under every level
    return replace(s, rate=max(allowed, 0) / r.count_window / 2)


def _fit_resolution(p: PointSpec, s: Signal) -> Signal:
    """An integer register must still change now and then (frozen-value rules)."""
    step = resolution(p.type, p.scale)
    if s.shape != "analog" or step == 0 or p.rules.frozen_polls is None:
        return s
    return replace(s, wander=max(s.wander, 1.5 * step)) if _rate_limit(p, s.centre) is None else s


def normal_signal(p: PointSpec, seed: int = 0) -> Signal:
    """The point's steady-state signal, fitted to its rules."""
    dseed = device_seed(seed, p.device)
    s = _base(p, dseed, 7 + p.index)
    s = _fit_resolution(p, s)
    s = _fit_trends(p, s)
    s = _fit_band(p, s)
    s = _fit_state(p, s)
    return _fit_counter(p, s)


def fit_differences(points: tuple[PointSpec, ...], signals: list[Signal]) -> list[Signal]:
    """A difference point (outlet - inlet) stays well under its difference thresholds."""
    out = list(signals)
    for p in points:
        r, s = p.rules, out[p.index]
        if r.minus is None or s.shape != "analog":
            continue
        other = out[r.minus]
        diffs = [v for v in (r.diff_warning, r.diff_alarm) if v is not None]
        if not diffs:
            continue
        limit = min(diffs, key=abs)
        gap = s.centre - other.centre
        if abs(gap) + s.wander + s.noise + other.wander + other.noise > abs(limit) / 3:
            out[p.index] = replace(s, centre=other.centre + limit / 6)
    return out
