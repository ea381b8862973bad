"""How `dust-sim demo` prints what reaches the broker: readings per device, alarms, status."""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TextIO

import orjson

SMOULDER_KEY = "hopper_temp"
QUALITY_BITS = {1: "comm fail", 2: "exception", 4: "bad value", 8: "clock unsynced"}
AIRLOCK = {0: "stopped", 1: "running", 2: "FAULT"}

# --- printing what arrives -------------------------------------------------------------------


def _clock(ts_ms: Any) -> str:
    if isinstance(ts_ms, int | float) and math.isfinite(ts_ms):
        return time.strftime("%H:%M:%S", time.localtime(ts_ms / 1000.0))
    return time.strftime("%H:%M:%S")


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def format_reading(key: str, value: Any, unit: str, quality: int) -> str:
    """One point as a short phrase: `hopper 38.2 °C`, `fan on`, `ΔP -- (comm fail)`."""
    labels = {
        "hopper_temp": ("hopper", "{:.1f}"),
        "diff_pressure": ("ΔP", "{:.0f}"),
        "inlet_temp": ("in", "{:.1f}"),
        "outlet_temp": ("out", "{:.1f}"),
        "pulse_pressure": ("pulse", "{:.2f}"),
        "spark_count": ("sparks", "{:.0f}"),
    }
    v = _num(value)
    bad = quality & 7
    if key == "fan_running":
        label, text = "fan", "on" if v == 1 else "OFF" if v == 0 else "?"
    elif key == "airlock_state":
        label, text = "air-lock", AIRLOCK.get(int(v), f"state {v:g}") if v is not None else "?"
    else:
        label, fmt = labels.get(key, (key, "{:g}"))
        text = fmt.format(v) + (f" {unit}" if unit else "") if v is not None else "--"
    if bad or v is None:
        why = ", ".join(name for bit, name in QUALITY_BITS.items() if quality & bit) or "no value"
        return f"{label} -- ({why})"
    return f"{label} {text}"


def _short(v: Any) -> str:
    """A number for people: 63.0678 -> 63.07, 1250.0 -> 1250."""
    x = _num(v)
    return "--" if x is None else f"{round(x, 2):g}"


def _quality(record: Mapping[str, Any]) -> int:
    q = record.get("quality")
    return q if isinstance(q, int) else 0


def _columns(records: Any) -> list[dict[str, Any]]:
    """Telemetry records as a list of dicts, from the columnar form or a list of objects."""
    if isinstance(records, list):
        return [r for r in records if isinstance(r, dict)]
    if not isinstance(records, dict):
        return []
    cols = {k: v for k, v in records.items() if isinstance(v, list)}
    n = max((len(v) for v in cols.values()), default=0)
    return [{k: (v[i] if i < len(v) else None) for k, v in cols.items()} for i in range(n)]


@dataclass
class Tally:
    messages: Counter[str] = field(default_factory=Counter)
    readings: int = 0
    good_readings: int = 0
    devices: set[str] = field(default_factory=set)
    alarms: list[dict[str, Any]] = field(default_factory=list)  # every alarm record
    offline_seen: bool = False

    def raised(self) -> list[dict[str, Any]]:
        return [a for a in self.alarms if a.get("transition") in ("raise", "escalate")]

    def smoulder_alarm(self) -> dict[str, Any] | None:
        for a in self.alarms:
            if (
                a.get("transition") == "raise"
                and a.get("key") == SMOULDER_KEY
                and a.get("level") in ("warning", "alarm")
            ):
                return a
        return None


class Printer:
    """Turns MQTT messages into readable lines and keeps the tally."""

    def __init__(self, out: TextIO = sys.stdout, color: bool | None = None) -> None:
        self.out = out
        self.color = out.isatty() if color is None else color
        self.tally = Tally()
        self.max_lines_per_message = 12

    def _paint(self, text: str, code: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.color else text

    def _print(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def handle(self, topic: str, payload: bytes) -> None:
        stream = topic.rsplit("/", 1)[-1]
        try:
            msg: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            msg = payload.decode("utf-8", "replace")
        if isinstance(msg, dict) and isinstance(msg.get("stream"), str):
            stream = msg["stream"]
        self.tally.messages[stream] += 1
        records = msg.get("records") if isinstance(msg, dict) else None
        if stream == "telemetry":
            self._telemetry(records, bool(isinstance(msg, dict) and msg.get("backfill")))
        elif stream == "alarm":
            for rec in records if isinstance(records, list) else []:
                if isinstance(rec, dict):
                    self._alarm(rec)
        elif stream == "status":
            self._status(topic, msg)
        else:
            text = orjson.dumps(msg).decode() if not isinstance(msg, str) else msg
            label = stream.upper() if stream in ("event", "health") else topic
            self._print(self._paint(f"{time.strftime('%H:%M:%S')} --- {label} {text[:200]}", "2"))

    def _telemetry(self, records: Any, backfill: bool) -> None:
        rows = _columns(records)
        groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        for r in rows:
            self.tally.readings += 1
            quality = _quality(r)
            if _num(r.get("value")) is not None and not quality & 7:
                self.tally.good_readings += 1
            device = str(r.get("device") or r.get("point") or "?")
            self.tally.devices.add(device)
            groups.setdefault((device, r.get("ts")), []).append(r)
        mark = " (backfill)" if backfill else ""
        for n, ((device, ts), recs) in enumerate(groups.items()):
            if n == self.max_lines_per_message:
                self._print(f"         ... {len(groups) - n} more device readings in this message")
                break
            parts = [
                format_reading(
                    str(r.get("key") or r.get("point")),
                    r.get("value"),
                    str(r.get("unit") or ""),
                    _quality(r),
                )
                for r in recs
            ]
            self._print(f"{_clock(ts)} {device:<6} " + "  ".join(parts) + mark)

    def _alarm(self, rec: dict[str, Any]) -> None:
        self.tally.alarms.append(rec)
        transition = str(rec.get("transition", "?"))
        level = str(rec.get("level") or rec.get("prev_level") or "")
        unit = str(rec.get("unit") or "")
        value, threshold = _num(rec.get("value")), _num(rec.get("threshold"))
        high = rec.get("direction") != "low"
        op = ("<" if high else ">") if transition == "clear" else ("≥" if high else "≤")
        texts = " / ".join(str(rec[k]) for k in ("text_zh", "text_en") if rec.get(k))
        cmp = ""
        if value is not None:
            cmp = f"{_short(value)} {unit}".rstrip()
            if threshold is not None:
                cmp += f" {op} {_short(threshold)} {unit}".rstrip()
        line = (
            f"{_clock(rec.get('ts'))} *** ALARM {transition.upper()}  {rec.get('device', '?')} "
            f"{rec.get('key', rec.get('point', '?'))}  {texts}  {cmp} ({level})"
        )
        code = "32;1" if transition == "clear" else "31;1" if level == "alarm" else "33;1"
        self._print(self._paint(line, code))

    def _status(self, topic: str, msg: Any) -> None:
        state = msg
        if isinstance(msg, dict):
            state = msg.get("state") or msg.get("status") or orjson.dumps(msg).decode()
        if state == "offline":
            self.tally.offline_seen = True
        self._print(self._paint(f"{time.strftime('%H:%M:%S')} --- STATUS {topic}: {state}", "36"))

    def summary(self, elapsed: float) -> list[str]:
        t = self.tally
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(t.messages.items())) or "none"
        lines = [
            f"dust-sim demo: summary after {elapsed:.1f} s",
            f"  MQTT messages: {sum(t.messages.values())} ({kinds})",
            f"  readings: {t.readings} ({t.good_readings} good)"
            + (f" from {', '.join(sorted(t.devices))}" if t.devices else ""),
        ]
        raised = t.raised()
        lines.append(f"  alarms raised: {len(raised)}")
        for a in raised:
            lines.append(
                f"    {_clock(a.get('ts'))} {a.get('device', '?')} {a.get('key', '?')} "
                f"{a.get('level', '?')} at {_short(a.get('value'))} {a.get('unit') or ''}".rstrip()
            )
        return lines
