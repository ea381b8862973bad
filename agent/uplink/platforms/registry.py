"""Platform profiles by name: the `profile` of a [[platforms]] entry picks a ProfileEntry,
which says how the config is checked for that platform (key size, the credentials it needs,
fixed or installer-mapped fields, hex case) and builds the platform's Uplink.

Adding a profile (docs/extending.md): its module (the envelope: `seal`, and `open_body` for
the reference receiver), one `register(...)` line below, and docs. The config loader
(agent.config.platforms) checks a [[platforms]] entry through `profile(name)`; an uplink for
a validated spec comes from `make_uplink(spec)`.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from agent.core.platformspec import FieldMap, PlatformSpec
from agent.uplink.contract import Uplink
from agent.uplink.platforms import hebei, mem
from agent.uplink.platforms.crypto import DES_BYTES, SM4_BYTES

Seal = Callable[[PlatformSpec, bytes], tuple[bytes, dict[str, str]]]
OpenBody = Callable[[PlatformSpec, dict[str, Any]], bytes]


def http_uplink(spec: PlatformSpec, seal: Seal) -> Uplink:
    """HTTP POST (agent.uplink.platforms.http), imported when an uplink is built: checking
    a config does not load httpx."""
    from agent.uplink.platforms.http import HttpUplink

    return HttpUplink(spec, seal)


@dataclass(frozen=True, slots=True)
class ProfileEntry:
    """One platform profile. Contract:

    - `seal(spec, inner_json) -> (body, headers)` is the envelope of one request;
    - `open_body(spec, outer_json) -> inner_json` undoes it (the reference receiver, tests);
    - `key_bytes`: the cipher's key and IV size (key_file, iv_file);
    - `credentials`: further secrets required, each from `<name>_file` or
      `<name>_credential` (e.g. "appid", "appsecret"), handed to the spec by name;
    - `fields`: the (telemetry, alarm) field maps when the platform's document fixes them
      (then [platforms.telemetry] / [platforms.alarm] are refused), None when the installer
      maps them from the platform's document (then at least one is required);
    - `hex_upper`: the default hex case of the envelope;
    - `uplink(spec, seal)`: the Uplink adapter (default: HTTP POST, agent.uplink.platforms.http);
    - `check(spec)`: a last profile-specific check of the built spec; returns an error
      message (shown at platforms[i]) or None.
    """

    name: str
    seal: Seal
    open_body: OpenBody
    key_bytes: int
    credentials: tuple[str, ...] = ()
    fields: tuple[FieldMap, FieldMap] | None = None
    hex_upper: bool = True
    uplink: Callable[[PlatformSpec, Seal], Uplink] = http_uplink
    check: Callable[[PlatformSpec], str | None] | None = None
    summary: str = ""


_PROFILES: dict[str, ProfileEntry] = {}


def register(entry: ProfileEntry) -> ProfileEntry:
    """Add a profile under its name; the name must be new."""
    if entry.name in _PROFILES:
        raise ValueError(f"platform profile {entry.name!r} is already registered")
    _PROFILES[entry.name] = entry
    return entry


def unregister(name: str) -> None:
    """Remove a profile (tests)."""
    del _PROFILES[name]


def names() -> tuple[str, ...]:
    return tuple(_PROFILES)


def profile(name: str) -> ProfileEntry:
    """The profile of that name; KeyError (args[0]: the message, with a close match)."""
    try:
        return _PROFILES[name]
    except KeyError:
        hint = difflib.get_close_matches(name, list(_PROFILES), n=1)
        advice = f" (did you mean '{hint[0]}'?)" if hint else ""
        msg = f"unknown platform profile '{name}'{advice}; expected one of: {', '.join(_PROFILES)}"
        raise KeyError(msg) from None


def make_uplink(spec: PlatformSpec) -> Uplink:
    """The Uplink of a validated [[platforms]] entry, with its profile's envelope."""
    entry = profile(spec.profile)
    return entry.uplink(spec, entry.seal)


register(
    ProfileEntry(
        name="hebei_v1_1",
        seal=hebei.seal,
        open_body=hebei.open_body,
        key_bytes=DES_BYTES,
        fields=(hebei.RTS, hebei.EVENTS),
        hex_upper=True,
        summary="Hebei V1.1: rtsData / eventsData, qybm + wgbm, DES-CBC, Base64, hex",
    )
)
register(
    ProfileEntry(
        name="mem",
        seal=mem.seal,
        open_body=mem.open_body,
        key_bytes=SM4_BYTES,
        credentials=("appid", "appsecret"),
        hex_upper=False,
        summary="ministry style: {appid, data}, appsecret header, SM4-CBC, installer-mapped fields",
    )
)
