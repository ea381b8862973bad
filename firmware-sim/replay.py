"""`dust-sim replay CAPTURE --config SITE.toml`: serve values recorded from a plant through the
site's register map, at real (`--speed 1`) or accelerated speed.

A capture is either
- JSON lines of the agent's telemetry messages as they arrive over MQTT (what
  `mosquitto_sub -t 'dust/+/+/telemetry'` prints: one payload a line, `records` columnar with
  `point`, `ts` (ms), `value`, `quality`); a line may also be `{"topic": ..., "payload": {...}}`;
- or a CSV with a header `point,time,value` (time: epoch seconds, epoch ms, or ISO 8601).

Points are matched by their code (`point`), or by `DEVICE.KEY`. Each point serves its latest
recorded good value at capture time `start + t x speed` (readings with a non-zero quality or no
value are skipped: the previous value holds); before its first record it serves its first
value, after the end its last (or the capture starts over with `loop`). Points the capture does
not hold keep their normal signal.
"""

from __future__ import annotations

import bisect
import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from firmware_sim.site import SiteModel
from firmware_sim.timeline import PointTrack


@dataclass
class Series:
    times: list[float]  # epoch seconds, ascending
    values: list[float]

    def at(self, when: float) -> float:
        i = bisect.bisect_right(self.times, when) - 1
        return self.values[max(i, 0)]


def _records(body: Any) -> Iterator[tuple[str, float, float]]:
    if isinstance(body, dict) and "payload" in body and "records" not in body:
        body = body["payload"]
    cols = body.get("records") if isinstance(body, dict) else None
    if not isinstance(cols, dict) or "point" not in cols:
        return
    quality = cols.get("quality") or [0] * len(cols["point"])
    for point, ts, value, q in zip(cols["point"], cols["ts"], cols["value"], quality, strict=False):
        if value is not None and not q:
            yield str(point), float(ts) / 1000.0, float(value)


def _csv_time(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()
    return t / 1000.0 if t > 1e11 else t  # epoch ms vs epoch s


def _csv_records(path: Path) -> Iterator[tuple[str, float, float]]:
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            if row.get("value") not in (None, ""):
                yield row["point"], _csv_time(row["time"]), float(row["value"])


def load_capture(path: Path) -> dict[str, Series]:
    """point code -> its recorded series."""
    rows: list[tuple[str, float, float]] = []
    if path.suffix.lower() == ".csv":
        rows = list(_csv_records(path))
    else:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.extend(_records(orjson.loads(line)))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{n}: not a telemetry message ({exc})") from None
    out: dict[str, Series] = {}
    for point, t, v in sorted(rows, key=lambda r: r[1]):
        s = out.setdefault(point, Series([], []))
        s.times.append(t)
        s.values.append(v)
    if not out:
        raise ValueError(f"{path}: no readings found")
    return out


def apply_capture(model: SiteModel, capture: dict[str, Series], *, loop: bool = False) -> int:
    """Serve the capture's points from `model`; returns how many points matched."""
    start = min(s.times[0] for s in capture.values())
    end = max(s.times[-1] for s in capture.values())
    length = max(end - start, 1e-3)
    matched = 0
    for p in model.cfg.points:
        series = capture.get(p.code) or capture.get(f"{p.device}.{p.key}")
        if series is None:
            continue

        def value(s: float, series: Series = series) -> float:
            offset = s % length if loop else s
            return series.at(start + offset)

        model.tracks[p.index] = PointTrack(value)
        matched += 1
    if not matched:
        raise ValueError("the capture holds none of the config's points")
    return matched
