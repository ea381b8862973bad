"""Decoder against pymodbus's own convert_from_registers, for every type and byte/word order."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.client import AsyncModbusTcpClient as Client

from agent.core.model import DATA_TYPES, REGISTER_WIDTH, WORD_ORDERS, DataType, WordOrder
from agent.source.decode import Decoder, DecodeSpec

_PM_TYPE = {
    "uint16": Client.DATATYPE.UINT16,
    "int16": Client.DATATYPE.INT16,
    "uint32": Client.DATATYPE.UINT32,
    "int32": Client.DATATYPE.INT32,
    "float32": Client.DATATYPE.FLOAT32,
    "uint64": Client.DATATYPE.UINT64,
    "int64": Client.DATATYPE.INT64,
    "float64": Client.DATATYPE.FLOAT64,
}


def _swap(r: int) -> int:
    return ((r & 0xFF) << 8) | (r >> 8)


def reference(regs: list[int], dtype: DataType, order: WordOrder) -> float:
    """pymodbus handles only word order; byte-swapped layouts are swapped back first."""
    if order in ("BADC", "DCBA"):
        regs = [_swap(r) for r in regs]
    word_order: Literal["big", "little"] = "little" if order in ("CDAB", "DCBA") else "big"
    value = Client.convert_from_registers(regs, _PM_TYPE[dtype], word_order=word_order)
    assert isinstance(value, int | float)
    if dtype == "float32":
        return float(np.float32(value))
    return float(value)


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


points_st = st.lists(
    st.tuples(
        st.sampled_from(DATA_TYPES),
        st.sampled_from(WORD_ORDERS),
        st.integers(0, 28),  # word offset; points may share registers
    ),
    min_size=1,
    max_size=25,
)


@given(points=points_st, words=st.lists(st.integers(0, 0xFFFF), min_size=32, max_size=32))
def test_matches_pymodbus(points: list[tuple[DataType, WordOrder, int]], words: list[int]) -> None:
    buf = np.array(words, dtype=np.uint16)
    dec = Decoder([DecodeSpec(w, t, o) for t, o, w in points])
    out = dec.decode(buf)
    assert out.dtype == np.float64 and out.shape == (len(points),)
    for got, (t, o, w) in zip(out, points, strict=True):
        want = reference(words[w : w + REGISTER_WIDTH[t]], t, o)
        assert _same(float(got), want), (t, o, w, got, want)


@pytest.mark.parametrize("dtype", DATA_TYPES)
@pytest.mark.parametrize("order", WORD_ORDERS)
@given(words=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4))
def test_every_type_and_order(dtype: DataType, order: WordOrder, words: list[int]) -> None:
    out = Decoder([DecodeSpec(0, dtype, order)]).decode(np.array(words, dtype=np.uint16))
    assert _same(float(out[0]), reference(words[: REGISTER_WIDTH[dtype]], dtype, order))


@given(
    words=st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
    dtype=st.sampled_from(DATA_TYPES),
    order=st.sampled_from(WORD_ORDERS),
    scale=st.floats(-1e3, 1e3, allow_nan=False),
    offset=st.floats(-1e6, 1e6, allow_nan=False),
)
def test_scale_and_offset(
    words: list[int], dtype: DataType, order: WordOrder, scale: float, offset: float
) -> None:
    dec = Decoder([DecodeSpec(0, dtype, order, scale, offset), DecodeSpec(0, dtype, order)])
    out = dec.decode(np.array(words, dtype=np.uint16))
    raw = reference(words[: REGISTER_WIDTH[dtype]], dtype, order)
    assert _same(float(out[1]), raw)
    if math.isfinite(raw):
        want = raw * scale + offset
        assert _same(float(out[0]), want) or not math.isfinite(want)
    else:
        assert not math.isfinite(out[0])


def test_known_values() -> None:
    buf = np.array([0xDA77, 0xFB41, 0xFFFF, 0x0000, 0x0001, 0x7FC0, 0x0000], dtype=np.uint16)
    dec = Decoder(
        [
            DecodeSpec(0, "float32", "DCBA"),  # the example from pymodbus issue #2616
            DecodeSpec(2, "int16", "ABCD"),
            DecodeSpec(2, "uint16", "ABCD"),
            DecodeSpec(3, "uint32", "ABCD"),
            DecodeSpec(3, "uint32", "CDAB"),
            DecodeSpec(4, "uint16", "BADC", scale=0.5, offset=-1.0),
            DecodeSpec(5, "float32", "ABCD"),
            DecodeSpec(2, "int32", "ABCD"),
        ]
    )
    out = dec.decode(buf)
    assert out[0] == pytest.approx(31.4335, abs=1e-3)
    assert out[1:6].tolist() == [-1.0, 65535.0, 1.0, 65536.0, 127.0]
    assert math.isnan(out[6])  # left for the caller to flag BAD_VALUE
    assert out[7] == -65536.0


def test_out_parameter_and_short_buffer() -> None:
    dec = Decoder([DecodeSpec(3, "float32", "ABCD")])
    assert dec.min_buffer == 5
    out = np.zeros(1)
    assert dec.decode(np.zeros(5, dtype=np.uint16), out=out) is out
    with pytest.raises(ValueError, match="need 5"):
        dec.decode(np.zeros(4, dtype=np.uint16))


def test_empty_decoder() -> None:
    assert Decoder([]).decode(np.zeros(0, dtype=np.uint16)).shape == (0,)


def test_signalling_nan_decodes_quietly() -> None:
    buf = np.array([0x7F81, 0x0000, 0xFF81, 0x0001], dtype=np.uint16)  # float32 sNaN patterns
    out = Decoder(
        [DecodeSpec(0, "float32", "ABCD"), DecodeSpec(2, "float32", "ABCD", 2.0, 1.0)]
    ).decode(buf)
    assert np.isnan(out).all()


def test_bit_fields() -> None:
    buf = np.array([0b1010_0000_0000_1001, 0x0100], dtype=np.uint16)
    specs = [DecodeSpec(0, "uint16", "ABCD", bit=b) for b in (0, 1, 3, 13, 15)]
    specs += [DecodeSpec(1, "uint16", "BADC", bit=0), DecodeSpec(1, "uint16", "ABCD", bit=8)]
    out = Decoder(specs).decode(buf)
    assert out.tolist() == [1, 0, 1, 1, 1, 1, 1]
