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
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from agent.core.platformspec import FieldMap, PlatformSpec
from agent.uplink.contract import Uplink
from agent.uplink.platforms import hebei, mem
from agent.uplink.platforms.crypto import DES_BYTES, SM4_BYTES

Seal = Callable[[PlatformSpec, bytes], tuple[bytes, dict[str, str]]]
OpenBody = Callable[[PlatformSpec, dict[str, Any]], bytes]
CodeField = Literal["enterprise_code", "gateway_code", "point"]


@dataclass(frozen=True, slots=True)
class CodeProblem:
    """A code that breaks the profile's format: which one, its value, the form expected.
    The config loader turns it into an error at the key path where that code is set."""

    field: CodeField
    value: str
    expected: str


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
    - `iv_required`: the IV must be configured (iv_file / iv_credential); otherwise it
      defaults to the key;
    - `check(spec)`: a last profile-specific check of the built spec: None (or []) when
      fine; an error message (shown at platforms[i]); or, for the profile's code formats, a
      CodeProblem per enterprise, gateway or point code that breaks them (the loader reports
      them at the key path where that code is set).
    """

    name: str
    seal: Seal
    open_body: OpenBody
    key_bytes: int
    credentials: tuple[str, ...] = ()
    fields: tuple[FieldMap, FieldMap] | None = None
    hex_upper: bool = True
    uplink: Callable[[PlatformSpec, Seal], Uplink] = http_uplink
    check: Callable[[PlatformSpec], str | Sequence[CodeProblem] | None] | None = None
    iv_required: bool = False
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


_DIGITS12 = re.compile(r"^\d{12}$")
_DIGITS19 = re.compile(r"^\d{19}$")


def hebei_codes(spec: PlatformSpec) -> list[CodeProblem]:
    """Hebei V1.1's code formats: qybm 12 digits; wgbm = qybm + "01"; point codes (tnm,
    oname) 19 digits = qybm + 2 (equipment) + 2 (type) + 3 (sequence)."""
    qybm = spec.enterprise_code
    out: list[CodeProblem] = []
    if not _DIGITS12.match(qybm):
        out.append(CodeProblem("enterprise_code", qybm, "12 digits (qybm), e.g. 130100000001"))
        qybm = "<enterprise code>"
    if spec.gateway_code != f"{qybm}01":
        out.append(
            CodeProblem(
                "gateway_code", spec.gateway_code, f'the enterprise code + "01" (wgbm): {qybm}01'
            )
        )
    for code in sorted(spec.codes):
        if not (_DIGITS19.match(code) and code.startswith(qybm)):
            want = (
                f"19 digits: the enterprise code {qybm} + 2 (equipment) + 2 (type) + "
                f"3 (sequence), e.g. {qybm}0101001"
            )
            out.append(CodeProblem("point", code, want))
    return out


register(
    ProfileEntry(
        name="hebei_v1_1",
        seal=hebei.seal,
        open_body=hebei.open_body,
        key_bytes=DES_BYTES,
        fields=(hebei.RTS, hebei.EVENTS),
        hex_upper=True,
        check=hebei_codes,
        iv_required=True,  # the document's sample IV (12345678) is not the key
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
