"""Resolved settings of the rule kinds beyond thresholds (trend, window, state, quality, lifecycle).

Built by the config loader (agent.config.rules.point_rules_from), read by the rule engine
(agent.rules). Every field is optional: None / () / False disables that rule. Units are the
point's engineering unit, times are seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

# The levels a state rule can raise, lowest first; a slot's level is the highest active row.
STATE_LEVELS: tuple[str, str, str] = ("warning", "alarm", "critical")
MAX_STATE = 62  # state values are small integers (bits of an int64 mask)


@dataclass(frozen=True, slots=True)
class PointRules:
    """Everything but the thresholds (ThresholdRule) for one point."""

    # Gate: the point (global index) whose reading must be "on" (>= 0.5) for the process rules
    # (thresholds, rate, deviation, drop, idle) to count. `when_ref` is its config name.
    when: int | None = None
    when_ref: str | None = None
    # The lowest level the gate applies to: 1 every level, 2 alarms only (a wet tank's level
    # near its setpoint warns always; at the setpoint it alarms only while producers run).
    when_min_level: int = 1
    # Rate of rise: least-squares slope, exponentially weighted over `rate_window` s, in units
    # per `rate_per` s (percent of the smoothed level per `rate_per` s if `rate_relative`),
    # held `rate_hold` s. A negative threshold alarms on a fall.
    rate_warning: float | None = None
    rate_alarm: float | None = None
    rate_window: float = 60.0
    rate_per: float = 60.0
    rate_relative: bool = False
    rate_hold: float = 180.0
    # Deviation from a slow EWMA baseline (time constant `baseline_tau`), in percent of the
    # baseline; negative = below the baseline (e.g. -10: 10 % under it).
    deviation_warning: float | None = None
    deviation_alarm: float | None = None
    baseline_tau: float = 3600.0
    # ... in the point's unit instead of percent (CO: background + 10 ppm).
    deviation_absolute: bool = False
    # ... the warning's on-delay (None: the point's on_delay; the alarm always uses on_delay).
    deviation_hold: float | None = None
    # Difference from another point: this reading minus the latest reading of point `minus`
    # (global index; `minus_ref` is its config name), e.g. outlet - inlet temperature > 15 K.
    # A negative threshold alarms when the difference falls below it.
    diff_warning: float | None = None
    diff_alarm: float | None = None
    minus: int | None = None
    minus_ref: str | None = None
    # Step drop: percent fallen from the highest reading within the last `drop_window` s.
    drop_warning: float | None = None
    drop_alarm: float | None = None
    drop_window: float = 300.0
    # Event counter (cumulative register, wraps at 2**count_bits): events within `count_window`.
    count_warning: float | None = None
    count_alarm: float | None = None
    count_window: float = 60.0
    count_bits: int = 32
    # Discrete states (integer readings 0..31): any of these values held `state_delay` s.
    state_warning: tuple[int, ...] = ()
    state_alarm: tuple[int, ...] = ()
    state_critical: tuple[int, ...] = ()
    state_delay: float = 0.0
    # Idle: any of these values held `idle_delay` s while the gate is on (needs `when`).
    idle_states: tuple[int, ...] = ()
    idle_delay: float = 60.0
    # Sensor quality (warning, except loop fault: alarm).
    stale_after: float | None = None  # seconds without a good reading
    stale_polls: float | None = None  # as configured: stale_after = stale_polls x poll interval
    frozen_polls: int | None = None  # this many readings in a row identical
    range_min: float | None = None  # the transmitter's span; outside it = out of range
    range_max: float | None = None
    loop_ma: bool = False  # span maps 4..20 mA: below 3.6 or above 21 mA = loop fault
    # Lifecycle.
    latch: bool = False  # a raised alarm stays until acknowledged, even after the condition
    chatter_count: int = 0  # transitions within 60 s that flag an alarm as chattering (0 = off)
    # Kinds registered with a spec builder (agent.rules.registry): (kind name, its spec).
    custom: tuple[tuple[str, object], ...] = ()

    def custom_spec(self, kind: str) -> object | None:
        """The spec a registered kind built for this point (None: the point does not use it)."""
        for name, spec in self.custom:
            if name == kind:
                return spec
        return None

    @property
    def enabled(self) -> bool:
        return any(
            v is not None
            for v in (
                self.rate_warning,
                self.rate_alarm,
                self.deviation_warning,
                self.deviation_alarm,
                self.diff_warning if self.minus is not None else None,
                self.diff_alarm if self.minus is not None else None,
                self.drop_warning,
                self.drop_alarm,
                self.count_warning,
                self.count_alarm,
                self.stale_after,
                self.frozen_polls,
                self.range_min,
                self.range_max,
            )
        ) or bool(
            self.custom
            or self.state_warning
            or self.state_alarm
            or self.state_critical
            or (self.idle_states and self.when is not None)
        )


NO_RULES = PointRules()
