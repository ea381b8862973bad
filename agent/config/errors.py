"""ConfigError and the translation of msgspec validation messages into installer language."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import msgspec
from msgspec import UNSET

from agent.config.schema import CHOICES, RawRule, field_names

EX_CONFIG = 78  # sysexits.h: configuration error; systemd does not restart on it


class ConfigError(Exception):
    """A config problem: names the file, the key path and what is wrong."""

    def __init__(self, file: Path, path: str, message: str) -> None:
        self.file = file
        self.path = path
        self.message = message
        where = f"{file}: {path}: " if path else f"{file}: "
        super().__init__(where + message)


_AT = re.compile(r"^(?P<msg>.*) - at `\$(?P<path>[^`]*)`$")
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<key>[^`]+)`")
_MISSING = re.compile(r"Object missing required field `(?P<key>[^`]+)`")
_ENUM = re.compile(r"Invalid enum value (?P<val>.+)")
_EXPECTED = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")

_TYPE_WORDS = {
    "int": "a whole number",
    "float": "a number",
    "str": "a text in quotes",
    "bool": "true or false",
    "array": "a list ([...] or [[...]] tables)",
    "object": "a table",
    "float | str": 'a number or "off"',
    "str | null": "a text in quotes",
}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def translate(
    exc: msgspec.ValidationError, file: Path, known: dict[str, tuple[str, ...]]
) -> ConfigError:
    """Turn msgspec's first error into a ConfigError with a key path and advice.

    `known` maps a struct path pattern's last segment kind to its valid keys, for suggestions.
    """
    text = str(exc)
    m = _AT.match(text)
    msg, path = (m.group("msg"), m.group("path").lstrip(".")) if m else (text, "")
    if u := _UNKNOWN.match(msg):
        key = u.group("key")
        valid = known.get(_struct_of(path), ())
        hint = difflib.get_close_matches(key, valid, n=1)
        advice = f" (did you mean '{hint[0]}'?)" if hint else ""
        if valid:
            advice += f"; valid keys here: {', '.join(valid)}"
        return ConfigError(file, _join(path, key), f"unknown key '{key}'{advice}")
    if r := _MISSING.match(msg):
        key = r.group("key")
        return ConfigError(file, _join(path, key), f"required key '{key}' is missing")
    if e := _ENUM.match(msg):
        field = path.rsplit(".", 1)[-1]
        bus = path.startswith("buses")
        choices = CHOICES.get(f"bus.{field}" if bus else field, ())
        val = e.group("val")
        hint = difflib.get_close_matches(val.strip("'"), choices, n=1)
        advice = f" (did you mean '{hint[0]}'?)" if hint else ""
        listed = f"; expected one of: {', '.join(choices)}" if choices else ""
        return ConfigError(file, path, f"invalid value {val}{advice}{listed}")
    if x := _EXPECTED.match(msg):
        want = _TYPE_WORDS.get(x.group("want"), x.group("want"))
        got = _TYPE_WORDS.get(x.group("got"), x.group("got"))
        return ConfigError(file, path, f"expected {want}, got {got}")
    return ConfigError(file, path, msg)


def _struct_of(path: str) -> str:
    """Classify a key path by the struct it points at: 'devices[0].points[1]' -> 'point'."""
    last = re.sub(r"\[\d+\]$", "", path).rsplit(".", 1)[-1]
    parent = path.rsplit(".", 2)
    if last == "points":
        return "point"
    if last == "devices":
        return "device"
    if last == "buses":
        return "bus"
    if last == "rule" or (len(parent) >= 2 and parent[-2] == "kinds") or last == "defaults":
        return "rule"
    if len(parent) >= 2 and parent[-2] == "override":
        return "override"
    return last or "top"


def blame_key(exc: ConfigError, own: RawRule | msgspec.UnsetType) -> ConfigError:
    """`exc` with its key path extended by the key of `own` its message names first."""
    if isinstance(own, msgspec.UnsetType):
        return exc
    message = exc.message
    set_here = [n for n in field_names(RawRule) if getattr(own, n) is not UNSET]
    named = [(message.find(n), n) for n in set_here if _names(message, n)]
    if not named:
        return exc
    return ConfigError(exc.file, f"{exc.path}.{min(named)[1]}", message)


def _names(message: str, key: str) -> bool:
    """`key` appears in `message` as a whole word (on_delay, not off_delay's 'delay')."""
    at = message.find(key)
    while at >= 0:
        before = message[at - 1] if at else " "
        after = message[at + len(key)] if at + len(key) < len(message) else " "
        if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
            return True
        at = message.find(key, at + 1)
    return False
