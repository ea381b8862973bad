"""The effective rules of a point as one line of text (`dust-agent check`)."""

from __future__ import annotations

from agent.core.model import PointSpec


def _g(v: float) -> str:
    return f"{v:g}"


def rule_text(p: PointSpec, names: dict[int, str] | None = None) -> str:
    """Every enabled rule of `p`, e.g. 'H 60 HH 70 (hyst 2%, on 30s, off 60s); rate W 3 A 8
    /min (60s, hold 180s); stale 3s'. `names` maps point indices to device.key for gates."""
    parts: list[str] = []
    r, q = p.rule, p.rules
    if r is not None:
        levels = [
            f"{sym} {_g(v)}"
            for name, sym in (
                ("low_alarm", "LL"),
                ("low_warning", "L"),
                ("high_warning", "H"),
                ("high_alarm", "HH"),
            )
            if (v := getattr(r, name)) is not None
        ]
        parts.append(
            f"{' '.join(levels)} (hyst {_g(r.hysteresis_pct)}%, on {_g(r.on_delay)}s, "
            f"off {_g(r.off_delay)}s)"
        )

    def two(label: str, w: float | None, a: float | None, tail: str) -> None:
        if w is not None or a is not None:
            lv = " ".join(f"{k} {_g(v)}" for k, v in (("W", w), ("A", a)) if v is not None)
            parts.append(f"{label} {lv}{tail}")

    per = {60.0: "min", 3600.0: "h", 86400.0: "day"}.get(q.rate_per, f"{_g(q.rate_per)}s")
    unit = "%" if q.rate_relative else p.unit
    two(
        "rate",
        q.rate_warning,
        q.rate_alarm,
        f" {unit}/{per} (~{_g(q.rate_window)}s, hold {_g(q.rate_hold)}s)",
    )
    dev_unit = p.unit if q.deviation_absolute else "%"
    hold = "" if q.deviation_hold is None else f", warning held {_g(q.deviation_hold)}s"
    two(
        "deviation",
        q.deviation_warning,
        q.deviation_alarm,
        f" {dev_unit} from baseline (tau {_g(q.baseline_tau)}s{hold})",
    )
    if q.minus is not None:
        other = (names or {}).get(q.minus, q.minus_ref or str(q.minus))
        two("minus " + other, q.diff_warning, q.diff_alarm, f" {p.unit}")
    two("drop", q.drop_warning, q.drop_alarm, f" % within {_g(q.drop_window)}s")
    two(
        "count",
        q.count_warning,
        q.count_alarm,
        f" in {_g(q.count_window)}s (wraps at 2^{q.count_bits})",
    )
    for label, values in (
        ("state warning", q.state_warning),
        ("state alarm", q.state_alarm),
        ("state critical", q.state_critical),
    ):
        if values:
            parts.append(
                f"{label} {list(values)}"
                + (f" after {_g(q.state_delay)}s" if q.state_delay else "")
            )
    if q.idle_states and q.when is not None:
        parts.append(f"idle {list(q.idle_states)} for {_g(q.idle_delay)}s")
    if q.when is not None:
        gate = (names or {}).get(q.when, q.when_ref or str(q.when))
        parts.append(f"when {gate} on" + (" (alarms only)" if q.when_min_level > 1 else ""))
    quality = []
    if q.stale_after is not None:
        quality.append(f"stale {_g(q.stale_after)}s")
    if q.frozen_polls is not None:
        quality.append(f"frozen {q.frozen_polls} polls")
    if q.range_min is not None or q.range_max is not None:
        lo = "-inf" if q.range_min is None else _g(q.range_min)
        hi = "inf" if q.range_max is None else _g(q.range_max)
        quality.append(f"range {lo}..{hi}" + (" 4-20mA" if q.loop_ma else ""))
    if quality:
        parts.append(", ".join(quality))
    parts.extend(f"{name} {spec}" for name, spec in q.custom)  # registered kinds: repr
    if q.latch:
        parts.append("latching")
    return "; ".join(parts) if parts else "-"
