"""Threshold rules: the rules pack, config overrides, per-point merges, and their checks."""

from __future__ import annotations

import dataclasses
import difflib
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from msgspec import UNSET

from agent.config.errors import ConfigError, blame_key
from agent.config.schema import RawConfig, RawRule, RawRulesPack, field_names
from agent.config.share import Shared
from agent.core.model import PointSpec, ThresholdRule
from agent.core.rulespec import MAX_STATE, PointRules
from agent.rules.registry import build_custom

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
    "producer_running",
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


LEVEL_NAMES = ("high_alarm", "high_warning", "low_warning", "low_alarm")


def _levels(merged: dict[str, Any], file: Path, path: str, what: str) -> dict[str, float | None]:
    """The four threshold levels: absolute, or `reference` x `<level>_pct` / 100 (dust: a
    percentage of the MEC; wet tank: of the low setpoint). Both for one level is an error."""
    ref = _opt(merged, "reference")
    out: dict[str, float | None] = {}
    for name in LEVEL_NAMES:
        absolute, pct = _opt(merged, name), _opt(merged, f"{name}_pct")
        if ref is not None and pct is not None:
            if absolute is not None:
                raise ConfigError(
                    file,
                    path,
                    f"{what}: {name} = {absolute:g} and {name}_pct = {pct:g} (of reference = "
                    f'{ref:g}) both set the level; keep one (e.g. {name}_pct = "off")',
                )
            absolute = ref * pct / 100.0
        out[name] = absolute
    return out


def rule_from(merged: dict[str, Any], file: Path, path: str, what: str) -> ThresholdRule | None:
    levels = _levels(merged, file, path, what)
    rule = ThresholdRule(
        high_alarm=levels["high_alarm"],
        high_warning=levels["high_warning"],
        low_warning=levels["low_warning"],
        low_alarm=levels["low_alarm"],
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
    """defaults = pack ⊕ config; each kind = defaults ⊕ pack kind ⊕ config kind.

    Checked in a fixed order, each error at the key that causes it: the config's
    [rules.defaults] first, then every kind by name (the config's [rules.kinds.*] or the
    pack's [kinds.*]); a pack kind that is valid alone but not under the config's defaults
    is the config's [rules.defaults] error."""
    for kind in pack.kinds:
        check_kind(kind, pack_file, f"kinds.{kind}")
    for kind in cfg.rules.kinds:
        check_kind(kind, cfg_file, f"rules.kinds.{kind}")
    pack_defaults = merge_rule({}, pack.defaults)
    _check_rule(pack_defaults, pack_file, "defaults", "the rules pack's [defaults]", pack.defaults)
    defaults = merge_rule(pack_defaults, cfg.rules.defaults)
    _check_rule(defaults, cfg_file, "rules.defaults", "[rules.defaults]", cfg.rules.defaults)
    kinds: dict[str, dict[str, Any]] = {}
    for kind in sorted({*pack.kinds, *cfg.rules.kinds}):
        pack_kind = merge_rule(pack_defaults, pack.kinds.get(kind, UNSET))
        merged = merge_rule(
            merge_rule(defaults, pack.kinds.get(kind, UNSET)), cfg.rules.kinds.get(kind, UNSET)
        )
        own = cfg.rules.kinds.get(kind)
        if own is not None:
            _check_rule(merged, cfg_file, f"rules.kinds.{kind}", f"sensor kind {kind}", own)
        else:
            _check_rule(pack_kind, pack_file, f"kinds.{kind}", f"sensor kind {kind}", UNSET)
            try:
                _check_rule(
                    merged, cfg_file, "rules.defaults", "[rules.defaults]", cfg.rules.defaults
                )
            except ConfigError as exc:
                raise ConfigError(
                    exc.file,
                    exc.path,
                    f"{exc.message}, for sensor kind {kind} with the rules pack's "
                    f"[kinds.{kind}] ({pack_file}); set [rules.kinds.{kind}] to fit it",
                ) from None
        kinds[kind] = merged
    return Rules(defaults, kinds)


def _check_rule(
    merged: dict[str, Any], file: Path, path: str, what: str, own: RawRule | msgspec.UnsetType
) -> None:
    """Build the rule once to check it; an error's path names the key of `own` (the table
    at `path`) that the message is about, when it names one."""
    try:
        rule_from(merged, file, path, what)
        point_rules_from(merged, file, path, what)
    except ConfigError as exc:
        raise blame_key(exc, own) from None


def check_kind(kind: str, file: Path, path: str) -> None:
    if kind not in KNOWN_KINDS:
        hint = difflib.get_close_matches(kind, KNOWN_KINDS, n=1)
        advice = f" (did you mean '{hint[0]}'?)" if hint else ""
        raise ConfigError(
            file,
            path,
            f"unknown sensor kind '{kind}'{advice}; known kinds: {', '.join(KNOWN_KINDS)}",
        )


# --- the other rule kinds: PointRules, and gates resolved to points ---------------------------

_POSITIVE = ("rate_window", "rate_per", "baseline_tau", "drop_window", "count_window")
_NON_NEGATIVE = ("rate_hold", "state_delay", "idle_delay", "deviation_hold")
_STATE_LISTS = ("state_warning", "state_alarm", "state_critical", "idle_states")


def _opt(merged: dict[str, Any], name: str) -> float | None:
    v = merged.get(name)
    return None if v in (None, "off") else float(v)


def point_rules_from(merged: dict[str, Any], file: Path, path: str, what: str) -> PointRules:
    """The merged rule keys beyond thresholds → PointRules (gate still unresolved)."""
    kw: dict[str, Any] = {}
    for name in (
        "rate_warning",
        "rate_alarm",
        "deviation_warning",
        "deviation_alarm",
        "drop_warning",
        "drop_alarm",
        "count_warning",
        "count_alarm",
        "diff_warning",
        "diff_alarm",
        "range_min",
        "range_max",
        "stale_polls",
    ):
        kw[name] = _opt(merged, name)
    for name in (*_POSITIVE, *_NON_NEGATIVE):
        if name in merged:
            kw[name] = float(merged[name])
            low_ok = kw[name] > 0 if name in _POSITIVE else kw[name] >= 0
            if not low_ok:
                need = "above 0" if name in _POSITIVE else "0 or more"
                raise ConfigError(file, path, f"{what}: {name} must be {need} (got {kw[name]:g})")
    for name in _STATE_LISTS:
        values = tuple(int(v) for v in merged.get(name, ()))
        bad = [v for v in values if not 0 <= v <= MAX_STATE]
        if bad:
            raise ConfigError(
                file, path, f"{what}: {name} values must be 0..{MAX_STATE} (got {bad[0]})"
            )
        kw[name] = values
    for name in ("rate_relative", "loop_ma", "latch", "deviation_absolute"):
        if name in merged:
            kw[name] = bool(merged[name])
    if "count_bits" in merged:
        kw["count_bits"] = int(merged["count_bits"])
        if not 1 <= kw["count_bits"] <= 64:
            raise ConfigError(file, path, f"{what}: count_bits must be 1..64")
    frozen = merged.get("frozen_polls")
    kw["frozen_polls"] = None if frozen in (None, "off") else int(frozen)
    if kw["frozen_polls"] is not None and kw["frozen_polls"] < 2:
        raise ConfigError(file, path, f'{what}: frozen_polls must be at least 2 (or "off")')
    if kw["stale_polls"] is not None and kw["stale_polls"] <= 0:
        raise ConfigError(file, path, f'{what}: stale_polls must be above 0 (or "off")')
    if "chatter_count" in merged:
        kw["chatter_count"] = int(merged["chatter_count"])
        if kw["chatter_count"] < 0:
            raise ConfigError(file, path, f"{what}: chatter_count must be 0 (off) or more")
    lo, hi = kw["range_min"], kw["range_max"]
    if lo is not None and hi is not None and not lo < hi:
        raise ConfigError(
            file, path, f"{what}: range_min ({lo:g}) must be below range_max ({hi:g})"
        )
    if kw.get("loop_ma") and (lo is None or hi is None):
        raise ConfigError(
            file, path, f"{what}: loop_ma needs range_min and range_max (the 4 and 20 mA values)"
        )
    when = merged.get("when")
    kw["when_ref"] = None if when in (None, "off", "") else str(when)
    if "when_min_level" in merged:
        kw["when_min_level"] = 2 if merged["when_min_level"] == "alarm" else 1
    minus = merged.get("minus")
    kw["minus_ref"] = None if minus in (None, "off", "") else str(minus)
    if minus is None and (kw["diff_warning"] is not None or kw["diff_alarm"] is not None):
        raise ConfigError(  # minus = "off" disables the rule on purpose
            file, path, f"{what}: diff_warning / diff_alarm need minus (the point subtracted)"
        )
    try:  # kinds registered with their own spec builder (agent.rules.registry)
        kw["custom"] = build_custom(merged)
    except ValueError as exc:
        raise ConfigError(file, path, f"{what}: {exc}") from None
    return PointRules(**kw)


def _when_origin(
    raw: RawConfig,
    pack: RawRulesPack,
    dev_i: int,
    spec: PointSpec,
    *,
    loc_file: Path,
    loc_path: str,
    cfg_file: Path,
    pack_file: Path,
    field: str = "when",
) -> tuple[Path, str]:
    """Where the effective `when` (or `field`) of a point was set (most specific first)."""
    dev = raw.devices[dev_i]
    ov = dev.override.get(spec.key)
    if (
        ov is not None
        and not isinstance(ov.rule, msgspec.UnsetType)
        and getattr(ov.rule, field) is not UNSET
    ):
        return cfg_file, f"devices[{dev_i}].override.{spec.key}.rule.{field}"
    if loc_file == cfg_file:
        return cfg_file, f"{loc_path}.rule.{field}"
    kinds = raw.rules.kinds.get(spec.kind)
    if kinds is not None and getattr(kinds, field) is not UNSET:
        return cfg_file, f"rules.kinds.{spec.kind}.{field}"
    if getattr(raw.rules.defaults, field) is not UNSET:
        return cfg_file, f"rules.defaults.{field}"
    pk = pack.kinds.get(spec.kind)
    if pk is not None and getattr(pk, field) is not UNSET:
        return pack_file, f"kinds.{spec.kind}.{field}"
    return pack_file, f"defaults.{field}"


@dataclass(frozen=True)
class _RefContext:
    """What resolving a point reference (`when`, `minus`) needs to name the error's origin."""

    raw: RawConfig
    pack: RawRulesPack
    cfg_file: Path
    pack_file: Path
    by_name: dict[str, int]  # "device.key" -> point index
    dev_index: dict[str, int]  # device name -> position in raw.devices


def _resolve_ref(ctx: _RefContext, spec: PointSpec, loc: Any, field: str, ref: str) -> int:
    """The index of the point `ref` names for `spec` (own device key or "device.key")."""
    target = ctx.by_name.get(ref if "." in ref else f"{spec.device}.{ref}")
    if target is not None and target != spec.index:
        return target
    file, path = _when_origin(
        ctx.raw,
        ctx.pack,
        ctx.dev_index[spec.device],
        spec,
        loc_file=loc.file,
        loc_path=loc.path,
        cfg_file=ctx.cfg_file,
        pack_file=ctx.pack_file,
        field=field,
    )
    own = sorted(k.split(".", 1)[1] for k in ctx.by_name if k.startswith(spec.device + "."))
    hint = difflib.get_close_matches(ref, [*own, *ctx.by_name], n=1)
    advice = f" (did you mean '{hint[0]}'?)" if hint else ""
    itself = "a point cannot gate itself" if field == "when" else "is the point itself"
    why = itself if target == spec.index else "names no point"
    raise ConfigError(
        file,
        path,
        f"{field} = '{ref}' for {spec.device}.{spec.key} {why}{advice}; use a key of "
        f"device {spec.device} ({', '.join(own)}), or 'device.key', or set "
        f'override.{spec.key}.rule.{field} = "off"',
    )


def resolve_gates(
    raw: RawConfig,
    located: Sequence[tuple[PointSpec, Any]],
    cfg_file: Path,
    pack_file: Path,
    pack: RawRulesPack,
    *,
    share: Shared,
) -> list[PointSpec]:
    """Resolve each point's `when` and `minus` ("key" on its own device, or "device.key") to
    point indices, and `stale_polls` to seconds with its bus's poll interval."""
    ctx = _RefContext(
        raw,
        pack,
        cfg_file,
        pack_file,
        by_name={f"{s.device}.{s.key}": s.index for s, _ in located},
        dev_index={d.name: i for i, d in enumerate(raw.devices)},
    )
    polls = {b.name: b.poll_interval for b in raw.buses}
    out: list[PointSpec] = []
    for spec, loc in located:
        r = spec.rules
        changes: dict[str, Any] = {}
        if r.stale_polls is not None:
            changes["stale_after"] = r.stale_polls * polls[spec.bus]
        if r.when_ref is not None:
            changes["when"] = _resolve_ref(ctx, spec, loc, "when", r.when_ref)
        if r.minus_ref is not None:
            changes["minus"] = _resolve_ref(ctx, spec, loc, "minus", r.minus_ref)
        if not changes:
            out.append(spec)
            continue
        # points sharing rules and changes (stale_polls on one bus) resolve to one object
        resolved = share.built_from(
            r, functools.partial(_resolved, r, changes, share), extra=tuple(changes.items())
        )
        out.append(dataclasses.replace(spec, rules=resolved))
    return out


def _resolved(r: PointRules, changes: dict[str, Any], share: Shared) -> PointRules:
    return share(dataclasses.replace(r, **changes))
