"""Read a TOML file with installer hints: a BOM, a non-UTF-8 encoding (GBK) and full-width
punctuation typed with a Chinese input method get a position and what to do."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from agent.config.errors import ConfigError

BOM = b"\xef\xbb\xbf"
MAX_BYTES = 16 * 1024 * 1024  # a config, profile or rules pack is a few KiB

# Full-width or typographic characters a Chinese input method types where TOML needs ASCII.
LOOKALIKES: dict[str, str] = {
    "\u201c": '"',  # “
    "\u201d": '"',  # ”
    "\u2018": "'",  # ‘
    "\u2019": "'",  # ’
    "\uff02": '"',  # ＂
    "\uff07": "'",  # ＇
    "\uff1a": ":",  # ：
    "\uff1d": "=",  # ＝
    "\uff0c": ",",  # ，
    "\u3001": ",",  # 、
    "\uff3b": "[",  # ［
    "\uff3d": "]",  # ］
    "\u3010": "[",  # 【
    "\u3011": "]",  # 】
    "\uff5b": "{",  # ｛
    "\uff5d": "}",  # ｝
    "\uff0e": ".",  # ．
    "\u3002": ".",  # 。
    "\u3000": " ",  # ideographic space
    "\uff03": "#",  # ＃
}

_AT = re.compile(r"\(at line (?P<line>\d+), column (?P<col>\d+)\)|\(at end of document\)")


def _position(data: bytes, offset: int) -> tuple[int, int]:
    """1-based line and column (in characters of the valid UTF-8 before it) of a byte offset."""
    line_start = data.rfind(b"\n", 0, offset) + 1
    line = data.count(b"\n", 0, offset) + 1
    col = len(data[line_start:offset].decode("utf-8", errors="replace")) + 1
    return line, col


def _decode(data: bytes, file: Path, what: str) -> str:
    if data.startswith(BOM):
        raise ConfigError(
            file,
            "line 1, column 1",
            f"{what} starts with a UTF-8 byte order mark (BOM); save the file as UTF-8 "
            "without BOM (Notepad: Save as, Encoding 'UTF-8', not 'UTF-8 with BOM'; "
            "or: sed -i '1s/^\\xEF\\xBB\\xBF//' FILE)",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _position(data, exc.start)
        try:
            data.decode("gb18030")
            guess = " It looks like GBK/GB18030 (Chinese Windows) text."
        except UnicodeDecodeError:
            guess = ""
        raise ConfigError(
            file,
            f"line {line}, column {col}",
            f"{what} is not UTF-8 text: byte offset {exc.start} (0x{data[exc.start]:02X}) is "
            f"the first non-UTF-8 byte.{guess} Save the file as UTF-8 without BOM "
            f"(e.g. iconv -f GB18030 -t UTF-8 FILE > FILE.new)",
        ) from None


def _lookalike_hint(text: str, line: int | None) -> str:
    """A hint naming the full-width characters on the failing line (or anywhere)."""
    lines = text.splitlines()
    if line is None or not 0 < line <= len(lines):
        return ""
    scope = lines[line - 1]  # only the failing line: names in Chinese may hold ， legitimately
    found = [c for c in dict.fromkeys(scope) if c in LOOKALIKES]
    if not found:
        return ""
    pairs = ", ".join(f"{LOOKALIKES[c]} instead of {c}" for c in found[:4])
    return (
        f"; line {line} has full-width or typographic punctuation (a Chinese input method) at "
        f"column {scope.index(found[0]) + 1}: use ASCII {pairs}"
    )


def read_toml(file: Path, what: str) -> dict[str, Any]:
    """The parsed TOML of `file`; ConfigError with the position and a hint if unreadable."""
    try:
        if not file.is_file():  # a directory, a FIFO, /dev/zero: never read
            raise ConfigError(
                file, "", f"{what} is not a file" if file.exists() else f"{what} not found"
            )
        with file.open("rb") as f:
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        raise ConfigError(file, "", f"cannot read {what}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise ConfigError(file, "", f"{what} is larger than {MAX_BYTES // 2**20} MiB")
    text = _decode(data, file, what)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        m = _AT.search(msg)
        line = int(m.group("line")) if m and m.group("line") else None
        where = f"line {m.group('line')}, column {m.group('col')}" if line and m else ""
        if m and not line:
            where = "end of file (is it cut short?)"
        reason = _AT.sub("", msg).strip()
        raise ConfigError(
            file, where, f"not valid TOML: {reason}{_lookalike_hint(text, line)}"
        ) from None
