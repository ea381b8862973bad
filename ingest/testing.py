"""A throwaway PostgreSQL server for the tests, the benchmark and demos: initdb into a private
directory, postgres on a free 127.0.0.1 port with its unix socket in that directory.

PostgreSQL refuses to run as root, so as root the server runs as the `postgres` user (Debian's
package creates it) or `nobody`, with the directory handed to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


class PgServerError(RuntimeError):
    """PostgreSQL is missing or did not start."""


def pg_bin_dir() -> Path:
    """The newest /usr/lib/postgresql/*/bin with initdb, or an error that says how to install it."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise PgServerError(
        "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): run "
        "`make system-deps` (scripts/setup-system.sh) or `sudo apt-get install -y postgresql`"
    )


def _version_key(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


class PgServer:
    """One private PostgreSQL cluster; `start()`, `dsn`, `stop()`. Data is removed at stop."""

    def __init__(self, settings: Mapping[str, str] | None = None, dbname: str = "dust") -> None:
        self.bin = pg_bin_dir()
        self.port = _free_port()
        self.dbname = dbname
        # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
        self.dir = Path(tempfile.mkdtemp(prefix="dust-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.settings = {"fsync": "on", "max_wal_size": "2GB", **(settings or {})}
        self.user = self._run_as()
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _run_as() -> str | None:
        if os.geteuid() != 0:
            return None
        for name in ("postgres", "nobody"):
            try:
                pwd.getpwnam(name)
                return name
            except KeyError:
                continue
        raise PgServerError("running as root and there is no `postgres` or `nobody` user")

    def _as_user(self) -> dict[str, Any]:
        """Popen arguments that run the child as the server's user (directly: signals reach it)."""
        if not self.user:
            return {}
        pw = pwd.getpwnam(self.user)
        return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}

    @property
    def dsn(self) -> str:
        return f"host={LOOPBACK} port={self.port} user=postgres dbname={self.dbname}"

    def start(self, timeout: float = 30.0) -> None:
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        init = subprocess.run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
             "-E", "UTF8", "--no-sync"],
            capture_output=True, text=True, check=False, cwd=self.dir, **self._as_user(),
        )  # fmt: skip
        if init.returncode != 0:
            raise PgServerError(f"initdb failed: {init.stderr.strip()}")
        opts = [f"-c{k}={v}" for k, v in self.settings.items()]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-h", LOOPBACK, "-k", str(self.dir), *opts],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=self.dir,
                **self._as_user(),
            )  # fmt: skip
        self._wait_ready(timeout)
        self._create_db()

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise PgServerError(f"postgres exited: {self.log.read_text()[-2000:]}")
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-h", LOOPBACK, "-p", str(self.port), "-q"],
                check=False,
            )
            if ready.returncode == 0:
                return
            time.sleep(0.05)
        raise PgServerError(f"postgres not ready in {timeout} s: see {self.log}")

    def _create_db(self) -> None:
        import psycopg

        admin = f"host={LOOPBACK} port={self.port} user=postgres dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # "fast" shutdown; SIGTERM would wait for clients
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
