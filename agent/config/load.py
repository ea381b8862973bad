"""Load, validate and resolve the agent config into an AgentConfig (profiles, rules, checks)."""

from __future__ import annotations

import dataclasses
import difflib
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from msgspec import UNSET

from agent.config.addressing import (
    located_point,
    point_addressing,
    point_decimals,
    with_protocol_holes,
)
from agent.config.devices import check_device, check_names, shared_unit_warnings
from agent.config.errors import ConfigError, translate
from agent.config.fieldbus import (
    bus_spec,
    check_not_on_hole,
    check_point_io,
    device_holes,
    regs_clash,
)
from agent.config.operator import operator_spec, with_journal_key
from agent.config.rules import (
    Rules,
    check_kind,
    load_rules,
    merge_rule,
    point_rules_from,
    resolve_gates,
    rule_from,
)
from agent.config.schema import (
    RawBus,
    RawConfig,
    RawDevice,
    RawFieldMap,
    RawOverride,
    RawPlatform,
    RawPoint,
    RawProfile,
    RawRule,
    RawRules,
    RawRulesPack,
    RawSite,
    RawStorage,
    RawUplink,
    field_names,
)
from agent.config.share import Shared
from agent.config.toml_text import read_toml
from agent.config.uplink import storage_spec, uplink_spec
from agent.config.web import web_spec
from agent.core.model import (
    REGISTER_WIDTH,
    AgentConfig,
    PointSpec,
    SiteSpec,
)
from agent.core.platformspec import PlatformSpec

REPO_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"

_S = TypeVar("_S", bound=msgspec.Struct)


_KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "top": field_names(RawConfig),
    "site": field_names(RawSite),
    "bus": field_names(RawBus),
    "device": field_names(RawDevice),
    "point": field_names(RawPoint),
    "override": field_names(RawOverride),
    "rule": field_names(RawRule),
    "rules": field_names(RawRules),
    "uplink": field_names(RawUplink),
    "storage": field_names(RawStorage),
    "platforms": field_names(RawPlatform),
    "telemetry": field_names(RawFieldMap),
    "alarm": field_names(RawFieldMap),
}


def _convert(data: dict[str, Any], struct: type[_S], file: Path) -> _S:
    try:
        return msgspec.convert(data, struct)
    except msgspec.ValidationError as exc:
        raise translate(exc, file, _KNOWN_KEYS) from None


def _resolve_path(base: Path, value: str, fallback_dir: Path | None = None) -> Path:
    p = Path(value).expanduser()
    if p.is_absolute():
        return p
    candidate = base / p
    if not candidate.exists() and fallback_dir is not None and (fallback_dir / p).exists():
        return fallback_dir / p
    return candidate


def _load_profile(name: str, profiles_dir: Path, file: Path, path: str) -> tuple[RawProfile, Path]:
    pfile = profiles_dir / f"{name}.toml"
    if not pfile.is_file():
        available = (
            sorted(p.stem for p in profiles_dir.glob("*.toml")) if profiles_dir.is_dir() else []
        )
        hint = difflib.get_close_matches(name, available, n=1)
        advice = f" (did you mean '{hint[0]}'?)" if hint else ""
        listed = (
            f"; available: {', '.join(available)}" if available else "; that folder has no profiles"
        )
        raise ConfigError(
            file, path, f"no equipment profile '{name}' in {profiles_dir}{advice}{listed}"
        )
    profile = _convert(read_toml(pfile, "equipment profile"), RawProfile, pfile)
    if profile.name != name:
        raise ConfigError(
            pfile, "name", f"profile file is named '{name}' but says name = '{profile.name}'"
        )
    return profile, pfile


@dataclass(frozen=True)
class _Located:
    point: RawPoint
    file: Path
    path: str  # key path of the point in `file`
    from_profile: bool = False


def _device_points(
    dev: RawDevice, i: int, profiles_dir: Path, cfg_file: Path
) -> Iterator[_Located]:
    if not isinstance(dev.profile, msgspec.UnsetType):
        profile, pfile = _load_profile(dev.profile, profiles_dir, cfg_file, f"devices[{i}].profile")
        for j, p in enumerate(profile.points):
            yield _Located(p, pfile, f"points[{j}]", from_profile=True)
        keys = {p.key for p in profile.points}
        for key in dev.override:
            if key not in keys:
                hint = difflib.get_close_matches(key, sorted(keys), n=1)
                advice = f" (did you mean '{hint[0]}'?)" if hint else ""
                raise ConfigError(
                    cfg_file,
                    f"devices[{i}].override.{key}",
                    f"profile '{dev.profile}' has no point '{key}'{advice}; "
                    f"its points: {', '.join(sorted(keys))}",
                )
    elif dev.override:
        key = next(iter(dev.override))
        raise ConfigError(
            cfg_file, f"devices[{i}].override.{key}", "override needs a profile on the device"
        )
    for j, p in enumerate(dev.points):
        yield _Located(p, cfg_file, f"devices[{i}].points[{j}]")


def _check_point(loc: _Located) -> None:
    p, file, path = loc.point, loc.file, loc.path
    check_point_io(p, file, path)
    if not 0 <= p.address <= 65535 - REGISTER_WIDTH[p.type] + 1:
        raise ConfigError(
            file, f"{path}.address", f"register address {p.address} is outside 0..65535"
        )
    if p.scale == 0:
        raise ConfigError(file, f"{path}.scale", "scale must not be 0 (every reading would be 0)")
    for name in ("scale", "offset"):
        if not math.isfinite(getattr(p, name)):
            raise ConfigError(file, f"{path}.{name}", f"{name} must be a finite number")
    if not p.key or not p.key.replace("_", "").replace("-", "").isalnum():
        raise ConfigError(
            file, f"{path}.key", f"point key '{p.key}' must be letters, digits, _ or -"
        )
    check_kind(p.kind, file, f"{path}.kind")


def _str_or(value: str | msgspec.UnsetType, default: str) -> str:
    return default if isinstance(value, msgspec.UnsetType) else value


def _float_or(value: float | msgspec.UnsetType, default: float) -> float:
    return default if isinstance(value, msgspec.UnsetType) else float(value)


def _check_buses(cfg: RawConfig, file: Path) -> None:
    if not cfg.buses:
        raise ConfigError(file, "buses", "no bus configured; add a [[buses]] table")
    seen: set[str] = set()
    for i, b in enumerate(cfg.buses):
        if b.name in seen:
            raise ConfigError(file, f"buses[{i}].name", f"bus name '{b.name}' is used twice")
        seen.add(b.name)
        bus_spec(b, i, file)  # per-type checks (agent.config.fieldbus)
        if b.timeout <= 0:
            raise ConfigError(file, f"buses[{i}].timeout", "timeout must be above 0 seconds")
        if not 0 <= b.retries <= 5:
            raise ConfigError(file, f"buses[{i}].retries", "retries must be between 0 and 5")
        if b.poll_interval < 0.05:
            raise ConfigError(
                file, f"buses[{i}].poll_interval", "poll_interval must be at least 0.05 s"
            )


def _check_overlaps(
    points: list[tuple[PointSpec, _Located]], raw: RawConfig, cfg_file: Path
) -> None:
    dev_at = {d.name: i for i, d in enumerate(raw.devices)}
    by_regs: dict[tuple[str, int, str], list[tuple[PointSpec, _Located]]] = {}
    for spec, loc in points:
        by_regs.setdefault((spec.bus, spec.unit_id, spec.table), []).append((spec, loc))
    for (bus, unit, _table), group in by_regs.items():
        group.sort(key=lambda t: t[0].address)
        for (a, _), (b, bloc) in itertools.pairwise(group):
            if regs_clash(a, b) and a.device != b.device:
                i, j = sorted((dev_at[a.device], dev_at[b.device]))
                raise ConfigError(
                    cfg_file,
                    f"devices[{j}].unit",
                    f"devices '{raw.devices[i].name}' (devices[{i}].unit) and "
                    f"'{raw.devices[j].name}' both use unit id {unit} on bus '{bus}' and their "
                    f"points share registers ({a.device}.{a.key}: {_regs(a)}; {b.device}.{b.key}:"
                    f" {_regs(b)}): give each device its own unit id",
                )
            if regs_clash(a, b):
                raise ConfigError(
                    bloc.file,
                    bloc.path,
                    f"point {b.device}.{b.key} ({_regs(b)}) overlaps {a.device}.{a.key}"
                    f" ({_regs(a)}) on unit {unit} of bus '{bus}'",
                )


def _regs(p: PointSpec) -> str:
    return f"{p.table} registers {p.address}..{p.address + p.width - 1}"


def _resolve_point(
    loc: _Located,
    dev: RawDevice,
    i: int,
    *,
    index: int,
    rules: Rules,
    cfg_file: Path,
    share: Shared,
) -> PointSpec:
    """Profile point + device override + rules → PointSpec."""
    p = loc.point
    ov = dev.override.get(p.key, RawOverride())
    rule_path = (
        f"devices[{i}].override.{p.key}.rule"
        if ov.rule is not UNSET
        else (loc.path if loc.file == cfg_file else f"devices[{i}]")
    )
    merged = merge_rule(merge_rule(rules.for_kind(p.kind), p.rule), ov.rule)
    # the kind's settings unchanged (merge_rule returns the same dict): built once, shared
    rule, point_rules = share.built_from(
        merged,
        lambda: (
            share(rule_from(merged, cfg_file, rule_path, p.key)),
            share(point_rules_from(merged, cfg_file, rule_path, p.key)),
        ),
    )
    return PointSpec(
        index=index,
        device=share(dev.name),
        key=share(p.key),
        code=_str_or(ov.code, _str_or(p.code, f"{dev.name}.{p.key}")),
        code_explicit=ov.code is not UNSET or p.code is not UNSET,
        name_zh=share(_str_or(ov.name_zh, p.name_zh or p.key)),
        name_en=share(_str_or(ov.name_en, p.name_en or p.key)),
        bus=share(dev.bus),
        unit_id=dev.unit,
        table=p.table,
        address=p.address,
        type=p.type,
        order=p.order,
        scale=_float_or(ov.scale, p.scale),
        offset=_float_or(ov.offset, p.offset),
        unit=share(_str_or(ov.unit, p.unit)),
        kind=share(p.kind),
        rule=rule,
        rules=point_rules,
        bit=None if isinstance(p.bit, msgspec.UnsetType) else p.bit,
        read_mode=dev.read_mode,
        decimals=point_decimals(p, ov, cfg_file, f"devices[{i}].override.{p.key}", loc.path),
        device_zh=share(dev.name_zh),
    )


def _resolve_points(
    raw: RawConfig,
    cfg_file: Path,
    rules: Rules,
    profiles_dir: Path,
    warnings: list[str],
    *,
    share: Shared,
) -> list[tuple[PointSpec, _Located]]:
    if not raw.devices:
        raise ConfigError(cfg_file, "devices", "no device configured; add a [[devices]] table")
    check_names(raw, cfg_file)
    specs: list[tuple[PointSpec, _Located]] = []
    codes: dict[str, str] = {}
    for i, dev in enumerate(raw.devices):
        check_device(dev, i, raw.buses, cfg_file)
        located = list(_device_points(dev, i, profiles_dir, cfg_file))
        if not located:
            raise ConfigError(
                cfg_file, f"devices[{i}]", "device has no points: give it a profile or points"
            )
        profile = (
            None
            if isinstance(dev.profile, msgspec.UnsetType)
            else _load_profile(dev.profile, profiles_dir, cfg_file, f"devices[{i}].profile")
        )
        proto_dev, proto_profile = with_protocol_holes(dev, i, cfg_file, profile)
        holes = device_holes(proto_dev, i, cfg_file, proto_profile)
        keys: set[str] = set()
        for written_loc in located:
            notation = point_addressing(dev, profile and profile[0], written_loc.from_profile)
            point, written = located_point(
                written_loc.point, notation, written_loc.file, written_loc.path, warnings
            )
            loc = dataclasses.replace(written_loc, point=point)
            _check_point(loc)
            if loc.point.key in keys:
                raise ConfigError(
                    loc.file,
                    f"{loc.path}.key",
                    f"point key '{loc.point.key}' is used twice on device '{dev.name}'",
                )
            keys.add(loc.point.key)
            spec = _resolve_point(
                loc, dev, i, index=len(specs), rules=rules, cfg_file=cfg_file, share=share
            )
            if written:
                spec = dataclasses.replace(spec, written_address=written)
            if holes:
                spec = dataclasses.replace(spec, holes=holes)
                check_not_on_hole(spec, loc.file, loc.path)
            if spec.code in codes:
                own_code = dev.override.get(spec.key, RawOverride()).code is not UNSET
                raise ConfigError(
                    cfg_file,
                    f"devices[{i}].override.{spec.key}.code" if own_code else f"devices[{i}]",
                    f"point code '{spec.code}' of {dev.name}.{spec.key} is already used by "
                    f"{codes[spec.code]}; point codes must be unique (set another with "
                    "override.<key>.code)",
                )
            codes[spec.code] = f"{dev.name}.{spec.key}"
            specs.append((spec, loc))
    return specs


def load_config(file: Path | str, *, secrets: bool = True) -> AgentConfig:
    """Read and validate `file`; raise ConfigError naming the file, key path and problem.

    `secrets=False` leaves every secret file and credential unread (MQTT and platform
    credentials, the journal's HMAC key): for the read-only and operator commands, which
    must work from any shell. `run` loads with secrets."""
    cfg_file = Path(file).resolve()
    raw = _convert(read_toml(cfg_file, "config file"), RawConfig, cfg_file)
    _check_buses(raw, cfg_file)
    pack_file = _resolve_path(cfg_file.parent, raw.rules_pack, REPO_CONFIG_DIR)
    try:
        pack_data = read_toml(pack_file, "rules pack")
    except ConfigError as exc:
        if exc.path:  # a position in the pack
            raise
        raise ConfigError(
            cfg_file, "rules_pack", f"{exc.message}: {pack_file} (from rules_pack)"
        ) from None
    pack = _convert(pack_data, RawRulesPack, pack_file)
    rules = load_rules(raw, cfg_file, pack_file, pack)
    profiles_dir = _resolve_path(cfg_file.parent, raw.profiles_dir, REPO_CONFIG_DIR)
    warnings: list[str] = []
    share = Shared()  # equal rule sets and names held once
    specs = _resolve_points(raw, cfg_file, rules, profiles_dir, warnings, share=share)
    _check_overlaps(specs, raw, cfg_file)
    specs = list(
        zip(
            resolve_gates(raw, specs, cfg_file, pack_file, pack, share=share),
            (loc for _, loc in specs),
            strict=True,
        )
    )

    used = {s.bus for s, _ in specs}
    buses = tuple(bus_spec(b, i, cfg_file) for i, b in enumerate(raw.buses) if b.name in used)
    site = SiteSpec(raw.site.enterprise_code, raw.site.gateway_id, raw.site.name)
    for name in ("enterprise_code", "gateway_id"):
        value = getattr(site, name)
        if not value or "/" in value or "+" in value or "#" in value:
            raise ConfigError(
                cfg_file, f"site.{name}", f"'{value}' must be non-empty and contain no / + #"
            )
    uplink = uplink_spec(raw.uplink, site, cfg_file, secrets=secrets)
    points = tuple(s for s, _ in specs)
    storage = storage_spec(raw.storage, cfg_file, points, buses)
    storage = with_journal_key(storage, raw.storage, cfg_file, secrets=secrets)
    platforms: tuple[PlatformSpec, ...] = ()
    if raw.platforms:  # the platform code (cryptography: ~7 MB RSS) only when configured
        from agent.config.platforms import platform_specs

        platforms = platform_specs(raw.platforms, site, points, cfg_file, secrets=secrets)
    return AgentConfig(
        path=cfg_file,
        site=site,
        buses=buses,
        points=points,
        uplink=uplink,
        storage=storage,
        platforms=platforms,
        web=web_spec(raw.web, raw.devices, cfg_file),
        operator=operator_spec(raw.operator, storage.dir, cfg_file),
        language=raw.language,
        warnings=(*warnings, *shared_unit_warnings(raw, cfg_file)),
    )
