"""Serve every bus of a site config: Modbus TCP, RTU on a serial port (or a pty pair made here
with socat), RTU over TCP; where each bus listens can be overridden per bus.

Binding: by default each bus is served where the agent config says it is (`host:port` for TCP
buses, so the simulator must run on a machine with that address; the serial `port` for RTU).
`Bind` entries override that per bus; `local=True` moves every TCP bus to 127.0.0.1 on a free
port and every RTU bus onto a fresh socat pty pair (the simulator opens one end, the agent the
other). `SiteServer.served` says, per bus, where the agent must connect; `agent_config()`
rewrites the site's own TOML accordingly, so the agent runs on the very same config.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.model import BusSpec
from drivers.rtu_frame import LineTiming
from firmware_sim.mbap import MbapServer
from firmware_sim.rtu import RtuSlaves, SerialSlave, TcpRtuSlave
from firmware_sim.site import SiteModel

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Bind:
    """Where one bus is served: host:port for TCP buses, a serial device path for RTU."""

    host: str = LOOPBACK
    port: int = 0
    serial: str = ""

    @classmethod
    def parse(cls, text: str) -> tuple[str, Bind]:
        """`NAME=HOST:PORT` or `NAME=/dev/ttyUSB0`."""
        name, sep, where = text.partition("=")
        if not sep or not name:
            raise ValueError(f"bad --bind {text!r}: use BUS=HOST:PORT or BUS=/dev/ttyXXX")
        if where.startswith("/"):
            return name, cls(serial=where)
        host, _, port = where.rpartition(":")
        try:
            return name, cls(host=host or LOOPBACK, port=int(port))
        except ValueError:
            raise ValueError(f"bad --bind {text!r}: the port must be a number") from None


class Pty:
    """A socat pty pair: `sim` is the simulator's end, `agent` the agent's."""

    def __init__(self, directory: Path, bus: str) -> None:
        self.sim = str(directory / f"{bus}-sim")
        self.agent = str(directory / f"{bus}-agent")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        socat = shutil.which("socat") or "/usr/bin/socat"
        self.proc = subprocess.Popen(
            [socat, f"pty,raw,echo=0,link={self.sim}", f"pty,raw,echo=0,link={self.agent}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.sim) and os.path.exists(self.agent)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise OSError(f"socat did not create {self.sim} and {self.agent}")
            time.sleep(0.01)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(10)


Server = MbapServer | SerialSlave | TcpRtuSlave


class SiteServer:
    """Serves a SiteModel on every bus of its config."""

    def __init__(
        self, model: SiteModel, binds: dict[str, Bind] | None = None, *, local: bool = False
    ) -> None:
        self.model = model
        self.binds = dict(binds or {})
        unknown = set(self.binds) - {b.name for b in model.cfg.buses}
        if unknown:
            raise ValueError(f"--bind names no bus of the config: {', '.join(sorted(unknown))}")
        self.local = local
        self.servers: dict[str, Server] = {}
        self.served: dict[str, dict[str, Any]] = {}
        self._ptys: list[Pty] = []
        self._dir: Path | None = None
        self._links: asyncio.Task[None] | None = None

    def _where(self, bus: BusSpec) -> Bind:
        if bus.name in self.binds:
            return self.binds[bus.name]
        if self.local:
            return Bind()
        return Bind(bus.host, bus.port, bus.serial_port)

    async def _serve_bus(self, bus: BusSpec) -> None:
        model, where = self.model, self._where(bus)
        units = model.unit_ids(bus.name)
        registers = model.registers(bus.name)

        def fault_of(unit: int) -> Any:
            return model.fault(bus.name, unit)

        if bus.type == "tcp":
            server = MbapServer(units, registers, fault_of, host=where.host, port=where.port)
            await server.start()
            self.served[bus.name] = {"type": "tcp", "host": where.host, "port": server.port}
            self.servers[bus.name] = server
            return
        timing = LineTiming(bus.baud) if bus.baud else None
        slaves = RtuSlaves(units, registers, timing, fault_of=fault_of)
        if bus.type == "rtu_tcp":
            rtu_tcp = TcpRtuSlave(slaves, where.host, where.port)
            await rtu_tcp.start()
            self.served[bus.name] = {"type": "rtu_tcp", "host": where.host, "port": rtu_tcp.port}
            self.servers[bus.name] = rtu_tcp
            return
        path = where.serial
        agent_path = path
        if not path:
            if self._dir is None:
                self._dir = Path(tempfile.mkdtemp(prefix="dust-sim-pty-"))
            pty = Pty(self._dir, bus.name)
            pty.start()
            self._ptys.append(pty)
            path, agent_path = pty.sim, pty.agent
        serial = SerialSlave(slaves, path, bus.baud)
        await serial.start()
        self.served[bus.name] = {"type": "rtu", "port": agent_path, "baud": bus.baud}
        self.servers[bus.name] = serial

    async def start(self, *, start_clock: bool = True) -> None:
        """Serve every bus; with start_clock=False the plant stays at time 0 (and the timeline
        waits) until `begin()`."""
        try:
            for bus in self.model.cfg.buses:
                await self._serve_bus(bus)
        except BaseException:
            await self.stop()
            raise
        if start_clock:
            self.begin()

    def begin(self) -> None:
        """Start the plant clock and the timeline."""
        self.model.start_clock()
        if self.model.timeline.links:
            self._links = asyncio.create_task(self._play_links(), name="sim-links")

    async def _play_links(self) -> None:
        """TCP buses really go down (listener closed, connections dropped) and come back; RTU
        lines just go silent (SiteModel.fault)."""
        for action in sorted(self.model.timeline.links, key=lambda a: a.at):
            await asyncio.sleep(max(0.0, action.at / self.model.speed - self.model.clock()))
            server = self.servers.get(action.bus)
            if isinstance(server, MbapServer):
                await server.set_link(action.up)

    async def set_link(self, bus: str, up: bool) -> None:
        """Take a bus down or bring it back now."""
        (self.model.links_down.discard if up else self.model.links_down.add)(bus)
        server = self.servers.get(bus)
        if isinstance(server, MbapServer):
            await server.set_link(up)

    async def stop(self) -> None:
        if self._links is not None:
            self._links.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._links
        for server in self.servers.values():
            await server.stop()
        self.servers.clear()
        for pty in self._ptys:
            pty.stop()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)

    def agent_config(self, storage_dir: Path | None = None) -> dict[str, Any]:
        """The site's own TOML with every bus pointed at where it is served."""
        return rewrite_config(self.model.cfg.path, self.served, storage_dir)


def rewrite_config(
    path: Path, served: dict[str, dict[str, Any]], storage_dir: Path | None = None
) -> dict[str, Any]:
    """`path`'s TOML with the served addresses, its relative paths made absolute (so the copy
    can live anywhere) and, if given, another storage dir."""
    with path.open("rb") as f:
        data = tomllib.load(f)
    base = path.parent
    for bus in data.get("buses", []):
        where = served.get(bus.get("name", ""))
        if where is None:
            continue
        if where["type"] == "rtu":
            bus["port"] = where["port"]
        else:
            bus["host"], bus["port"] = where["host"], where["port"]
    for key in ("profiles_dir", "rules_pack"):
        default = {"profiles_dir": "profiles", "rules_pack": "rules/default.toml"}[key]
        rel = data.get(key, default)
        if not Path(rel).is_absolute() and (base / rel).exists():
            data[key] = str((base / rel).resolve())
    storage = data.setdefault("storage", {})
    if storage_dir is not None:
        storage["dir"] = str(storage_dir)
    elif "dir" in storage and not Path(storage["dir"]).is_absolute():
        storage["dir"] = str((base / storage["dir"]).resolve())
    return data
