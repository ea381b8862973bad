"""Adversarial-test harness: throwaway OS users and group, a world-traversable work dir, and
the real agent running as the unprivileged user against the simulator and a real broker."""

from __future__ import annotations

import grp
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim.harness import Broker, dump_toml
from tests.conftest import REPO
from tests.e2e import BIN, Collector, Proc, agent_config, simulator, wait_for

ALARM = "1301000000010101001:high"  # DC-1 hopper temperature, made to alarm at once below
FAST = {"on_delay": 0.5, "off_delay": 3.0, "rate_hold": 1.0}


@dataclass(frozen=True)
class Users:
    agent: str  # runs the agent (a system user, like dust-agent)
    member: str  # in the operators group
    outsider: str  # in no group of ours
    group: str  # the operators group


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@contextmanager
def throwaway_users() -> Iterator[Users]:
    tag = secrets.token_hex(3)
    users = Users(f"dag-{tag}", f"dmem-{tag}", f"dout-{tag}", f"dops-{tag}")
    _run("groupadd", "-r", users.group)
    made: list[str] = []
    try:
        for name, extra in ((users.agent, users.group), (users.member, users.group)):
            _run("useradd", "-r", "-M", "-s", "/usr/sbin/nologin", "-G", extra, name)
            made.append(name)
        _run("useradd", "-r", "-M", "-s", "/usr/sbin/nologin", users.outsider)
        made.append(users.outsider)
        yield users
    finally:
        for name in made:
            subprocess.run(["userdel", name], check=False, capture_output=True, timeout=30)
        subprocess.run(["groupdel", users.group], check=False, capture_output=True, timeout=30)


def as_user(user: str | None, *cmd: str) -> list[str]:
    """`cmd` run as `user` (with its groups), or as root when user is None."""
    if user is None:
        return list(cmd)
    # The checkout (and its venv) may sit below a directory only root can enter (CI clones
    # into a mktemp -d, mode 0700): the user may read and search any directory, nothing more
    # (CAP_DAC_READ_SEARCH); every write is still checked against its uid and groups.
    caps = "+dac_read_search"
    return [
        "setpriv",
        f"--reuid={user}",
        f"--regid={user}",
        "--init-groups",
        f"--inh-caps={caps}",
        f"--ambient-caps={caps}",
        "--",
        *cmd,
    ]


@contextmanager
def workdir() -> Iterator[Path]:
    """A directory every test user can traverse (pytest's tmp dirs are 0700 root)."""
    path = Path(f"/tmp/dust-adv-{secrets.token_hex(4)}")
    path.mkdir(mode=0o755)
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_config(work: Path, sim_port: int, broker_port: int, group: str, **extra: Any) -> Path:
    """The example config, fast, with DC-1's hopper temperature in alarm from the start."""
    path = agent_config(work, sim_port, broker_port, **FAST)
    data = tomllib.loads(path.read_text())
    data["buses"][0]["poll_interval"] = 0.25
    kinds = data["rules"].setdefault("kinds", {})
    kinds.setdefault("hopper_temperature", {}).update(high_warning=-1000.0, high_alarm=-900.0)
    data["operator"] = {"group": group, **extra.pop("operator", {})}
    data.update(extra)
    path.write_text(dump_toml(data))
    path.chmod(0o644)
    return path


@dataclass
class Plant:
    work: Path
    cfg: Path
    state: Path
    agent: Proc
    collector: Collector
    users: Users

    @property
    def socket(self) -> Path:
        return self.state / "operator.sock"

    def cli(
        self, user: str | None, *args: str, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        cmd = as_user(user, str(BIN / "dust-agent"), *args, "-c", str(self.cfg))
        return subprocess.run(
            cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False
        )

    def still_publishing(self, what: str = "telemetry after the abuse") -> None:
        """The agent is alive and new telemetry keeps arriving at the broker."""
        assert self.agent.proc.poll() is None, self.agent.text()[-3000:]
        seen = max(self.collector.telemetry_seqs(), default=0)
        wait_for(lambda: max(self.collector.telemetry_seqs(), default=0) >= seen + 3, 20, what)

    def alarm_active(self) -> None:
        def raised() -> bool:
            return any(
                r["alarm_id"] == ALARM and r["transition"] in ("raise", "escalate")
                for r in self.collector.alarm_records()
            )

        wait_for(raised, 30, f"alarm {ALARM} raised")

    def request(self, body: bytes, timeout: float = 15.0) -> dict[str, Any]:
        """One raw request line over the socket, as root; the parsed answer."""
        import orjson

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(self.socket))
            s.sendall(body)
            return dict(orjson.loads(read_line(s)))

    def owners(self) -> set[str]:
        """The owners of everything under the state directory."""
        out = set()
        for root, dirs, files in os.walk(self.state):
            for name in [*dirs, *files]:
                out.add(pwd.getpwuid(os.lstat(Path(root) / name).st_uid).pw_name)
        return out


def read_line(s: socket.socket) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    return buf


@contextmanager
def plant(broker: Broker, prepare: Any = None, **extra: Any) -> Iterator[Plant]:
    """Simulator, collector and the agent as a throwaway unprivileged user. `prepare(state)`
    runs (as root) after the state directory exists and before the agent starts."""
    with throwaway_users() as users, workdir() as work:
        state = work / "state"
        state.mkdir()
        state.chmod(0o751)  # StateDirectoryMode= of the unit: operators traverse, not list
        pw = pwd.getpwnam(users.agent)
        os.chown(state, pw.pw_uid, pw.pw_gid)
        if prepare is not None:
            prepare(state)
        collector = Collector(broker.port, client_id=f"adv-{work.name}")
        collector.start()
        with simulator(work, "--units", "1,2") as (_, sim_port):
            cfg = write_config(work, sim_port, broker.port, users.group, **extra)
            cmd = as_user(users.agent, str(BIN / "dust-agent"), "run", "-c", str(cfg))
            agent = Proc(cmd, work / "agent.log", env={"DUST_AGENT_LOG_LEVEL": "info"})
            p = Plant(work, cfg, state, agent, collector, users)
            try:
                wait_for(lambda: bool(collector.telemetry_seqs()), 30, "first telemetry")
                yield p
            finally:
                code = agent.stop()
                collector.stop()
                assert code == 0, agent.text()[-3000:]
                assert "Traceback" not in agent.text(), agent.text()[-3000:]


def gid(name: str) -> int:
    return grp.getgrnam(name).gr_gid
