"""Drain benchmark: records/s delivered to a local mosquitto while a backlog of 1 M records
drains (rows deleted after each PUBACK), and the latency of alarms raised during the drain.

    .venv/bin/python bench/drain.py [--records 1000000] [--per-row 1000] [--runs 3]

Prints the median drain rate over runs and the median alarm latency; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent.core.model import AlarmEvent, SiteSpec, UplinkSpec  # noqa: E402
from agent.store.outbox import Entry, Outbox  # noqa: E402
from agent.uplink.forwarder import mqtt_forwarder  # noqa: E402
from agent.uplink.mqtt import MqttUplink  # noqa: E402
from agent.uplink.payload import encode_alarms  # noqa: E402
from firmware_sim.harness import Broker  # noqa: E402

SITE = SiteSpec("BENCH", "GW")
ALARMS = 9


def row_body(n: int) -> bytes:
    return orjson.dumps(
        {
            "point": [f"DC-{i // 20 + 1}.p{i % 20:02d}" for i in range(n)],
            "device": [f"DC-{i // 20 + 1}" for i in range(n)],
            "key": [f"p{i % 20:02d}" for i in range(n)],
            "ts": [1_700_000_000_000 + i for i in range(n)],
            "value": [20.0 + (i % 97) * 0.25 for i in range(n)],
            "quality": [0] * n,
            "unit": ["°C"] * n,
        }
    )


def an_alarm() -> AlarmEvent:
    return AlarmEvent(
        alarm_id="DC-1.p00:high", point="DC-1.p00", device="DC-1", key="p00",
        direction="high", transition="raise", level="alarm", prev_level=None, value=81.0,
        threshold=70.0, unit="°C", ts=time.time(), text_zh="灰斗温度高报警",
        text_en="hopper temperature high alarm",
    )  # fmt: skip


async def until(pred: Callable[[], bool], step: float = 0.001) -> None:
    """Poll a counter (a benchmark may poll: it asserts nothing)."""
    while not pred():  # noqa: ASYNC110
        await asyncio.sleep(step)


async def one_run(
    broker: Broker, tmp: Path, records: int, per_row: int
) -> tuple[float, list[float]]:
    box = Outbox(tmp / f"drain-{time.monotonic_ns()}.db", 4 * 1024**3)
    await box.open()
    body = row_body(per_row)
    rows = records // per_row
    for start in range(0, rows, 100):
        await box.put(
            [Entry("telemetry", per_row, body, 1.0) for _ in range(min(100, rows - start))]
        )
    spec = UplinkSpec(
        "127.0.0.1", broker.port, "dust", "bench-gw", max_records_per_message=1000,
        max_bytes_per_message=1024 * 1024, max_inflight=20, backlog_rate=0.0,
    )  # fmt: skip
    fwd = mqtt_forwarder(box, MqttUplink(spec, SITE), SITE, spec)
    received: list[float] = []
    ready = asyncio.Event()

    async def watch() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-alarms") as c:
            await c.subscribe("dust/BENCH/GW/alarm", qos=1)
            ready.set()
            async for _ in c.messages:
                received.append(time.perf_counter())

    watcher = asyncio.create_task(watch())
    await ready.wait()
    task = asyncio.create_task(fwd.run())
    latencies: list[float] = []
    await until(lambda: fwd.stats.records > 0)
    t0, r0 = time.perf_counter(), fwd.stats.records
    for k in range(1, ALARMS + 1):  # alarms spread over the drain
        mark = r0 + (records - r0) * k / (ALARMS + 1)
        await until(lambda: fwd.stats.records >= mark)  # noqa: B023 (awaited here)
        n = len(received)
        raised = time.perf_counter()
        await box.put([encode_alarms([an_alarm()])])
        await until(lambda: len(received) > n, 0.0005)  # noqa: B023 (awaited here)
        latencies.append(received[-1] - raised)
    await until(lambda: fwd.stats.records >= records + ALARMS)
    rate = (fwd.stats.records - r0 - ALARMS) / (time.perf_counter() - t0)
    task.cancel()
    watcher.cancel()
    await asyncio.gather(task, watcher, return_exceptions=True)
    await box.close()
    return rate, latencies


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--records", type=int, default=1_000_000)
    ap.add_argument("--per-row", type=int, default=1000, help="records per outbox row")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rates: list[float] = []
    lat: list[float] = []
    with tempfile.TemporaryDirectory() as d, Broker(Path(d) / "broker") as broker:
        for i in range(args.runs):
            rate, latencies = await one_run(broker, Path(d), args.records, args.per_row)
            rates.append(rate)
            lat += latencies
            med, top = statistics.median(latencies) * 1000, max(latencies) * 1000
            print(f"run {i + 1}: {rate:,.0f} records/s; alarm latency {med:.1f} ms (max {top:.1f})")
    print(
        f"drain of {args.records:,} records ({args.per_row} per row, 1000 per message, 20 in "
        f"flight): median {statistics.median(rates):,.0f} records/s over {args.runs} runs"
    )
    print(
        f"alarm latency during the drain: median {statistics.median(lat) * 1000:.1f} ms, "
        f"max {max(lat) * 1000:.1f} ms over {len(lat)} alarms"
    )


if __name__ == "__main__":
    asyncio.run(main())
