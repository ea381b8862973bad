"""`dust-sim demo` (`make demo`): the whole chain on one machine, printed as it happens.

Starts, all on 127.0.0.1 and in a fresh temp dir:

1. mosquitto (`harness.Broker`) on a free port;
2. an MQTT subscriber in this process (aiomqtt, topic `#`) that prints every reading and
   alarm readably;
3. the simulator, `dust-sim serve --port 0 --scenario smoulder` (units 1 and 2; unit 1's
   hopper starts smouldering at ~10 s, passes 60 °C at ~32 s and 70 °C at ~42 s: about
   60x faster than a real smoulder);
4. the agent, `dust-agent run -c <generated config>`: config/agent.example.toml with the
   simulator's and the broker's ports, a storage dir in the temp dir, absolute profile and
   rules paths.

After `seconds` (or Ctrl-C) it stops the agent, the simulator and the broker, prints a summary
and exits 0 only if readings arrived and a hopper_temp alarm was raised; otherwise it exits 1
and says what was missing and where the logs are.

The wire format it reads (see docs/payloads.md; parsed tolerantly): topics
`{prefix}/{enterprise}/{gateway}/{telemetry|alarm|event|status|health}`; telemetry `records`
are columnar (`{"device": [...], "key": [...], "ts": [...], "value": [...], ...}`), alarm
`records` are a list of objects with `transition`, `level`, `key`, `text_zh`, `text_en`, ...
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import aiomqtt
import orjson

from firmware_sim.demo_view import SMOULDER_KEY, Printer
from firmware_sim.harness import LOOPBACK, Broker, HarnessError, dump_toml

REPO = Path(__file__).resolve().parent.parent
DEFAULT_TEMPLATE = REPO / "config" / "agent.example.toml"
PROFILES_DIR = REPO / "config" / "profiles"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


# --- config ----------------------------------------------------------------------------------


def make_agent_config(
    template: Mapping[str, Any],
    *,
    template_dir: Path,
    sim_port: int,
    broker_port: int,
    storage_dir: Path,
    profiles_dir: Path = PROFILES_DIR,
) -> dict[str, Any]:
    """The example config pointed at this demo's simulator, broker and temp storage."""
    cfg: dict[str, Any] = orjson.loads(orjson.dumps(template))  # deep copy of plain data
    for bus in cfg.get("buses", []):
        bus["host"] = LOOPBACK
        bus["port"] = sim_port
    uplink = cfg.setdefault("uplink", {})
    uplink["host"] = LOOPBACK
    uplink["port"] = broker_port
    cfg.setdefault("storage", {})["dir"] = str(storage_dir)
    cfg["profiles_dir"] = str(profiles_dir.resolve())
    rules_pack = cfg.get("rules_pack")
    if isinstance(rules_pack, str) and not Path(rules_pack).is_absolute():
        cfg["rules_pack"] = str((template_dir / rules_pack).resolve())
    elif rules_pack is None and (template_dir / "rules" / "default.toml").exists():
        cfg["rules_pack"] = str((template_dir / "rules" / "default.toml").resolve())
    return cfg


def status_page_url(cfg: dict[str, Any]) -> str | None:
    """The status page's URL when [web] is enabled; a taken port is swapped for a free one."""
    web = cfg.get("web")
    if not isinstance(web, dict) or not web.get("enabled"):
        return None
    host, port = str(web.get("bind", LOOPBACK)), int(web.get("port", 8080))
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:  # another demo or service has it: any free port will do
            s.bind((host, 0))
            port = web["port"] = s.getsockname()[1]
    return f"http://{host}:{port}/"


# --- processes -------------------------------------------------------------------------------


def _agent_command(agent_cmd: str | None) -> list[str]:
    if agent_cmd:
        return shlex.split(agent_cmd)
    beside = Path(sys.executable).parent / "dust-agent"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("dust-agent")
    return [found] if found else [sys.executable, "-m", "agent.cli.main"]


async def _stop_process(proc: asyncio.subprocess.Process | None) -> int | None:
    """SIGTERM, wait, then SIGKILL. Returns the exit code (None if it was never started)."""
    if proc is None:
        return None
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line for line in text[-lines:])


class Demo:
    def __init__(
        self,
        seconds: float,
        *,
        speed: float = 1.0,
        config_template: str | None = None,
        agent_cmd: str | None = None,
        keep: bool = False,
        out: TextIO = sys.stdout,
    ) -> None:
        self.seconds = seconds
        self.speed = speed
        self.template = Path(config_template) if config_template else DEFAULT_TEMPLATE
        self.agent_cmd = _agent_command(agent_cmd)
        self.keep = keep
        self.out = out
        self.printer = Printer(out)
        self.workdir = Path(tempfile.mkdtemp(prefix="dust-demo-"))
        self.broker: Broker | None = None
        self.sim: asyncio.subprocess.Process | None = None
        self.agent: asyncio.subprocess.Process | None = None
        self.agent_rc: int | None = None
        self.problems: list[str] = []
        self.interrupted = False
        self.subscribed = asyncio.Event()

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @property
    def logs(self) -> list[Path]:
        return sorted(p for p in self.workdir.rglob("*.log"))

    async def run(self) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()

        def interrupt() -> None:
            self.interrupted = True
            stop.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, interrupt)
        t0 = time.monotonic()
        subscriber: asyncio.Task[None] | None = None
        try:
            await self._start_broker()
            assert self.broker is not None
            subscriber = asyncio.create_task(self._subscribe(self.broker.port))
            await self._wait_subscribed(subscriber)
            sim_port = await self._start_sim()
            await self._start_agent(sim_port, self.broker.port)
            t0 = time.monotonic()
            await self._watch(stop, t0)
        except DemoError as exc:
            self.problems.append(str(exc))
        finally:
            elapsed = time.monotonic() - t0
            await self._shutdown(subscriber)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return self._verdict(elapsed)

    async def _start_broker(self) -> None:
        try:
            self.broker = Broker(self.workdir / "broker")
            await asyncio.to_thread(self.broker.start)
        except HarnessError as exc:
            raise DemoError(str(exc)) from exc
        self.say(
            f"dust-sim demo: mosquitto on {LOOPBACK}:{self.broker.port}; logs in {self.workdir}"
        )

    async def _subscribe(self, port: int) -> None:
        async with aiomqtt.Client(LOOPBACK, port, identifier=f"dust-demo-{os.getpid()}") as client:
            await client.subscribe("#", qos=1)
            self.subscribed.set()
            async for message in client.messages:
                payload = message.payload
                data = payload if isinstance(payload, bytes | bytearray) else str(payload).encode()
                self.printer.handle(str(message.topic), bytes(data))

    async def _wait_subscribed(self, task: asyncio.Task[None]) -> None:
        waiter = asyncio.create_task(self.subscribed.wait())
        done, _ = await asyncio.wait(
            {task, waiter}, timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        if waiter not in done:
            waiter.cancel()
            reason = "timed out"
            if task in done and task.exception() is not None:
                reason = str(task.exception())
            raise DemoError(f"could not subscribe to the broker: {reason}")

    async def _start_sim(self) -> int:
        log = (self.workdir / "sim.log").open("ab")
        args = ["serve", "--port", "0", "--scenario", "smoulder", "--speed", repr(self.speed)]
        self.sim = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "firmware_sim.cli",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            start_new_session=True,  # Ctrl-C reaches only the demo, which stops it in order
        )
        log.close()
        assert self.sim.stdout is not None
        try:
            line = (await asyncio.wait_for(self.sim.stdout.readline(), START_TIMEOUT)).decode()
        except TimeoutError:
            line = ""
        match = re.search(r" on [^ ]+:(\d+);", line)
        if not match:
            raise DemoError(f"the simulator did not start (see {self.workdir / 'sim.log'})")
        self.say(line.strip())
        return int(match.group(1))

    async def _start_agent(self, sim_port: int, broker_port: int) -> None:
        if not self.template.exists():
            raise DemoError(f"no agent config template at {self.template}")
        with self.template.open("rb") as f:
            template = tomllib.load(f)
        cfg = make_agent_config(
            template,
            template_dir=self.template.parent,
            sim_port=sim_port,
            broker_port=broker_port,
            storage_dir=self.workdir / "storage",
        )
        page = status_page_url(cfg)
        cfg_file = self.workdir / "agent.toml"
        cfg_file.write_text(dump_toml(cfg))
        cmd = [*self.agent_cmd, "run", "-c", str(cfg_file)]
        log = (self.workdir / "agent.log").open("ab")
        try:
            self.agent = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        except OSError as exc:
            raise DemoError(f"cannot start the agent ({shlex.join(cmd)}): {exc}") from exc
        finally:
            log.close()
        self.say(f"dust-sim demo: agent started: {shlex.join(cmd)}")
        if page:
            self.say(f"dust-sim demo: status page (open it in a browser): {page}")
        self.say(
            "dust-sim demo: watch unit 1 (DC-1): its hopper starts smouldering at ~10 s; the "
            "rate-of-rise alarm comes first (~15 s), then it passes 60 °C (warning) at ~32 s "
            "and 70 °C (alarm) at ~42 s, ~60x faster than a real smoulder; running for "
            f"{self.seconds:g} s (Ctrl-C stops early)"
        )

    async def _watch(self, stop: asyncio.Event, t0: float) -> None:
        """Until the time is up, Ctrl-C, or a child dies."""
        assert self.agent is not None and self.sim is not None
        agent_exit = asyncio.create_task(self.agent.wait())
        sim_exit = asyncio.create_task(self.sim.wait())
        stopped = asyncio.create_task(stop.wait())
        remaining = self.seconds - (time.monotonic() - t0)
        done, pending = await asyncio.wait(
            {agent_exit, sim_exit, stopped},
            timeout=max(0.0, remaining),
            return_when=asyncio.FIRST_COMPLETED,
        )
        for task in pending:
            task.cancel()
        if agent_exit in done:
            self.agent_rc = self.agent.returncode
            self.problems.append(
                f"the agent exited early with code {self.agent_rc}; "
                f"last lines of {self.workdir / 'agent.log'}:\n{_tail(self.workdir / 'agent.log')}"
            )
        if sim_exit in done:
            self.problems.append(
                f"the simulator exited early with code {self.sim.returncode} "
                f"(see {self.workdir / 'sim.log'})"
            )

    async def _shutdown(self, subscriber: asyncio.Task[None] | None) -> None:
        if self.agent is not None and self.agent.returncode is None:
            self.agent_rc = await _stop_process(self.agent)
            # The agent says "offline" on the way out: give the subscriber a moment to print it.
            deadline = time.monotonic() + 2.0
            while not self.printer.tally.offline_seen and time.monotonic() < deadline:
                if subscriber is None or subscriber.done():
                    break
                await asyncio.sleep(0.05)
        if subscriber is not None:
            subscriber.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await subscriber
        await _stop_process(self.sim)
        if self.broker is not None:
            await asyncio.to_thread(self.broker.stop, True)

    def _verdict(self, elapsed: float) -> int:
        self.say("")
        for line in self.printer.summary(elapsed):
            self.say(line)
        tally = self.printer.tally
        missing = list(self.problems)
        if tally.good_readings == 0:
            missing.append("no readings arrived over MQTT")
        if tally.smoulder_alarm() is None:
            missing.append(
                f"no {SMOULDER_KEY} warning/alarm was raised (the smoulder passes 60 °C at ~32 s "
                "and 70 °C at ~42 s of simulator time, plus the rule's on-delay)"
            )
        if self.interrupted:
            self.say("dust-sim demo: interrupted")
        if not missing:
            self.say("dust-sim demo: OK: readings arrived and the smoulder alarm was raised")
            if self.keep:
                self.say(f"dust-sim demo: logs kept in {self.workdir}")
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
            return 0
        self.say("dust-sim demo: FAILED:")
        for item in missing:
            self.say(f"  - {item}")
        self.say("  logs: " + (", ".join(str(p) for p in self.logs) or str(self.workdir)))
        return 1


class DemoError(RuntimeError):
    """The demo could not set something up; the message says what."""


def run_demo(
    seconds: float,
    speed: float = 1.0,
    config_template: str | None = None,
    agent_cmd: str | None = None,
    keep: bool = False,
) -> int:
    demo = Demo(
        seconds, speed=speed, config_template=config_template, agent_cmd=agent_cmd, keep=keep
    )
    return asyncio.run(demo.run())
