"""encode_telemetry with its cached static columns (issue 16) writes the same bytes as
orjson.dumps of the whole column dict (values rounded to the wire), for the cached (read-only
index) and uncached paths, and follows a new point set (a reload) instead of reusing the old
columns."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import orjson

from agent.core.decimals import WireRounding
from agent.core.model import Frame, PointSpec
from agent.uplink.payload import TELEMETRY_COLUMNS, encode_telemetry
from tests.factories import point as make_point


def reference(frame: Frame, points: list[PointSpec]) -> bytes:
    specs = [points[i] for i in frame.index.tolist()]
    # rounded as on the wire (agent.core.decimals has its own hand-written cases)
    value = WireRounding(points).apply(frame.index, frame.value)
    value[~np.isfinite(value)] = np.nan
    return orjson.dumps(
        {
            "point": [p.code for p in specs],
            "device": [p.device for p in specs],
            "key": [p.key for p in specs],
            "ts": np.rint(frame.ts * 1000.0).astype(np.int64).tolist(),
            "value": value.tolist(),
            "quality": frame.quality.astype(np.int64).tolist(),
            "unit": [p.unit for p in specs],
        }
    )


def frame(index: np.ndarray, seed: int) -> Frame:
    rng = np.random.default_rng(seed)
    n = len(index)
    value = rng.normal(size=n) * 1e4
    value[::3] = np.nan
    value[1] = np.inf
    ts = 1.75e9 + rng.random(n)
    quality = rng.integers(0, 256, n).astype(np.uint8)
    return Frame(index=index, ts=ts, value=value, quality=quality, bus="b")


def test_cached_columns_give_the_reference_bytes_cycle_after_cycle() -> None:
    points = [make_point(i, unit="°C" if i % 2 else "Pa", device=f"DC-{i // 3}") for i in range(7)]
    index = np.array([1, 2, 4, 6], dtype=np.intp)
    index.flags.writeable = False  # as a bus plan's point_index
    for seed in range(3):
        f = frame(index, seed)
        assert encode_telemetry(f, points).body == reference(f, points)
    assert list(orjson.loads(encode_telemetry(f, points).body)) == list(TELEMETRY_COLUMNS)


def test_a_new_point_set_is_encoded_afresh() -> None:
    points = [make_point(i) for i in range(3)]
    index = np.arange(3, dtype=np.intp)
    index.flags.writeable = False
    f = frame(index, 1)
    assert encode_telemetry(f, points).body == reference(f, points)
    renamed = [replace(p, code=f"NEW{p.index}", unit="m") for p in points]
    assert encode_telemetry(f, renamed).body == reference(f, renamed)


def test_a_writable_index_is_not_cached_and_still_right() -> None:
    points = [make_point(i) for i in range(4)]
    index = np.array([0, 3], dtype=np.intp)
    f = frame(index, 2)
    assert encode_telemetry(f, points).body == reference(f, points)
    index[1] = 2  # changed in place: must not reuse columns encoded for the old contents
    assert encode_telemetry(f, points).body == reference(f, points)
