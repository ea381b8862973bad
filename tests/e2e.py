"""End-to-end helpers: the real simulator and agent as processes, and an MQTT collector."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from firmware_sim.harness import LOOPBACK, dump_toml
from tests.conftest import REPO

BIN = Path(sys.executable).parent


def wait_for(cond: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Wait until cond() is true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class Message:
    topic: str
    body: Any
    retained: bool


@dataclass
class Collector:
    """A paho subscriber in its own thread, with a persistent session (QoS 1), so that what
    the broker accepts while the collector is briefly away is still delivered to it."""

    port: int
    client_id: str = "test-collector"
    messages: list[Message] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    connected: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False
        )
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = lambda *a: self.connected.clear()
        self.client.reconnect_delay_set(1, 1)

    def _on_connect(self, client: paho.Client, *args: Any) -> None:
        client.subscribe("#", qos=1)
        self.connected.set()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        try:
            body: Any = orjson.loads(msg.payload)
        except orjson.JSONDecodeError:
            body = msg.payload.decode(errors="replace")
        with self.lock:
            self.messages.append(Message(msg.topic, body, bool(msg.retain)))

    def start(self) -> None:
        self.client.connect_async(LOOPBACK, self.port, keepalive=5)
        self.client.loop_start()
        if not self.connected.wait(10):
            raise AssertionError("test collector could not connect to the broker")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def snapshot(self) -> list[Message]:
        with self.lock:
            return list(self.messages)

    def stream(self, stream: str) -> list[dict[str, Any]]:
        return [
            m.body
            for m in self.snapshot()
            if m.topic.endswith("/" + stream) and isinstance(m.body, dict)
        ]

    def telemetry_seqs(self) -> list[int]:
        return [s for body in self.stream("telemetry") for s in body["records"]["seq"]]

    def readings(self) -> Iterator[dict[str, Any]]:
        """Every telemetry record as a dict (columns zipped)."""
        for body in self.stream("telemetry"):
            cols = body["records"]
            for i in range(len(cols["seq"])):
                yield {k: v[i] for k, v in cols.items()}

    def alarm_records(self) -> list[dict[str, Any]]:
        return [r for body in self.stream("alarm") for r in body["records"]]


class Proc:
    """A child process whose output goes to a log file and is searchable."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.args = args
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                # a child that hangs can be made to print every thread's stack (see stop)
                env={**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})},
                start_new_session=True,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            if self.proc.poll() is not None and not re.search(pattern, self.text()):
                raise AssertionError(
                    f"{self.args[0]} exited ({self.proc.returncode}) before '{pattern}':\n"
                    + self.text()[-3000:]
                )
            m = re.search(pattern, self.text())
            if m:
                found.append(m)
            return m is not None

        wait_for(seen, timeout, f"'{pattern}' in {self.log}")
        return found[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        """Signal the child and wait for its exit status. A child that does not exit in time is
        made to dump every thread's stack (faulthandler on SIGABRT) and the test fails with it."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            raise AssertionError(
                f"{self.args[0]} did not exit within {timeout} s of signal {sig}; its stacks:\n"
                + self.text()[-6000:]
            ) from None


@contextmanager
def simulator(tmp: Path, *extra: str) -> Iterator[tuple[Proc, int]]:
    """`dust-sim serve` on a free port; yields (process, port)."""
    sim = Proc(
        [str(BIN / "dust-sim"), "serve", "--host", LOOPBACK, "--port", "0", *extra], tmp / "sim.log"
    )
    try:
        m = sim.wait_log(r"on 127\.0\.0\.1:(\d+)")
        yield sim, int(m.group(1))
    finally:
        sim.stop(signal.SIGKILL)


def agent_config(tmp: Path, sim_port: int, broker_port: int, **rules: float) -> Path:
    """The example config pointed at this test's simulator, broker and storage."""
    import tomllib

    data = tomllib.loads((REPO / "config" / "agent.example.toml").read_text())
    data["profiles_dir"] = str(REPO / "config" / "profiles")
    data["rules_pack"] = str(REPO / "config" / "rules" / "default.toml")
    for bus in data["buses"]:
        bus["port"] = sim_port
    data["uplink"]["port"] = broker_port
    data["storage"]["dir"] = str(tmp / "state")
    data.pop("web", None)  # the status page has its own tests (tests/integration/test_web.py)
    if rules:
        data["rules"]["defaults"].update(rules)
    path = tmp / "agent.toml"
    path.write_text(dump_toml(data))
    return path


def bench_config(
    tmp: Path,
    sim_port: int,
    broker_port: int,
    devices: int,
    registers: int,
    **uplink: Any,
) -> Path:
    """The plant of `dust-sim serve --bench-devices N --bench-registers M`: N devices of M
    uint16 holding registers on one TCP bus polled every second; `uplink` adds settings."""
    data = {
        "site": {"enterprise_code": "BENCH", "gateway_id": "GW"},
        "buses": [
            {
                "name": "bench",
                "host": LOOPBACK,
                "port": sim_port,
                "timeout": 1.0,
                "poll_interval": 1.0,
            }
        ],
        "devices": [
            {
                "name": f"D{u:03d}",
                "bus": "bench",
                "unit": u,
                "points": [
                    {
                        "key": f"r{a:02d}",
                        "table": "holding",
                        "address": a,
                        "type": "uint16",
                        "unit": "",
                        "kind": "generic",
                    }
                    for a in range(registers)
                ],
            }
            for u in range(1, devices + 1)
        ],
        "uplink": {"host": LOOPBACK, "port": broker_port, **uplink},
        "storage": {"dir": str(tmp / "state")},
        "rules_pack": str(REPO / "config" / "rules" / "default.toml"),
    }
    path = tmp / "bench.toml"
    path.write_text(dump_toml(data))
    return path


def start_agent(cfg: Path, log: Path) -> Proc:
    agent = Proc(
        [str(BIN / "dust-agent"), "run", "-c", str(cfg)], log, env={"DUST_AGENT_LOG_LEVEL": "info"}
    )
    return agent


def seq_gaps(seqs: list[int]) -> list[int]:
    """Sequence numbers missing between the smallest and the largest seen."""
    have = set(seqs)
    return [s for s in range(min(have), max(have) + 1) if s not in have] if have else []
