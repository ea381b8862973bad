"""socat pty pairs for RTU tests: two linked pseudo-terminals at fixed paths in a tmp dir.

`kill()` makes the port disappear (both links vanish, an open fd gets EIO/EOF) and `start()`
recreates it at the same paths, like a USB adapter unplugged and plugged back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest


def socat_path() -> str:
    path = shutil.which("socat") or "/usr/bin/socat"
    if not Path(path).exists():
        pytest.fail("socat is not installed: `sudo apt-get install -y socat` (or run `make test`)")
    return path


class PtyPair:
    def __init__(self, directory: Path, a: str = "ttySIM", b: str = "ttyAGENT") -> None:
        self.a = str(directory / a)  # the simulator's end
        self.b = str(directory / b)  # the agent's end
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [
                socat_path(),
                f"pty,raw,echo=0,link={self.a}",
                f"pty,raw,echo=0,link={self.b}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while not (os.path.exists(self.a) and os.path.exists(self.b)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"socat did not create {self.a} and {self.b}")
            time.sleep(0.01)

    def kill(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        for p in (self.a, self.b):  # socat removes its links on SIGTERM; make sure
            if os.path.lexists(p):
                os.unlink(p)
