"""Threshold rules: the rules pack, config overrides, per-point merges, and their checks."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from msgspec import UNSET

from agent.config.errors import ConfigError
from agent.config.schema import RawConfig, RawRule, RawRulesPack, field_names
from agent.model import ThresholdRule

# Sensor kinds the agent knows (DOMAIN.md); a point's kind selects its default rules.
KNOWN_KINDS: tuple[str, ...] = (
    "generic",
    "hopper_temperature",
    "inlet_temperature",
    "outlet_temperature",
    "differential_pressure",
    "pulse_air_pressure",
    "duct_velocity",
    "fan_running",
    "fan_current",
    "airlock_valve",
    "spark_count",
    "extinguisher_fault",
    "explosion_protection",
    "wet_tank_level",
    "wet_flow",
    "wet_pressure",
    "hydrogen",
    "dust_concentration",
    "co",
    "material_temperature",
)


def merge_rule(base: dict[str, Any], over: RawRule | msgspec.UnsetType) -> dict[str, Any]:
    if isinstance(over, msgspec.UnsetType):
        return base
    out = dict(base)
    for name in field_names(RawRule):
        v = getattr(over, name)
        if v is not UNSET:
            out[name] = v
    return out


def rule_from(merged: dict[str, Any], file: Path, path: str, what: str) -> ThresholdRule | None:
    def level(name: str) -> float | None:
        v = merged.get(name)
        return None if v in (None, "off") else float(v)

    rule = ThresholdRule(
        high_alarm=level("high_alarm"),
        high_warning=level("high_warning"),
        low_warning=level("low_warning"),
        low_alarm=level("low_alarm"),
        hysteresis_pct=float(merged.get("hysteresis_pct", 2.0)),
        on_delay=float(merged.get("on_delay", 30.0)),
        off_delay=float(merged.get("off_delay", 60.0)),
    )
    for name in ("hysteresis_pct", "on_delay", "off_delay"):
        if getattr(rule, name) < 0:
            raise ConfigError(
                file, path, f"{what}: {name} must not be negative (got {getattr(rule, name)})"
            )
    pairs = (
        ("high_warning", "high_alarm", "the high warning must not be above the high alarm"),
        ("low_alarm", "low_warning", "the low alarm must not be above the low warning"),
        ("low_warning", "high_warning", "the low warning must be below the high warning"),
    )
    for lo, hi, text in pairs:
        a, b = getattr(rule, lo), getattr(rule, hi)
        if a is not None and b is not None and a > b:
            raise ConfigError(file, path, f"{what}: {text} ({lo} = {a}, {hi} = {b})")
    return rule if rule.enabled else None


@dataclass(frozen=True)
class Rules:
    """The effective rule settings per sensor kind: pack, then config [rules]."""

    defaults: dict[str, Any]
    kinds: dict[str, dict[str, Any]]

    def for_kind(self, kind: str) -> dict[str, Any]:
        return self.kinds.get(kind, self.defaults)


def load_rules(cfg: RawConfig, cfg_file: Path, pack_file: Path, pack: RawRulesPack) -> Rules:
    """defaults = pack ⊕ config; each kind = defaults ⊕ pack kind ⊕ config kind."""
    defaults = merge_rule(merge_rule({}, pack.defaults), cfg.rules.defaults)
    for kind in pack.kinds:
        check_kind(kind, pack_file, f"kinds.{kind}")
    for kind in cfg.rules.kinds:
        check_kind(kind, cfg_file, f"rules.kinds.{kind}")
    kinds = {
        kind: merge_rule(
            merge_rule(defaults, pack.kinds.get(kind, UNSET)), cfg.rules.kinds.get(kind, UNSET)
        )
        for kind in {*pack.kinds, *cfg.rules.kinds}
    }
    for kind, merged in kinds.items():
        in_cfg = kind in cfg.rules.kinds
        rule_from(
            merged,
            cfg_file if in_cfg else pack_file,
            f"rules.kinds.{kind}" if in_cfg else f"kinds.{kind}",
            f"sensor kind {kind}",
        )
    return Rules(defaults, kinds)


def check_kind(kind: str, file: Path, path: str) -> None:
    if kind not in KNOWN_KINDS:
        hint = difflib.get_close_matches(kind, KNOWN_KINDS, n=1)
        advice = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(
            file,
            path,
            f"unknown sensor kind '{kind}'{advice}; known kinds: {', '.join(KNOWN_KINDS)}",
        )
