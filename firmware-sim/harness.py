"""Process harness shared by the demo, the tests and the benchmarks: a real mosquitto on a
free loopback port that can be stopped, frozen and restarted, and small helpers."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


class HarnessError(RuntimeError):
    """A process the harness starts could not be started or did not come up."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = LOOPBACK) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_port(port: int, up: bool, timeout: float = 10.0, host: str = LOOPBACK) -> None:
    """Wait until `port` accepts connections (up=True) or refuses them (up=False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port, host) == up:
            return
        time.sleep(0.02)
    raise HarnessError(f"port {host}:{port} did not go {'up' if up else 'down'} in {timeout} s")


def mosquitto_path() -> str:
    """The mosquitto binary, or a HarnessError that says how to install it."""
    found = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(found).exists():
        raise HarnessError(
            "mosquitto is not installed: run `make test` or `make demo` (they install it), "
            "or `sudo apt-get install -y mosquitto`"
        )
    return found


class Broker:
    """A real mosquitto process on a free loopback port.

    stop(hard=True) kills it (connections reset), freeze()/thaw() stop and continue it
    (a black-hole broker: no RST), restart() starts it again on the same port.
    """

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        persistence: bool = False,
        tls: Mapping[str, Path] | None = None,
    ) -> None:
        """tls: {"cafile", "certfile", "keyfile"} paths; with cafile, clients need a certificate."""
        self.binary = mosquitto_path()
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        self.log = workdir / f"mosquitto-{self.port}.log"
        tls_lines = "".join(f"{k} {v}\n" for k, v in (tls or {}).items())
        if tls and "cafile" in tls:
            tls_lines += "require_certificate true\n"
        if tls and not persistence:
            tls_lines += "user root\n"  # as root: read test keys in private temp dirs
        self.conf.write_text(
            f"listener {self.port} {LOOPBACK}\n"
            + tls_lines
            + "allow_anonymous true\n"
            + (
                f"persistence true\npersistence_location {workdir}/\nautosave_interval 0\n"
                "user root\n"  # no effect unless run as root; there it keeps the file writable
                if persistence
                else "persistence false\n"
            )
            + "log_dest stderr\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
            "max_queued_messages 100000\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "-c", str(self.conf)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        try:
            wait_port(self.port, up=True)
        except HarnessError as exc:
            self.stop(hard=True)
            raise HarnessError(f"mosquitto did not start: see {self.log}") from exc

    def stop(self, hard: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)  # a frozen broker cannot act on SIGTERM
            (self.proc.kill if hard else self.proc.terminate)()
            self.proc.wait(10)
        self.proc = None
        wait_port(self.port, up=False)

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(hard=True)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        s = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'
    if isinstance(value, Sequence):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _key(k: str) -> str:
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


def _is_table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, Mapping) for x in v)


def dump_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """Write nested dicts/lists as TOML (enough for generated agent configs)."""
    lines: list[str] = []
    nested: list[tuple[str, Any]] = []
    for k, v in data.items():
        if isinstance(v, Mapping) or _is_table_array(v):
            nested.append((k, v))
        else:
            lines.append(f"{_key(k)} = {_toml_value(v)}")
    for k, v in nested:
        name = f"{_prefix}{_key(k)}"
        if isinstance(v, Mapping):
            lines.append(f"\n[{name}]")
            lines.append(dump_toml(v, name + ".").strip("\n"))
        else:
            for item in v:
                lines.append(f"\n[[{name}]]")
                lines.append(dump_toml(item, name + ".").strip("\n"))
    return "\n".join(line for line in lines if line != "") + "\n"
