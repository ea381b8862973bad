"""Messages within uplink.max_bytes_per_message: a 5,000-point cycle split by device, seq kept,
alarms split by records, a record too large alone dropped and counted (agent.uplink.sizing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from agent.core.model import Frame, SiteSpec
from agent.uplink.payload import MqttCodec, encode_alarms, encode_telemetry
from agent.uplink.sizing import PUBLISH_OVERHEAD
from tests.factories import point
from tests.unit.test_payload import alarm, as_batch, check

SITE = SiteSpec(enterprise_code="E100", gateway_id="gw-1")
TOPIC = "dust/E100/gw-1/telemetry"
POINTS = [
    point(i, device=f"DC-{i // 25:03d}", key=f"r{i % 25}", code=f"P{i:05d}", unit="kPa")
    for i in range(5000)
]


def cycle(n: int = 5000) -> Frame:
    rng = np.random.default_rng(1)
    return Frame(
        index=np.arange(n, dtype=np.intp),
        ts=np.full(n, 1_700_000_000.123),
        value=rng.normal(100.0, 10.0, n),
        quality=np.zeros(n, dtype=np.uint8),
    )


def codec(limit: int) -> MqttCodec:
    return MqttCodec(SITE, lambda stream: f"dust/E100/gw-1/{stream}", lambda: True, limit)


def test_a_large_cycle_is_split_by_device_within_the_limit_with_every_seq() -> None:
    entry = encode_telemetry(cycle(), POINTS)
    assert len(entry.body) > 4 * 65536  # one stored row of ~300 KB
    c = codec(65536)
    msgs = c.encode(as_batch([entry], seq_first=101))
    assert len(msgs) >= 5
    seqs: list[int] = []
    for m in msgs:
        assert len(m.payload) + len(m.topic.encode()) + PUBLISH_OVERHEAD <= 65536
        doc = check(m.payload, "telemetry")
        recs = doc["records"]
        assert m.items == len(recs["seq"])
        seqs += recs["seq"]
        # cut at device boundaries: each message holds whole devices (25 points each)
        assert len(recs["point"]) % 25 == 0, len(recs["point"])
        assert recs["point"] == [f"P{s - 101:05d}" for s in recs["seq"]]
    assert seqs == list(range(101, 5101))
    assert c.oversize_records == 0


def test_small_batches_stay_one_message() -> None:
    entry = encode_telemetry(cycle(50), POINTS)
    msgs = codec(262144).encode(as_batch([entry, entry, entry]))
    assert len(msgs) == 1 and msgs[0].items == 150


def test_alarm_rows_split_by_records_and_a_record_too_large_alone_is_dropped() -> None:
    events = [alarm(i) for i in range(40)]
    c = codec(2048)
    msgs = c.encode(as_batch([encode_alarms(events)], seq_first=7))
    got: list[dict[str, Any]] = [r for m in msgs for r in orjson.loads(m.payload)["records"]]
    assert [r["seq"] for r in got] == list(range(7, 47))
    assert all(len(m.payload) <= 2048 for m in msgs)
    tiny = codec(400)  # not even one alarm record fits
    assert tiny.encode(as_batch([encode_alarms(events[:3])])) == []
    assert tiny.oversize_records == 3
    assert tiny.encode(as_batch([encode_alarms(events[:3])])) == []  # the batch again
    assert tiny.oversize_records == 3  # reported and counted once
