"""Acceptance figure (issue 13): the agent under a flood of junk from all its peers at once.

    .venv/bin/python bench/flood.py [--seconds 60]

The agent (`dust-agent run`, a child process) polls a well-behaved Modbus TCP device and an
RTU-over-TCP device server that babbles junk without pause; its MQTT broker is a rogue that
PUBACKs the agent's messages while pushing unsolicited PUBLISH packets at it as fast as it
reads; its provincial platform answers in turn with a never-ending body, a gzip bomb, a reply
trickling a byte every 2 s, control characters, and now and then a proper "code 200".

Printed: the agent's RSS at the start of the flood, its peak and at the end; what the peers
pushed; the records the broker and the platform received (the agent keeps polling and
publishing). Nothing is asserted: the acceptance is RSS growth < 20 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from firmware_sim.harness import LOOPBACK, dump_toml  # noqa: E402
from tests.adversarial.rogue import Babbler, RogueBroker, RogueHttp  # noqa: E402
from tests.e2e import Proc  # noqa: E402
from tests.modbus_server import ModbusTestServer  # noqa: E402

BIN = Path(sys.executable).parent
PLATFORM_MODES = ["huge", "bomb", "trickle", "evil", "ok", "huge-length", "ok"]


def point(key: str, address: int) -> dict[str, object]:
    return {
        "key": key,
        "table": "holding",
        "address": address,
        "type": "uint16",
        "unit": "",
        "kind": "generic",
        "code": f"C-{key}",
    }


def flood_config(tmp: Path, device: int, babbler: int, broker: int, platform: str) -> Path:
    key = tmp / "platform.key"
    key.write_text("k3y-8byt\n")
    key.chmod(0o600)
    data = {
        "site": {"enterprise_code": "130100000001", "gateway_id": "GW01"},
        "buses": [
            {"name": "good", "host": LOOPBACK, "port": device, "timeout": 0.5},
            {
                "name": "babble",
                "type": "rtu_tcp",
                "host": LOOPBACK,
                "port": babbler,
                "timeout": 0.5,
            },
        ],
        "devices": [
            {
                "name": "D1",
                "bus": "good",
                "unit": 1,
                "points": [point(f"r{a}", a) for a in range(8)],
            },
            {"name": "B1", "bus": "babble", "unit": 1, "points": [point("b0", 0)]},
        ],
        "uplink": {"host": LOOPBACK, "port": broker, "publish_timeout": 5.0},
        "storage": {"dir": str(tmp / "state")},
        "rules_pack": str(REPO / "config" / "rules" / "default.toml"),
        "platforms": [
            {
                "name": "hebei",
                "profile": "hebei_v1_1",
                "url": platform,
                "allow_http": True,
                "key_file": str(key),
                "period": 1.0,
                "timeout": 3.0,
                "points": ["D1"],
                "backoff_base": 0.2,
                "backoff_cap": 1.0,
            }
        ],
    }
    path = tmp / "flood.toml"
    path.write_text(dump_toml(data))
    return path


class CountingBroker(RogueBroker):
    """The rogue broker, counting the telemetry records the agent publishes to it."""

    def __init__(self, pause: float) -> None:
        super().__init__(payload_size=4096, pause=pause)
        self.records = 0

    def received(self, topic: str, payload: bytes) -> None:
        if topic.endswith("/telemetry"):
            recs = orjson.loads(payload).get("records", {})
            self.records += len(recs.get("seq", [])) if isinstance(recs, dict) else len(recs)


async def rotate(platform: RogueHttp, stop: asyncio.Event, every: float) -> None:
    i = 0
    while not stop.is_set():
        platform.mode = PLATFORM_MODES[i % len(PLATFORM_MODES)]
        i += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


async def first_data(broker: CountingBroker, platform: RogueHttp) -> None:
    async with asyncio.timeout(30):
        while broker.records == 0 or platform.requests == 0:  # noqa: ASYNC110  other processes
            await asyncio.sleep(0.1)


async def sample(pid: int, seconds: float) -> tuple[float, float, float]:
    """RSS at the start, its peak (sampled every 0.5 s) and at the end; a line every 10 s."""
    proc = psutil.Process(pid)
    start = peak = proc.memory_info().rss
    t0 = time.monotonic()
    next_line = t0 + 10.0
    while time.monotonic() < t0 + seconds:
        await asyncio.sleep(0.5)
        rss = proc.memory_info().rss
        peak = max(peak, rss)
        if time.monotonic() >= next_line:
            next_line += 10.0
            print(f"  t={time.monotonic() - t0:4.0f} s  RSS {rss / 2**20:.1f} MiB", flush=True)
    return start, peak, proc.memory_info().rss


def device_thread(ready: threading.Event, stop: threading.Event) -> ModbusTestServer:
    """The well-behaved Modbus TCP device, on its own event loop (the floods share ours)."""
    device = ModbusTestServer()
    device.set(1, "holding", 0, list(range(10, 18)))

    async def serve() -> None:
        await device.start()
        ready.set()
        while not stop.is_set():  # noqa: ASYNC110  a threading.Event, set from another thread
            await asyncio.sleep(0.1)
        await device.stop()

    threading.Thread(target=asyncio.run, args=(serve(),), name="device", daemon=True).start()
    ready.wait(10)
    return device


async def main(args: argparse.Namespace) -> int:
    device_stop = threading.Event()
    device = device_thread(threading.Event(), device_stop)
    if args.baseline:  # the same agent and peers, no junk: what RSS does without a flood
        args.babble_mb = args.publish_mb = 1e-4
        PLATFORM_MODES[:] = ["ok"]
    babbler = Babbler(pause=4096 / (args.babble_mb * 1e6))
    broker = CountingBroker(pause=16 * 4100 / (args.publish_mb * 1e6))
    platform = RogueHttp("ok", interval=2.0)
    for peer in (babbler, broker, platform):
        await peer.start()
    with tempfile.TemporaryDirectory(prefix="dust-flood-") as tmp_s:
        tmp = Path(tmp_s)
        cfg = flood_config(tmp, device.port, babbler.port, broker.port, platform.url)
        agent = Proc([str(BIN / "dust-agent"), "run", "-c", str(cfg)], tmp / "agent.log")
        stop = asyncio.Event()
        try:
            try:
                await first_data(broker, platform)
            except TimeoutError:
                print(agent.text()[-3000:])
                print(f"acked {broker.acked} records {broker.records} requests {platform.requests}")
                raise
            await asyncio.sleep(args.warmup)
            r0, d0, req0 = broker.records, device.requests, platform.requests
            print(f"flooding for {args.seconds:g} s ...", flush=True)
            rotor = asyncio.get_running_loop().create_task(rotate(platform, stop, 4.0))
            start, peak, end = await sample(agent.proc.pid, args.seconds)
            stop.set()
            await rotor
            report(
                args,
                start,
                peak,
                end,
                broker=broker,
                babbler=babbler,
                platform=platform,
                device=device,
                before=(r0, d0, req0),
            )
            errors = [ln for ln in agent.text().splitlines() if "Traceback" in ln]
            print(f"tracebacks in the agent's log: {len(errors)}")
        finally:
            agent.stop(signal.SIGTERM)
            for peer in (babbler, broker, platform):
                await peer.stop()
            device_stop.set()
    return 0


def report(
    args: argparse.Namespace,
    start: float,
    peak: float,
    end: float,
    *,
    broker: CountingBroker,
    babbler: Babbler,
    platform: RogueHttp,
    device: ModbusTestServer,
    before: tuple[int, int, int],
) -> None:
    mib = 1024 * 1024
    r0, d0, req0 = before
    print(
        f"agent RSS: start {start / mib:.1f} MiB, peak {peak / mib:.1f} MiB, end "
        f"{end / mib:.1f} MiB (growth to peak {(peak - start) / mib:+.1f} MiB, to end "
        f"{(end - start) / mib:+.1f} MiB)"
    )
    print(
        f"pushed at the agent: {broker.pushed * len(broker.packet) / mib:.0f} MiB of unsolicited "
        f"PUBLISH ({broker.pushed} packets), {babbler.sent / mib:.0f} MiB of RTU babble"
    )
    print(
        f"still working: {device.requests - d0} Modbus TCP requests answered, "
        f"{broker.records - r0} telemetry records published (PUBACKed), "
        f"{platform.requests - req0} platform requests (modes {', '.join(PLATFORM_MODES)})"
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--warmup", type=float, default=5.0)
    p.add_argument("--publish-mb", type=float, default=20.0, help="unsolicited PUBLISH, MB/s")
    p.add_argument("--babble-mb", type=float, default=2.0, help="RTU babble, MB/s")
    p.add_argument("--baseline", action="store_true", help="no junk at all, for comparison")
    os.environ.setdefault("DUST_AGENT_CLOCK_SYNC", "yes")
    sys.exit(asyncio.run(main(p.parse_args())))
