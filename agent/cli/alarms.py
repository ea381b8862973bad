"""`dust-agent alarms`: the alarm journal as a table for maintenance staff on the box."""

from __future__ import annotations

import argparse
import math
import re
import shutil
import sys
import time
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from agent.cli.locale import Lang, translator
from agent.core.model import StorageSpec
from agent.store.journal import ChainHead, read_journal, verify_journal

_AGO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
HEADERS = ("time", "device", "point", "transition", "level", "value", "threshold", "text")
_GAP = "  "
EX_NOPERM = 77
_MIN_TEXT = 12


def parse_since(since: str, now: float) -> float:
    """'30m', '2h', '7d' (also s, w) before `now`, or an ISO date/datetime (local time when
    naive), as epoch seconds. Raises ValueError with a message fit for the user."""
    m = _AGO.match(since)
    if m:
        return now - float(m.group(1)) * _UNIT_S[m.group(2).lower()]
    try:
        dt = datetime.fromisoformat(since.strip())
    except ValueError:
        raise ValueError(
            f"--since {since!r}: expected a duration such as 30m, 2h, 7d, or an ISO date or "
            "datetime such as 2024-05-01 or 2024-05-01T08:00"
        ) from None
    return dt.timestamp()  # naive -> local time


def display_width(text: str) -> int:
    """Terminal columns: wide and full-width characters (Chinese) take two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def fit(text: str, width: int) -> str:
    """Truncate (with an ellipsis) or pad `text` to exactly `width` terminal columns."""
    if display_width(text) > width:
        out, used = [], 0
        for c in text:
            w = display_width(c)
            if used + w > width - 1:
                break
            out.append(c)
            used += w
        text = "".join(out) + "…"
    return text + " " * (width - display_width(text))


def _num(v: Any) -> str:
    if not isinstance(v, int | float) or math.isnan(v):
        return "—"
    return f"{v:.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def _with_unit(v: Any, unit: str) -> str:
    s = _num(v)
    return f"{s} {unit}" if unit and s != "—" else s


def headers(lang: Lang = "en") -> tuple[str, ...]:
    tr = translator(lang)
    return tuple(tr.get(h, h) for h in HEADERS)


def _row(r: dict[str, Any], lang: Lang = "en") -> tuple[str, ...]:
    """One journal record; the text in `lang` (the other language's when it has none)."""
    tr = translator(lang)
    ts = r.get("ts")
    when = (
        datetime.fromtimestamp(ts / 1000).strftime("%Y-%m-%d %H:%M:%S")
        if isinstance(ts, int | float)
        else "?"
    )
    unit = str(r.get("unit") or "")
    first, other = ("text_zh", "text_en") if lang == "zh" else ("text_en", "text_zh")
    transition, level = str(r.get("transition", "")), str(r.get("level") or "—")
    return (
        when,
        str(r.get("device", "")),
        str(r.get("point", "")),
        tr.get(transition, transition),
        tr.get(level, level),
        _with_unit(r.get("value"), unit),
        _with_unit(r.get("threshold"), unit),
        str(r.get(first) or r.get(other) or ""),
    )


def format_table(rows: Sequence[tuple[str, ...]], width: int, lang: Lang = "en") -> str:
    """Columns sized to content; the text column gets what is left of `width`."""
    table = [headers(lang), *rows]
    widths = [max(display_width(row[c]) for row in table) for c in range(len(HEADERS))]
    fixed = sum(widths[:-1]) + len(_GAP) * (len(HEADERS) - 1)
    widths[-1] = min(widths[-1], max(width - fixed, _MIN_TEXT))
    lines = []
    for row in table:
        cells = [fit(cell, w) for cell, w in zip(row, widths, strict=True)]
        lines.append(_GAP.join(cells).rstrip())
    return "\n".join(lines)


def _ts_s(r: dict[str, Any]) -> float:
    ts = r.get("ts")
    return ts / 1000 if isinstance(ts, int | float) else -math.inf


def alarms_report(
    directory: Path,
    since: str | None,
    active_only: bool,
    now: float | None = None,
    width: int | None = None,
    *,
    lang: Lang = "en",
) -> str:
    """The journal as a table, oldest first. `active_only`: one row per alarm whose latest
    transition is not a clear. `width` defaults to the terminal's. Raises ValueError for a
    bad `since`. `lang`: the language of the headings, the words and the alarm texts."""
    now = time.time() if now is None else now
    cutoff = parse_since(since, now) if since is not None else -math.inf
    records = list(read_journal(directory))
    zh = lang == "zh"
    if not records:
        if zh:
            return f"{directory} 中尚无报警记录"
        return f"no alarm transitions recorded in {directory} yet"
    if active_only:
        latest: dict[str, dict[str, Any]] = {}
        for r in records:  # journal order is write order: the last one wins
            if r.get("transition") not in ("ack", "shelve", "unshelve"):
                latest[str(r.get("alarm_id"))] = r
        records = [r for r in latest.values() if r.get("transition") != "clear"]
    selected = sorted((r for r in records if _ts_s(r) >= cutoff), key=_ts_s)
    scope = f" since {since}" if since is not None else ""
    if not selected:
        if zh:
            what = "当前报警" if active_only else "报警记录"
            return f"{directory} 中无{what}" + (f"（自 {since} 起）" if since is not None else "")
        what = "active alarms" if active_only else "alarm transitions"
        return f"no {what}{scope} in {directory}"
    if width is None:
        # A terminal gets a table that fits; a pipe or a file gets every character.
        width = shutil.get_terminal_size((200, 24)).columns if sys.stdout.isatty() else 10_000
    table = format_table([_row(r, lang) for r in selected], width, lang)
    if zh:
        what = "条当前报警" if active_only else "条记录"
        return f"{table}\n共 {len(selected)} {what}" + (f"（自 {since} 起）" if since else "")
    noun = "active alarm" if active_only else "transition"
    plural = "" if len(selected) == 1 else "s"
    return f"{table}\n{len(selected)} {noun}{plural}{scope}"


# --- the command: filters, --json, --verify ---------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `dust-agent alarms` beyond --since / --active."""
    p.add_argument("--device", help="only this device (e.g. DC-1)")
    p.add_argument("--point", help="only this point: platform code, or device.key")
    p.add_argument("--kind", help="only this alarm kind (threshold, rate, drop, count, state, ...)")
    p.add_argument("--json", action="store_true", help="JSON lines (the journal records) instead")
    p.add_argument(
        "--verify",
        action="store_true",
        help="check the journal's hash chain. Detects a line removed or edited among the kept "
        "lines; with --anchor (a chain head the platform received), also a rewrite with "
        "recomputed hashes and lines cut off the end before the anchor; with the HMAC key "
        "(storage.journal_hmac_key_file, read when set: run as root), a rewrite by anyone "
        "without the key. Not detected: lines cut off after the newest anchor you give, and "
        "(without anchor or key) a full rewrite. Exit 0 intact, 1 broken, 3 not fully checked",
    )
    p.add_argument(
        "--anchor",
        metavar="LINES:HASH",
        help="a chain head from the platform (alarm records' `journal`, health `journal`)",
    )


def _matches(r: dict[str, Any], args: argparse.Namespace) -> bool:
    if args.device and r.get("device") != args.device:
        return False
    if args.point and args.point not in (r.get("point"), f"{r.get('device')}.{r.get('key')}"):
        return False
    return not (args.kind and r.get("kind", "threshold") != args.kind)


def verify_report(
    directory: Path, key: bytes | None = None, anchor: ChainHead | None = None
) -> tuple[int, str]:
    """The --verify text and exit code: 0 intact, 1 broken, 3 not everything checked."""
    v = verify_journal(directory, key=key, anchor=anchor)
    lines = [
        *(f"BROKEN  {b}" for b in v.breaks),
        *(f"UNCHECKED  {u}" for u in v.unchecked),
        *(f"note    {n}" for n in v.notes),
    ]
    head = f"; head {v.head}" if v.head is not None else ""
    mode = "HMAC-SHA256" if key is not None else "SHA-256"
    if not v.ok:
        verdict = (
            f"journal {directory}: hash chain BROKEN at {len(v.breaks)} place(s) "
            "(records were removed or edited)"
        )
    else:
        verdict = (
            f"journal {directory}: {v.lines} records in {v.files} file(s), {mode} chain intact"
        )
        verdict += f", matches the anchor{head}" if v.anchor_matched else head
        if not v.checked:
            verdict += " (NOT fully checked, see above)"
        elif anchor is None and key is None:
            verdict += (
                " (without --anchor or the HMAC key a full rewrite with recomputed hashes "
                "would also pass)"
            )
    code = 1 if not v.ok else (0 if v.checked else 3)
    return code, "\n".join([*lines, verdict])


def _verify(storage: StorageSpec, args: argparse.Namespace) -> int:
    from agent.config.secrets import SecretError, read_secret

    directory = storage.dir / "journal"
    try:
        anchor = ChainHead.parse(args.anchor) if args.anchor else None
    except ValueError as exc:
        print(f"dust-agent alarms: {exc}", file=sys.stderr)
        return 2
    key = None
    if storage.journal_hmac_key_file is not None:
        try:
            key = read_secret(storage.journal_hmac_key_file).encode()
        except SecretError as exc:
            print(f"dust-agent alarms: HMAC key not read ({exc}); keyed links stay unchecked")
    code, text = verify_report(directory, key, anchor)
    print(text)
    return code


def run_alarms(storage: StorageSpec, args: argparse.Namespace, lang: Lang = "en") -> int:
    """`dust-agent alarms`: exit 0, 1 (--verify found a break), 2 (bad option), 3 (--verify
    could not check everything) or 77 (EX_NOPERM: the journal is not readable)."""
    try:
        return _run_alarms(storage, args, lang)
    except OSError as exc:
        print(
            f"dust-agent alarms: cannot read {exc.filename or storage.dir}: "
            f"{exc.strerror or exc}; run as root or as a member of the operators group "
            "([operator] group, docs/operations.md)",
            file=sys.stderr,
        )
        return EX_NOPERM


def _run_alarms(storage: StorageSpec, args: argparse.Namespace, lang: Lang) -> int:
    directory = storage.dir / "journal"
    if getattr(args, "verify", False):
        return _verify(storage, args)
    try:
        if getattr(args, "json", False) or any(
            getattr(args, a, None) for a in ("device", "point", "kind")
        ):
            now = time.time()
            cutoff = parse_since(args.since, now) if args.since is not None else -math.inf
            records = [r for r in read_journal(directory) if _matches(r, args)]
            if args.active:
                latest: dict[str, dict[str, Any]] = {}
                for r in records:
                    if r.get("transition") not in ("ack", "shelve", "unshelve"):
                        latest[str(r.get("alarm_id"))] = r
                records = [r for r in latest.values() if r.get("transition") != "clear"]
            records = sorted((r for r in records if _ts_s(r) >= cutoff), key=_ts_s)
            if args.json:
                sys.stdout.write("".join(orjson.dumps(r).decode() + "\n" for r in records))
                return 0
            zh = lang == "zh"
            if not records:
                print(
                    f"{directory} 中无匹配的报警记录"
                    if zh
                    else f"no matching alarm transitions in {directory}"
                )
                return 0
            width = shutil.get_terminal_size((200, 24)).columns if sys.stdout.isatty() else 10_000
            print(format_table([_row(r, lang) for r in records], width, lang))
            print(f"共 {len(records)} 条记录" if zh else f"{len(records)} transition(s)")
            return 0
        print(alarms_report(directory, args.since, args.active, lang=lang))
    except ValueError as exc:
        print(f"dust-agent alarms: {exc}", file=sys.stderr)
        return 2
    return 0
