"""The [[platforms]] entries: codes, period, decimals, scd table, field mapping and secrets;
what differs by profile comes from its registered ProfileEntry (agent.uplink.platforms.registry)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from agent.config.errors import ConfigError
from agent.config.schema import RawFieldMap, RawPlatform
from agent.config.secrets import SecretError, resolve
from agent.core.model import PointSpec, SiteSpec
from agent.core.platformspec import DEFAULT_SCD, NOT_SENT, FieldMap, PlatformSpec
from agent.uplink.platforms.crypto import parse_key
from agent.uplink.platforms.records import ALARM_FIELDS, TELEMETRY_FIELDS, template_names
from agent.uplink.platforms.registry import CodeProblem, ProfileEntry, profile

MAX_PERIOD = 300.0  # Hebei V1.1: upload at least every 5 minutes
MAX_LISTED = 20
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def _opt_path(value: str | msgspec.UnsetType, base: Path) -> Path | None:
    if isinstance(value, msgspec.UnsetType):
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def _secret(raw: RawPlatform, name: str, where: str, cfg_file: Path) -> str | None:
    file = _opt_path(getattr(raw, f"{name}_file"), cfg_file.parent)
    cred = getattr(raw, f"{name}_credential")
    cred = None if isinstance(cred, msgspec.UnsetType) else cred
    key = f"{where}.{name}_file" if file is not None else f"{where}.{name}_credential"
    try:
        return resolve(file, cred)
    except SecretError as exc:
        raise ConfigError(cfg_file, key, str(exc)) from None


def _field_map(
    raw: RawFieldMap | msgspec.UnsetType, allowed: frozenset[str], where: str, cfg_file: Path
) -> FieldMap | None:
    if isinstance(raw, msgspec.UnsetType):
        return None
    if not raw.fields:
        raise ConfigError(cfg_file, f"{where}.fields", "the mapping has no fields")
    for section, table in (("fields", raw.fields), ("extra", raw.extra)):
        for out, template in table.items():
            unknown = template_names(template) - allowed
            if unknown:
                raise ConfigError(
                    cfg_file,
                    f"{where}.{section}.{out}",
                    f"unknown record field(s) {', '.join(sorted(unknown))} in '{template}'; "
                    f"known: {', '.join(sorted(allowed))}",
                )
    return FieldMap(
        endpoint=raw.endpoint.strip("/"),
        fields=tuple(raw.fields.items()),
        list_key=raw.list_key,
        extra=tuple(raw.extra.items()),
    )


def _selected(
    raw: RawPlatform, points: Sequence[PointSpec], where: str, cfg_file: Path
) -> list[PointSpec]:
    if isinstance(raw.points, msgspec.UnsetType):
        return list(points)
    chosen: list[PointSpec] = []
    for j, sel in enumerate(raw.points):
        hit = [p for p in points if sel in (p.device, f"{p.device}.{p.key}")]
        if not hit:
            raise ConfigError(
                cfg_file, f"{where}.points[{j}]", f"'{sel}' is neither a device nor device.key"
            )
        chosen += [p for p in hit if p not in chosen]
    return chosen


def _check_codes(chosen: Sequence[PointSpec], name: str, where: str, cfg_file: Path) -> None:
    missing = [f"{p.device}.{p.key}" for p in chosen if not p.code_explicit]
    if not missing:
        return
    listed = ", ".join(missing[:MAX_LISTED])
    more = f" and {len(missing) - MAX_LISTED} more" if len(missing) > MAX_LISTED else ""
    raise ConfigError(
        cfg_file,
        where,
        f"platform '{name}' needs the platform-assigned code of every point it sends; "
        f"{len(missing)} point(s) have none: {listed}{more}. Set each with "
        '[devices.override.<key>] code = "..." (or code on an inline point), or send fewer '
        f"points with {where}.points",
    )


def _decimals(
    raw: RawPlatform, chosen: Sequence[PointSpec], where: str, cfg_file: Path
) -> dict[str, int]:
    by_name = {f"{p.device}.{p.key}": p.code for p in chosen} | {p.code: p.code for p in chosen}
    # a point's own `decimals` (its wire decimals) unless this platform's point_decimals says
    out: dict[str, int] = {p.code: min(p.decimals, 6) for p in chosen if p.decimals is not None}
    for key, d in raw.point_decimals.items():
        if key not in by_name:
            raise ConfigError(
                cfg_file,
                f"{where}.point_decimals.{key}",
                f"'{key}' is not the code or device.key of a point sent to this platform",
            )
        if not 0 <= d <= 6:
            raise ConfigError(cfg_file, f"{where}.point_decimals.{key}", "must be 0..6")
        out[by_name[key]] = d
    return out


def _checks(raw: RawPlatform, where: str, cfg_file: Path) -> None:
    checks = [
        ("url", raw.url.startswith(("http://", "https://")), "must start with http:// or https://"),
        ("period", 0 < raw.period <= MAX_PERIOD, f"must be above 0 and at most {MAX_PERIOD:g} s"),
        ("decimals", 0 <= raw.decimals <= 6, "must be 0..6"),
        ("timeout", 0 < raw.timeout <= 300, "must be above 0 and at most 300 s"),
        ("max_items", 1 <= raw.max_items <= 10_000, "must be 1..10000"),
        ("backoff_base", raw.backoff_base > 0, "must be above 0"),
        ("backoff_cap", raw.backoff_cap >= raw.backoff_base, "must be at least backoff_base"),
    ]
    for key, ok, what in checks:
        if not ok:
            raise ConfigError(cfg_file, f"{where}.{key}", f"{getattr(raw, key)}: {what}")
    for key, code in raw.scd.items():
        if not (0 <= code <= 99 or code == NOT_SENT):
            raise ConfigError(
                cfg_file, f"{where}.scd.{key}", f"{code}: must be 0..99, or -1 (not sent)"
            )
    try:
        ZoneInfo(raw.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            cfg_file, f"{where}.timezone", f"unknown time zone '{raw.timezone}'"
        ) from None


def _keys(
    raw: RawPlatform, entry: ProfileEntry, where: str, cfg_file: Path
) -> tuple[bytes, bytes, dict[str, str]]:
    """The cipher key and IV (the profile's size), and the further credentials it needs."""
    size = entry.key_bytes
    key_text = _secret(raw, "key", where, cfg_file)
    if key_text is None:
        raise ConfigError(cfg_file, f"{where}.key_file", "the platform's key is required")
    iv_text = _secret(raw, "iv", where, cfg_file)
    if iv_text is None and entry.iv_required:
        raise ConfigError(
            cfg_file,
            f"{where}.iv_file",
            f"{entry.name} needs the IV the platform issued, beside the key: iv_file (or "
            "iv_credential); it is not the key (the document's sample IV is 12345678)",
        )
    try:
        key = parse_key(key_text, size, "the key")
        iv = key if iv_text is None else parse_key(iv_text, size, "the IV")
    except ValueError as exc:
        which = "key" if "key" in str(exc) else "iv"
        raise ConfigError(cfg_file, f"{where}.{which}_file", str(exc)) from None
    creds: dict[str, str] = {}
    for name in entry.credentials:
        value = _secret(raw, name, where, cfg_file)
        if value is None:
            raise ConfigError(cfg_file, f"{where}.{name}_file", f"the {name} is required")
        creds[name] = value
    return key, iv, creds


def _entry(raw: RawPlatform, where: str, cfg_file: Path) -> ProfileEntry:
    try:
        return profile(raw.profile)
    except KeyError as exc:
        raise ConfigError(cfg_file, f"{where}.profile", exc.args[0]) from None


def _field_maps(
    raw: RawPlatform, entry: ProfileEntry, where: str, cfg_file: Path
) -> tuple[FieldMap | None, FieldMap | None]:
    """The profile's fixed field maps, or the installer's [platforms.telemetry] / [.alarm]."""
    if entry.fields is not None:
        for section in ("telemetry", "alarm"):
            if not isinstance(getattr(raw, section), msgspec.UnsetType):
                endpoints = ", ".join(fm.endpoint for fm in entry.fields)
                raise ConfigError(
                    cfg_file,
                    f"{where}.{section}",
                    f"{entry.name} has fixed fields ({endpoints})",
                )
        return entry.fields
    telemetry = _field_map(raw.telemetry, TELEMETRY_FIELDS, f"{where}.telemetry", cfg_file)
    alarm = _field_map(raw.alarm, ALARM_FIELDS, f"{where}.alarm", cfg_file)
    if telemetry is None and alarm is None:
        raise ConfigError(
            cfg_file,
            f"{where}.telemetry",
            f"a {entry.name} platform needs [platforms.telemetry] and/or [platforms.alarm] "
            "field mappings from the platform's interface document (docs/platforms.md; an "
            "example: config/platforms/mem.example.toml)",
        )
    return telemetry, alarm


def platform_spec(
    raw: RawPlatform,
    i: int,
    site: SiteSpec,
    points: Sequence[PointSpec],
    cfg_file: Path,
    *,
    secrets: bool = True,
) -> PlatformSpec:
    where = f"platforms[{i}]"
    name = raw.profile if isinstance(raw.name, msgspec.UnsetType) else raw.name
    if not _NAME.match(name) or name == "mqtt":
        raise ConfigError(
            cfg_file, f"{where}.name", f"'{name}': use 1-32 letters, digits, _ or - (not 'mqtt')"
        )
    entry = _entry(raw, where, cfg_file)
    _checks(raw, where, cfg_file)
    telemetry, alarm = _field_maps(raw, entry, where, cfg_file)
    chosen = _selected(raw, points, where, cfg_file)
    _check_codes(chosen, name, where, cfg_file)
    if secrets:
        key, iv, creds = _keys(raw, entry, where, cfg_file)
    else:  # not read (read-only commands): zero key, no credentials; never used to send
        key = iv = bytes(entry.key_bytes)
        creds = {}
    enterprise = (
        site.enterprise_code
        if isinstance(raw.enterprise_code, msgspec.UnsetType)
        else raw.enterprise_code
    )
    gateway = (
        site.gateway_id if isinstance(raw.gateway_code, msgspec.UnsetType) else raw.gateway_code
    )
    for key_name, value in (("enterprise_code", enterprise), ("gateway_code", gateway)):
        if not value.strip():
            raise ConfigError(cfg_file, f"{where}.{key_name}", "must not be empty")
    upper = entry.hex_upper if isinstance(raw.hex_upper, msgspec.UnsetType) else raw.hex_upper
    spec = PlatformSpec(
        name=name,
        profile=raw.profile,
        url=raw.url.rstrip("/"),
        enterprise_code=enterprise,
        gateway_code=gateway,
        key=key,
        iv=iv,
        telemetry=telemetry,
        alarm=alarm,
        codes=frozenset(p.code for p in chosen),
        devices={
            d: tuple(p.code for p in chosen if p.device == d) for d in {p.device for p in chosen}
        },
        decimals=_decimals(raw, chosen, where, cfg_file),
        default_decimals=raw.decimals,
        period=raw.period,
        scd={**DEFAULT_SCD, **raw.scd},
        appid=creds.get("appid", ""),
        appsecret=creds.get("appsecret", ""),
        timezone=raw.timezone,
        timeout=raw.timeout,
        max_items=raw.max_items,
        backoff_base=raw.backoff_base,
        backoff_cap=raw.backoff_cap,
        hex_upper=upper,
    )
    problem = None if entry.check is None else entry.check(spec)
    if isinstance(problem, str):
        raise ConfigError(cfg_file, where, problem)
    if problem:
        _check_formats(entry, problem, raw=raw, where=where, chosen=chosen, cfg_file=cfg_file)
    return spec


def _check_formats(
    entry: ProfileEntry,
    problems: Sequence[CodeProblem],
    *,
    raw: RawPlatform,
    where: str,
    chosen: Sequence[PointSpec],
    cfg_file: Path,
) -> None:
    """The first code that breaks the profile's format, at the key path where it is set."""
    if not problems:
        return
    first = problems[0]
    if first.field == "point":
        devices = list(dict.fromkeys(p.device for p in chosen))  # config order
        p = next(p for p in chosen if p.code == first.value)
        key = f"devices[{devices.index(p.device)}].override.{p.key}.code"
        what = f"point code '{first.value}' of {p.device}.{p.key}"
    else:
        unset = isinstance(getattr(raw, first.field), msgspec.UnsetType)
        site_key = "enterprise_code" if first.field == "enterprise_code" else "gateway_id"
        key = f"site.{site_key}" if unset else f"{where}.{first.field}"
        what = f"{first.field} '{first.value}'"
    more = f" ({len(problems) - 1} more code(s) too)" if len(problems) > 1 else ""
    raise ConfigError(
        cfg_file, key, f"{what} is not what {entry.name} takes: expected {first.expected}{more}"
    )


def platform_specs(
    raws: Sequence[RawPlatform],
    site: SiteSpec,
    points: Sequence[PointSpec],
    cfg_file: Path,
    *,
    secrets: bool = True,
) -> tuple[PlatformSpec, ...]:
    specs: list[PlatformSpec] = []
    for i, raw in enumerate(raws):
        spec = platform_spec(raw, i, site, points, cfg_file, secrets=secrets)
        if any(s.name == spec.name for s in specs):
            raise ConfigError(
                cfg_file, f"platforms[{i}].name", f"platform name '{spec.name}' is used twice"
            )
        specs.append(spec)
    return tuple(specs)
