"""`dust-sim run-scenario FILE... [--config SITE.toml]`: play scenario files against the real
agent and check their expectations at the broker.

Starts mosquitto (harness.Broker) on a free port and, per scenario, the simulator in this
process (SiteServer, every bus on 127.0.0.1 / a pty) and `dust-agent run` on the site config
rewritten to the served addresses, the broker and a temp storage dir, with the scenario's
`[agent]` settings merged in. Several files run at once, each with its own simulator and agent
(gateway ids get a suffix so their topics differ). The plant clock of a scenario starts when
its agent's first telemetry reaches the broker, so agent start-up time never eats into the
timeline. A scenario ends at its `duration`, or earlier once every expectation is decided.

Alarm records are matched by their source timestamp: scenario second = (ts - start) x speed.
Prints one pass/fail table per scenario; exits 0 only if every expectation passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, TextIO

import aiomqtt
import orjson

from firmware_sim.demo import _agent_command, _stop_process, _tail
from firmware_sim.expect import Checker
from firmware_sim.harness import LOOPBACK, Broker, dump_toml
from firmware_sim.scenario_file import Scenario, load_scenario
from firmware_sim.site import SiteModel
from firmware_sim.site_serve import SiteServer

DEMO_SITE = Path(__file__).resolve().parent / "sites" / "demo.toml"
AGENT_KEYS = {"poll_interval", "rules"}
FIRST_DATA_TIMEOUT = 30.0


def _merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def site_for(scenario: Scenario, config: str | None) -> Path:
    if config:
        return Path(config)
    if scenario.config == "demo":
        return DEMO_SITE
    return (scenario.path.parent / scenario.config).resolve()


class Run:
    """One scenario: its simulator, its agent and its checker."""

    def __init__(self, scenario: Scenario, site: Path, speed: float, workdir: Path) -> None:
        from agent.config import load_config

        unknown = set(scenario.agent) - AGENT_KEYS
        if unknown:
            raise ValueError(f"{scenario.path}: [agent] has unknown keys {sorted(unknown)}")
        self.scenario = scenario
        self.speed = speed
        self.workdir = workdir
        self.model = SiteModel(load_config(site), scenario.timeline, speed=speed)
        self.server = SiteServer(self.model, local=True)
        self.checker = Checker(scenario.expectations)
        self.gateway = ""
        self.t0_wall: float | None = None
        self.agent: asyncio.subprocess.Process | None = None
        self.problem = ""

    def agent_config(self, broker_port: int, suffix: str) -> Path:
        data = self.server.agent_config(self.workdir / "state")
        data["site"]["gateway_id"] = self.gateway = data["site"]["gateway_id"] + suffix
        data.setdefault("uplink", {}).update(host=LOOPBACK, port=broker_port)
        poll = self.scenario.agent.get("poll_interval")
        for bus in data.get("buses", []):
            if poll is not None:
                bus["poll_interval"] = poll
        _merge(data.setdefault("rules", {}), self.scenario.agent.get("rules", {}))
        path = self.workdir / "agent.toml"
        path.write_text(dump_toml(data))
        return path

    def on_telemetry(self) -> None:
        if self.t0_wall is None:
            self.server.begin()
            self.t0_wall = time.time()

    def on_alarm(self, records: list[dict[str, Any]]) -> None:
        if self.t0_wall is None:
            return
        for rec in records:
            ts = rec.get("ts")
            if isinstance(ts, int | float):
                self.checker.record(rec, (ts / 1000.0 - self.t0_wall) * self.speed)

    async def play(self, agent_cmd: list[str], broker_port: int, suffix: str) -> None:
        await self.server.start(start_clock=False)
        cfg = self.agent_config(broker_port, suffix)
        log = (self.workdir / "agent.log").open("ab")
        try:
            self.agent = await asyncio.create_subprocess_exec(
                *agent_cmd,
                "run",
                "-c",
                str(cfg),
                stdout=log,
                stderr=log,
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            log.close()
        try:
            await self._watch()
        finally:
            await _stop_process(self.agent)
            await self.server.stop()

    async def _watch(self) -> None:
        assert self.agent is not None
        deadline = time.monotonic() + FIRST_DATA_TIMEOUT
        while self.t0_wall is None:
            if self.agent.returncode is not None or time.monotonic() > deadline:
                self.problem = "no telemetry from the agent; its log:\n" + _tail(
                    self.workdir / "agent.log"
                )
                self.checker.finish(0.0)
                return
            await asyncio.sleep(0.05)
        while True:
            s = self.model.scenario_time()
            self.checker.tick(s)
            if self.agent.returncode is not None:
                self.problem = f"the agent exited with code {self.agent.returncode}"
                break
            if s >= self.scenario.duration or (
                self.checker.decided
                and not any(o.expectation.negative for o in self.checker.outcomes)
            ):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # records of the last instants still in flight
        self.checker.finish(self.model.scenario_time())

    def report(self) -> list[str]:
        verdict = "PASS" if self.checker.ok and not self.problem else "FAIL"
        lines = [f"scenario {self.scenario.name} ({self.scenario.path}): {verdict}"]
        lines += ["  " + row for row in self.checker.table()]
        if self.problem:
            lines.append("  problem: " + self.problem)
        return lines


async def _subscribe(port: int, runs: dict[str, Run], ready: asyncio.Event) -> None:
    async with aiomqtt.Client(LOOPBACK, port, identifier="dust-sim-run-scenario") as client:
        await client.subscribe("#", qos=1)
        ready.set()
        async for message in client.messages:
            parts = str(message.topic).split("/")
            run = runs.get(parts[-2]) if len(parts) >= 2 else None
            if run is None or not isinstance(message.payload, bytes | bytearray):
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                body = orjson.loads(message.payload)
                if parts[-1] == "telemetry":
                    run.on_telemetry()
                elif parts[-1] == "alarm" and isinstance(body, dict):
                    run.on_alarm(list(body.get("records", [])))


async def run_scenarios(
    files: list[str],
    *,
    config: str | None = None,
    speed: float = 1.0,
    agent_cmd: str | None = None,
    keep: bool = False,
    out: TextIO = sys.stdout,
) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="dust-scenarios-"))
    scenarios = [load_scenario(f) for f in files]
    runs: list[Run] = []
    for i, sc in enumerate(scenarios):
        (workdir / f"{i}-{sc.name}").mkdir()
        runs.append(Run(sc, site_for(sc, config), speed, workdir / f"{i}-{sc.name}"))
    broker = Broker(workdir / "broker")
    await asyncio.to_thread(broker.start)
    by_gateway: dict[str, Run] = {}
    ready = asyncio.Event()
    sub = asyncio.create_task(_subscribe(broker.port, by_gateway, ready), name="subscriber")
    try:
        await asyncio.wait_for(ready.wait(), 15)
        cmd = _agent_command(agent_cmd)
        suffixes = [f"-{i}" if len(runs) > 1 else "" for i in range(len(runs))]
        tasks = []
        for run, suffix in zip(runs, suffixes, strict=True):
            by_gateway[run.model.cfg.site.gateway_id + suffix] = run
            tasks.append(asyncio.create_task(run.play(cmd, broker.port, suffix)))
        await asyncio.gather(*tasks)
    finally:
        sub.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
            await sub
        await asyncio.to_thread(broker.stop, True)
    ok = all(r.checker.ok and not r.problem for r in runs)
    for run in runs:
        print("\n".join(run.report()), file=out, flush=True)
    print(
        f"dust-sim run-scenario: {sum(r.checker.ok and not r.problem for r in runs)}/{len(runs)}"
        f" scenarios passed" + ("" if ok or keep else f"; logs kept in {workdir}"),
        file=out,
        flush=True,
    )
    if ok and not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1
