"""Wire values at each point's resolution: registers -> Decoder -> Frame -> telemetry bytes, and
alarm values, compared with hand-written JSON text (no float noise)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.core.decimals import (
    WireRounding,
    decimals_of,
    event_numbers,
    round_measure,
    shortest_f32,
)
from agent.core.model import Frame, PointSpec
from agent.rules.texts import make_event
from agent.source.decode import Decoder, DecodeSpec
from agent.uplink.payload import encode_telemetry
from tests.factories import point

# (point fields, registers on the wire, the value as the wire must write it)
CASES: list[tuple[dict[str, object], list[int], str]] = [
    ({"type": "int16", "scale": 0.1}, [0xFFD9], "-3.9"),  # -39 x 0.1
    ({"type": "int16", "scale": 0.1}, [0x0007], "0.7"),  # 7 x 0.1 = 0.7000000000000001
    ({"type": "uint16", "scale": 0.01}, [0x0D05], "33.33"),  # 3333 x 0.01
    ({"type": "uint16", "scale": 0.1, "offset": -40.0}, [0x0177], "-2.5"),  # 375 x 0.1 - 40
    ({"type": "int16", "scale": 0.1}, [0x0000], "0.0"),
    ({"type": "int16", "scale": 0.1}, [0xFFFF], "-0.1"),
    ({"type": "uint16", "scale": 0.25}, [0x0003], "0.75"),
    ({"type": "uint16"}, [0x1234], "4660"),
    ({"type": "uint32", "scale": 0.001}, [0x0001, 0xE240], "123.456"),  # 123456 x 0.001
    ({"type": "float32"}, [0x427C, 0x9CAC], "63.153"),
    ({"type": "float32"}, [0xBDCC, 0xCCCD], "-0.1"),
    ({"type": "float32"}, [0x3E99, 0x999A], "0.3"),
    ({"type": "float32"}, [0x3727, 0xC5AC], "1e-5"),
    ({"type": "float32"}, [0x47F1, 0x2065], "123456.79"),
    ({"type": "float32", "decimals": 1}, [0x427C, 0x9CAC], "63.2"),
    ({"type": "int16", "scale": 0.1, "decimals": 0}, [0xFFD9], "-4.0"),
    ({"type": "uint16", "bit": 3}, [0x0008], "1.0"),
    ({"type": "float64"}, [0x3FB9, 0x9999, 0x9999, 0x999A], "0.1"),
]


def _points() -> list[PointSpec]:
    return [point(i, **fields) for i, (fields, _, _) in enumerate(CASES)]


def _decode(points: list[PointSpec]) -> Frame:
    regs: list[int] = []
    specs = []
    for p, (_, words, _) in zip(points, CASES, strict=True):
        specs.append(
            DecodeSpec(
                len(regs), p.type, p.order, p.scale, p.offset, -1 if p.bit is None else p.bit
            )
        )
        regs += words
    values = Decoder(specs).decode(np.array(regs, dtype=np.uint16))
    n = len(points)
    return Frame(
        index=np.arange(n, dtype=np.intp),
        ts=np.full(n, 1.7e9),
        value=values,
        quality=np.zeros(n, dtype=np.uint8),
    )


def test_wire_text_by_hand() -> None:
    points = _points()
    frame = _decode(points)
    assert frame.value[0] == -3.9000000000000004  # the decode itself carries the noise
    body = encode_telemetry(frame, points).body
    values = orjson.loads(body)["value"]
    assert values == [float(w) for (_, _, w) in CASES]
    raw = body[body.index(b'"value":[') + 9 : body.index(b'],"quality"')].decode()
    assert "0000000" not in raw and "9999999" not in raw
    assert raw.startswith("-3.9,0.7,33.33,-2.5,0.0,-0.1,0.75,4660.0,123.456,63.153,-0.1,0.3,")


def test_a_subset_frame_uses_each_points_own_rounding() -> None:
    points = _points()
    full = _decode(points)
    idx = np.array([9, 0], dtype=np.intp)
    frame = Frame(idx, full.ts[idx], full.value[idx], full.quality[idx])
    assert orjson.loads(encode_telemetry(frame, points).body)["value"] == [63.153, -3.9]


def test_nan_and_infinity_stay_null() -> None:
    points = [point(0, type="int16", scale=0.1), point(1)]
    frame = Frame(
        np.arange(2, dtype=np.intp),
        np.full(2, 1.7e9),
        np.array([np.nan, np.inf]),
        np.array([1, 4], dtype=np.uint8),
    )
    assert orjson.loads(encode_telemetry(frame, points).body)["value"] == [None, None]


@pytest.mark.parametrize(
    ("scale", "expected"), [(1.0, 0), (0.1, 1), (0.25, 2), (0.001, 3), (10.0, 0), (1 / 3, 9)]
)
def test_decimals_of_a_scale(scale: float, expected: int) -> None:
    assert decimals_of(scale) == expected


def test_shortest_float32_by_hand() -> None:
    x = np.array([63.15299987792969, 9.999999747378752e-06, 123456.7890625, -1.5, 0.0, np.nan])
    got = shortest_f32(x)
    assert got[:5].tolist() == [63.153, 1e-05, 123456.79, -1.5, 0.0]
    assert np.isnan(got[5])


def test_alarm_values_on_the_wire() -> None:
    temp = point(0, type="int16", scale=0.1, unit="°C", code="T1")
    # a threshold alarm carries the reading: at the point's resolution
    ev = make_event(temp, "high", 0, 2, value=60.300000000000004, threshold=60.0, ts=1.7e9)
    rec = ev.to_record()
    assert (rec["value"], rec["threshold"]) == (60.3, 60.0)
    assert b'"value":60.3,' in orjson.dumps(rec)
    # a rate alarm carries its measure in °C/min: six significant digits
    assert event_numbers(temp, 2.5000000000000004, 2.0, "°C/min") == (2.5, 2.0)
    assert round_measure(0.033333333333333) == 0.0333333


@given(st.floats(width=32, allow_nan=False, allow_infinity=False))
def test_shortest_float32_agrees_with_numpys_float32_repr(f: float) -> None:
    # numpy prints a float32 with its shortest round-tripping digits (Dragon4)
    want = float(np.format_float_positional(np.float32(f), unique=True, trim="-"))
    assert shortest_f32(np.array([f]))[0] == want


@given(st.integers(-32768, 32767), st.sampled_from([1, 10, 100, 1000]))
def test_scaled_integers_are_the_nearest_float_to_the_decimal(raw: int, per: int) -> None:
    p = point(0, type="int16", scale=1 / per)
    got = WireRounding([p]).apply(np.array([0], dtype=np.intp), np.array([raw * (1 / per)]))
    assert got[0] == float(Fraction(raw, per))  # correctly rounded: its repr is the decimal
