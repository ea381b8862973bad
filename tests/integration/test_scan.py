"""`dust-agent scan` as installers run it: the real command against the real simulator over a
socat pty pair (RTU), Modbus TCP and RTU over TCP, and its errors for a missing port."""

from __future__ import annotations

import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e import BIN, Proc
from tests.pty import PtyPair

UNITS = "1-10"
N_UNITS = 10
TIMEOUT = 0.3  # seconds per unit: generous, the machine is shared
# The run is bounded by the timeout per unit (twice on RTU: the wait, then the quiet guard);
# the slack covers start-up on a loaded machine. Exceeding it fails the test as a hang.
BOUND = 30.0 + 2 * TIMEOUT * N_UNITS


def scan(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "dust-agent"), "scan", "--units", UNITS, "--timeout", str(TIMEOUT), *args],
        capture_output=True,
        text=True,
        timeout=BOUND,
        check=False,
    )


def answering(out: str) -> list[int]:
    return [int(u) for u in re.findall(r"^unit (\d+): answers$", out, re.MULTILINE)]


def assert_found_2_and_7(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, res.stdout + res.stderr
    assert answering(res.stdout) == [2, 7], res.stdout
    assert res.stdout.rstrip().endswith("responding unit ids: 2, 7"), res.stdout
    assert f"scanning {N_UNITS} unit id(s)" in res.stdout


@pytest.fixture
def sims() -> Iterator[list[Proc]]:
    procs: list[Proc] = []
    yield procs
    for p in procs:
        p.stop()


def serve(tmp: Path, procs: list[Proc], *args: str) -> Proc:
    """`dust-sim serve` with units 2 and 7 only (the others stay silent, as on a real line)."""
    proc = Proc(
        [str(BIN / "dust-sim"), "serve", "--scenario", "none", "--units", "2,7", *args],
        tmp / f"sim{len(procs)}.log",
    )
    procs.append(proc)
    proc.wait_log(r"dust-sim: serving")
    return proc


def test_scan_serial_line(tmp_path: Path, sims: list[Proc]) -> None:
    pty = PtyPair(tmp_path)
    pty.start()
    try:
        serve(tmp_path, sims, "--rtu", pty.a, "--baud", "19200")
        res = scan("--port", pty.b, "--baud", "19200")
    finally:
        pty.kill()
    assert_found_2_and_7(res)
    assert pty.b in res.stdout


def test_scan_modbus_tcp(tmp_path: Path, sims: list[Proc]) -> None:
    sim = serve(tmp_path, sims, "--port", "0")
    port = sim.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1)
    assert_found_2_and_7(scan("--host", "127.0.0.1", "--tcp-port", port))


def test_scan_rtu_over_tcp(tmp_path: Path, sims: list[Proc]) -> None:
    sim = serve(tmp_path, sims, "--rtu-tcp", "--port", "0")
    port = sim.wait_log(r"on 127\.0\.0\.1:(\d+)").group(1)
    assert_found_2_and_7(scan("--host", "127.0.0.1", "--tcp-port", port, "--rtu"))


def test_scan_missing_serial_port(tmp_path: Path) -> None:
    missing = str(tmp_path / "ttyUSB9")
    res = scan("--port", missing)
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr
    assert missing in err and "no such port" in err, err
    assert "/dev/serial/by-id" in err, err  # what to check
    assert "Traceback" not in err


@pytest.mark.parametrize("rtu", [False, True], ids=["modbus-tcp", "rtu-over-tcp"])
def test_scan_refused_tcp_port(rtu: bool) -> None:
    # A bound socket that does not listen: connecting to it is refused, and no other test can
    # take the port meanwhile.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        res = scan("--host", "127.0.0.1", "--tcp-port", str(port), *(["--rtu"] if rtu else []))
    assert res.returncode == 1, res.stdout + res.stderr
    err = res.stderr
    assert f"127.0.0.1:{port}" in err and "connection refused" in err, err
    assert "check the address, the port" in err, err
    assert "Traceback" not in err


def test_scan_usage_errors() -> None:
    for args in (["--rtu", "--port", "/dev/ttyUSB0"], ["--units", "0-3", "--host", "x"], []):
        res = scan(*args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert res.stderr.startswith("dust-agent scan: "), res.stderr
