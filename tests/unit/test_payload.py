"""Payload encoding: entries, merged messages with seq, and conformance to docs/schema."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.core.model import AlarmEvent, Frame, PointSpec, Quality, SiteSpec
from agent.store.outbox import Batch, Entry, Row, event_body
from agent.uplink.payload import (
    TELEMETRY_COLUMNS,
    build_message,
    build_status,
    encode_alarms,
    encode_event,
    encode_telemetry,
    merge_columns,
)
from tests.factories import point as make_point

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schema"
SITE = SiteSpec(enterprise_code="E100", gateway_id="gw-1")

# -- a small validator for the JSON Schema subset our schemas use ------------------------------
# (no jsonschema dependency; an unknown keyword fails, so the subset cannot drift silently)

_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "$comment"}
_TYPES: dict[str, Any] = {
    "object": dict,
    "array": list,
    "string": str,
    "boolean": bool,
    "null": type(None),
}


def _is_type(value: Any, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, _TYPES[name])


def validate(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> None:
    for kw, arg in schema.items():
        if kw in _ANNOTATIONS:
            continue
        if kw == "$ref":
            m = re.fullmatch(r"#/\$defs/(\w+)", arg)
            assert m, f"unsupported $ref {arg}"
            validate(value, root["$defs"][m.group(1)], root, path)
        elif kw == "type":
            names = arg if isinstance(arg, list) else [arg]
            assert any(_is_type(value, n) for n in names), f"{path}: {value!r} is not {arg}"
        elif kw == "const":
            assert value == arg and type(value) is type(arg), f"{path}: {value!r} != {arg!r}"
        elif kw == "enum":
            assert value in arg, f"{path}: {value!r} not in {arg}"
        elif kw in {"required", "additionalProperties"} and not isinstance(value, dict):
            continue  # as in JSON Schema: object keywords say nothing about other types
        elif kw == "required":
            missing = [k for k in arg if k not in value]
            assert not missing, f"{path}: missing {missing}"
        elif kw == "properties":
            for k, sub in arg.items():
                if isinstance(value, dict) and k in value:
                    validate(value[k], sub, root, f"{path}.{k}")
        elif kw == "additionalProperties":
            assert arg is False, "only additionalProperties: false is supported"
            extra = set(value) - set(schema.get("properties", {}))
            assert not extra, f"{path}: unexpected {sorted(extra)}"
        elif kw == "items":
            for i, item in enumerate(value):
                validate(item, arg, root, f"{path}[{i}]")
        elif kw == "minItems":
            assert len(value) >= arg, f"{path}: fewer than {arg} items"
        elif kw == "pattern":
            assert re.search(arg, value), f"{path}: {value!r} does not match {arg}"
        elif kw == "minLength":
            assert len(value) >= arg, f"{path}: shorter than {arg}"
        elif kw == "minimum":
            assert value >= arg, f"{path}: {value} < {arg}"
        elif kw == "maximum":
            assert value <= arg, f"{path}: {value} > {arg}"
        else:
            raise AssertionError(f"validator does not support keyword {kw!r}")


def check(message: bytes, schema_name: str) -> dict[str, Any]:
    schema = orjson.loads((SCHEMAS / f"{schema_name}.schema.json").read_bytes())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    doc: dict[str, Any] = orjson.loads(message)
    validate(doc, schema, schema)
    return doc


# -- fixtures ----------------------------------------------------------------------------------


def point(index: int, code: str, unit: str = "°C") -> PointSpec:
    return make_point(
        index, device=f"dc{index // 2}", key=f"k{index}", code=code, name_zh="温度",
        name_en="temperature", bus="b1", table="holding", unit=unit, kind="hopper_temperature",
    )  # fmt: skip


POINTS = [point(0, "P0"), point(1, "P1", "kPa"), point(2, "P2")]


def frame(ts: float, values: list[float], quality: list[int]) -> Frame:
    return Frame(
        index=np.array([0, 1, 2][: len(values)], dtype=np.intp),
        ts=np.full(len(values), ts),
        value=np.array(values, dtype=np.float64),
        quality=np.array(quality, dtype=np.uint8),
    )


def alarm(i: int, transition: str = "raise") -> AlarmEvent:
    return AlarmEvent(
        alarm_id=f"P0:high:{i}",
        point="P0",
        device="dc0",
        key="k0",
        direction="high",
        transition=transition,  # type: ignore[arg-type]
        level="alarm" if transition != "clear" else None,
        prev_level=None if transition == "raise" else "alarm",
        value=81.5,
        threshold=80.0,
        unit="°C",
        ts=1_700_000_000.123 + i,
        text_zh="料仓温度高报警",
        text_en="hopper temperature high alarm",
    )


def as_batch(entries: list[Entry], seq_first: int = 1) -> Batch:
    rows, seq = [], seq_first
    for i, e in enumerate(entries):
        rows.append(Row(id=i + 1, seq_first=seq, n=e.n, body=e.body, ts=e.ts))
        seq += e.n
    return Batch(entries[0].stream, tuple(rows))


# -- tests -------------------------------------------------------------------------------------


def test_encode_telemetry_columns_nan_as_null() -> None:
    bad = int(Quality.COMM_FAIL | Quality.CLOCK_UNSYNCED)
    e = encode_telemetry(frame(1_700_000_000.5, [20.25, math.nan, math.inf], [0, bad, 4]), POINTS)
    assert e.stream == "telemetry" and e.n == 3 and e.ts == 1_700_000_000.5
    cols = orjson.loads(e.body)
    assert set(cols) == set(TELEMETRY_COLUMNS)
    assert cols["point"] == ["P0", "P1", "P2"]
    assert cols["ts"] == [1_700_000_000_500] * 3
    assert cols["value"] == [20.25, None, None]
    assert cols["quality"] == [0, 9, 4]
    assert cols["unit"] == ["°C", "kPa", "°C"]


def test_telemetry_message_merges_rows_with_seq_and_matches_schema() -> None:
    e1 = encode_telemetry(frame(1_700_000_000.0, [1.0, 2.0, 3.0], [0, 0, 0]), POINTS)
    e2 = encode_telemetry(frame(1_700_000_001.0, [4.0, math.nan], [0, 1]), POINTS)
    msg = build_message(SITE, as_batch([e1, e2], seq_first=41), backfill=True, sent=1.5)
    doc = check(msg, "telemetry")
    assert doc["v"] == 1 and doc["enterprise"] == "E100" and doc["gateway"] == "gw-1"
    assert doc["backfill"] is True and doc["sent"] == 1500 and doc["clock_synced"] is True
    rec = doc["records"]
    assert rec["seq"] == [41, 42, 43, 44, 45]
    assert rec["value"] == [1.0, 2.0, 3.0, 4.0, None]
    assert {len(col) for col in rec.values()} == {5}  # columns line up (not in the schema)


def test_alarm_message_has_seq_per_record_and_matches_schema() -> None:
    e1 = encode_alarms([alarm(0), alarm(1, "escalate")])
    e2 = encode_alarms([alarm(2, "clear")])
    assert e1.stream == "alarm" and e1.n == 2
    doc = check(build_message(SITE, as_batch([e1, e2], 7), backfill=False), "alarm")
    assert [r["seq"] for r in doc["records"]] == [7, 8, 9]
    assert doc["records"][2]["level"] is None
    assert doc["records"][0]["ts"] == 1_700_000_000_123
    assert doc["records"][0] == {"seq": 7, **alarm(0).to_record()}


def test_event_message() -> None:
    e = encode_event("clock_jump", {"delta_s": -3600.0}, ts=1_700_000_000.0)
    assert e.stream == "event" and e.n == 1
    assert e.body == event_body("clock_jump", {"delta_s": -3600.0}, 1_700_000_000.0)
    doc = check(build_message(SITE, as_batch([e], 3), backfill=False), "event")
    assert doc["stream"] == "event"
    assert doc["records"] == [
        {"seq": 3, "kind": "clock_jump", "ts": 1_700_000_000_000, "data": {"delta_s": -3600.0}}
    ]


@pytest.mark.parametrize(("state", "reason"), [("online", "connected"), ("offline", "lost")])
def test_status_matches_schema(state: str, reason: str) -> None:
    doc = check(build_status(SITE, state, version="0.1.0", reason=reason), "status")  # type: ignore[arg-type]
    assert doc["state"] == state and doc["gateway"] == "gw-1"


def test_validator_rejects_bad_messages() -> None:
    good = encode_telemetry(frame(1.0, [1.0], [0]), POINTS)
    doc = orjson.loads(build_message(SITE, as_batch([good]), backfill=False))
    for broken in (
        {**doc, "v": 2},
        {**doc, "extra": 1},
        {k: v for k, v in doc.items() if k != "sent"},
        {**doc, "records": {**doc["records"], "quality": [256]}},
    ):
        with pytest.raises(AssertionError):
            check(orjson.dumps(broken), "telemetry")


_NASTY = st.text(alphabet='ab],"[:{}\\\n\x00€', max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(_NASTY, _NASTY, st.floats(allow_nan=True), st.integers(0, 255)),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=4,
    ),
    st.integers(1, 10**12),
)
def test_spliced_telemetry_equals_the_parsed_merge(
    rows_spec: list[list[tuple[str, str, float, int]]], seq_first: int
) -> None:
    """The byte splice (no JSON parse) gives exactly what parsing and merging would."""
    entries = []
    for recs in rows_spec:
        body = orjson.dumps(
            {
                "point": [r[0] for r in recs],
                "device": [r[1] for r in recs],
                "key": ["k"] * len(recs),
                "ts": [1] * len(recs),
                "value": [r[2] for r in recs],
                "quality": [r[3] for r in recs],
                "unit": [r[1] + r[0] for r in recs],
            }
        )
        entries.append(Entry("telemetry", len(recs), body, 1.0))
    batch = as_batch(entries, seq_first)
    doc = orjson.loads(build_message(SITE, batch, backfill=False))
    assert doc["records"] == merge_columns(batch)
