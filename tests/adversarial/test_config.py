"""Installer mistakes in config files: each refused or warned with file, key path and a fix."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli.preflight import EX_CANTCREAT, serial_port_warnings
from agent.config import EX_CONFIG
from agent.config.uplink import bounded_default_cap, default_cap_bytes, filesystem_bytes
from agent.core.model import BusSpec
from tests.adversarial.conftest import (
    config_error,
    dust_agent,
    example_text,
    loads,
    write_config,
)
from tests.conftest import REPO
from tests.factories import point

RTU_BUS = """
[[buses]]
name = "line1"
type = "rtu"
port = "/dev/ttyUSB7"
baud = 9600
"""


def edit(tmp_path: Path, old: str, new: str, extra: str = "") -> Path:
    """The example config with `old` replaced by `new` (which must be there) and `extra` added."""
    text = example_text(tmp_path)
    assert old in text, old
    return write_config(tmp_path, text.replace(old, new, 1) + extra)


DC1_OVERRIDE = 'code = "1301000000010101001"'


# -- 1. override scale 0 ---------------------------------------------------------------------


def test_override_scale_zero_is_refused(tmp_path: Path) -> None:
    exc = config_error(edit(tmp_path, DC1_OVERRIDE, DC1_OVERRIDE + "\nscale = 0"))
    assert exc.path == "devices[0].override.hopper_temp.scale"
    assert "scale must not be 0" in exc.message


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_scale_or_offset_is_refused(tmp_path: Path, value: str) -> None:
    exc = config_error(edit(tmp_path, DC1_OVERRIDE, f"{DC1_OVERRIDE}\noffset = {value}"))
    assert exc.path == "devices[0].override.hopper_temp.offset"
    assert "finite" in exc.message


# -- 3. [rules.defaults] errors name the installer's file and key -----------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("on_delay = -5", "on_delay"),
        ("rate_window = 0", "rate_window"),
        ("high_warning = 1e9", "high_warning"),
    ],
)
def test_rules_defaults_error_names_the_config_and_key(tmp_path: Path, line: str, key: str) -> None:
    f = edit(tmp_path, "on_delay = 3.0", line if key == "on_delay" else f"on_delay = 3.0\n{line}")
    messages = set()
    for _ in range(3):  # stable from run to run (no set iteration order)
        exc = config_error(f)
        assert exc.file == f
        assert exc.path == f"rules.defaults.{key}", exc
        messages.add(str(exc))
    assert len(messages) == 1


def test_rules_defaults_error_is_stable_across_processes(tmp_path: Path) -> None:
    f = edit(tmp_path, "on_delay = 3.0", "on_delay = -5")
    outs = {dust_agent("check", "-c", str(f)).stderr for _ in range(3)}
    assert len(outs) == 1, outs
    (err,) = outs
    assert f"{f}: rules.defaults.on_delay:" in err and "default.toml" not in err


def test_a_pack_kind_broken_by_the_configs_defaults_blames_the_defaults(tmp_path: Path) -> None:
    # the pack's hopper_temperature alarms at 70 °C; a default warning at 100 is above it
    f = edit(tmp_path, "on_delay = 3.0", "on_delay = 3.0\nhigh_warning = 100.0")
    exc = config_error(f)
    assert (exc.file, exc.path) == (f, "rules.defaults.high_warning")
    assert "[rules.kinds." in exc.message


# -- 4. a URL or a port in host -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "hint"),
    [
        ("mqtt://127.0.0.1", 'host = "127.0.0.1"'),
        ("mqtts://broker.example:8883", "port = 8883"),
        ("127.0.0.1:1883", "port = 1883"),
        ("tcp://u:secret@10.0.0.9", "***@"),
    ],
)
def test_uplink_host_with_scheme_or_port_is_refused(tmp_path: Path, host: str, hint: str) -> None:
    f = edit(tmp_path, '[uplink]\nhost = "127.0.0.1"', f'[uplink]\nhost = "{host}"')
    exc = config_error(f)
    assert exc.path == "uplink.host"
    assert hint in exc.message and "secret" not in str(exc)


def test_bus_host_url_is_refused(tmp_path: Path) -> None:
    exc = config_error(
        edit(tmp_path, 'host = "127.0.0.1"\nport = 5020', 'host = "modbus://10.0.0.5"\nport = 5020')
    )
    assert exc.path == "buses[0].host"
    assert 'host = "10.0.0.5"' in exc.message


def test_ipv6_host_is_accepted(tmp_path: Path) -> None:
    loads(edit(tmp_path, '[uplink]\nhost = "127.0.0.1"', '[uplink]\nhost = "::1"'))


# -- 5. unit ids by bus type, and one unit id twice on a bus -----------------------------------


def _rtu_device(unit: int, name: str = "S-1") -> str:
    return f"""
[[devices]]
name = "{name}"
bus = "line1"
unit = {unit}
[[devices.points]]
key = "t"
table = "input"
address = 0
"""


@pytest.mark.parametrize("unit", [0, 248, 255])
@pytest.mark.parametrize("bus_type", ["rtu", "rtu_tcp"])
def test_rtu_unit_ids_outside_1_247_are_refused(tmp_path: Path, unit: int, bus_type: str) -> None:
    bus = (
        RTU_BUS
        if bus_type == "rtu"
        else RTU_BUS.replace(
            'type = "rtu"\nport = "/dev/ttyUSB7"',
            'type = "rtu_tcp"\nhost = "10.0.0.7"\nport = 4001',
        )
    )
    f = edit(tmp_path, "[[devices]]", bus.lstrip() + "\n[[devices]]", _rtu_device(unit))
    exc = config_error(f)
    assert exc.path == "devices[2].unit"
    assert "1..247" in exc.message and "broadcast" in exc.message


@pytest.mark.parametrize("unit", [0, 255])
def test_tcp_unit_ids_0_and_255_stay_valid(tmp_path: Path, unit: int) -> None:
    loads(edit(tmp_path, "unit = 1", f"unit = {unit}"))


def test_shared_unit_id_warns_with_both_key_paths(tmp_path: Path) -> None:
    f = edit(
        tmp_path,
        "[[devices]]",
        RTU_BUS.lstrip() + "\n[[devices]]",
        _rtu_device(5) + _rtu_device(5, "S-2").replace("address = 0", "address = 10"),
    )
    cfg = loads(f)
    (warning,) = cfg.warnings
    assert "devices[3].unit" in warning and "devices[2].unit" in warning


def test_shared_unit_id_with_the_same_registers_is_an_error(tmp_path: Path) -> None:
    f = edit(tmp_path, "unit = 2", "unit = 1")  # DC-2 on DC-1's unit id, the same profile
    exc = config_error(f)
    assert exc.path == "devices[1].unit"
    assert "devices[0].unit" in exc.message and "own unit id" in exc.message


# -- 7. encodings, BOM, full-width punctuation, duplicate names --------------------------------


def test_bom_gets_a_position_and_a_hint(tmp_path: Path) -> None:
    f = write_config(tmp_path, b"\xef\xbb\xbf" + example_text(tmp_path).encode())
    exc = config_error(f)
    assert exc.path == "line 1, column 1" and "without BOM" in exc.message


def test_gbk_file_gets_the_first_bad_byte(tmp_path: Path) -> None:
    text = example_text(tmp_path)
    data = text.encode("gbk")
    f = write_config(tmp_path, data)
    exc = config_error(f)
    first = next(i for i, b in enumerate(data) if b > 127)  # the first non-ASCII byte
    line = data[:first].count(b"\n") + 1
    assert exc.path.startswith(f"line {line}, column ")
    assert f"byte offset {first}" in exc.message and "GBK" in exc.message


@pytest.mark.parametrize(
    ("old", "new", "hint"),
    [
        ('name = "DC-1"', "name = \u201cDC-1\u201d", 'ASCII " instead of \u201c'),
        ('name = "DC-1"', 'name \uff1d "DC-1"', "= instead of \uff1d"),
        ("unit = 1\n", "unit\uff1a1\n", ": instead of \uff1a"),
    ],
)
def test_full_width_punctuation_gets_a_hint(tmp_path: Path, old: str, new: str, hint: str) -> None:
    exc = config_error(edit(tmp_path, old, new))
    assert exc.path.startswith("line ") and hint in exc.message


def test_full_width_comma_in_a_name_is_fine(tmp_path: Path) -> None:
    loads(edit(tmp_path, 'name_zh = "1号除尘器"', 'name_zh = "1号除尘器，东"'))


def test_duplicate_device_name_names_both_places(tmp_path: Path) -> None:
    exc = config_error(edit(tmp_path, 'name = "DC-2"', 'name = "DC-1"'))
    assert exc.path == "devices[1].name" and "devices[0].name" in exc.message


# -- 2. a storage directory the service user cannot write ----------------------------------------


def _other_user() -> str:
    """An unprivileged account for permission tests (we run as root in CI containers)."""
    return "nobody"


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user can reach (pytest's tmp_path is under a 0700 directory)."""
    d = Path(tempfile.mkdtemp(prefix="dust-agent-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


@pytest.mark.skipif(os.geteuid() != 0, reason="checks for another user need root")
def test_check_fails_when_the_service_user_cannot_write_storage(open_dir: Path) -> None:
    f = write_config(open_dir, example_text(open_dir))
    state = open_dir / "state"
    state.mkdir(mode=0o755)  # root's
    r = dust_agent("check", "-c", str(f), "--user", _other_user())
    assert r.returncode == EX_CANTCREAT, r.stderr
    assert f"storage directory {state}" in r.stderr and "chown" in r.stderr
    assert "Traceback" not in r.stderr
    state.chmod(0o777)
    r = dust_agent("check", "-c", str(f), "--user", _other_user())
    assert r.returncode == 0, r.stderr
    (state / "outbox.db").write_bytes(b"")  # root's, 0644: the agent could not open it
    r = dust_agent("check", "-c", str(f), "--user", _other_user())
    assert r.returncode == EX_CANTCREAT and "outbox.db" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="checks for another user need root")
def test_check_names_a_parent_the_user_cannot_enter(tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    f = write_config(tmp_path, example_text(tmp_path))
    (tmp_path / "state").mkdir(mode=0o777)
    r = dust_agent("check", "-c", str(f), "--user", _other_user())
    assert r.returncode == EX_CANTCREAT and "Permission denied" in r.stderr
    assert "Traceback" not in r.stderr


def test_check_fails_when_this_user_cannot_write_storage(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the directory should be")
    f = write_config(tmp_path, example_text(tmp_path))
    r = dust_agent("check", "-c", str(f))
    assert r.returncode == EX_CANTCREAT, r.stderr
    assert "is not a directory" in r.stderr and "Traceback" not in r.stderr


def test_check_unknown_user_is_a_usage_error(tmp_path: Path) -> None:
    f = write_config(tmp_path, example_text(tmp_path))
    r = dust_agent("check", "-c", str(f), "--user", "no-such-user-xyz")
    assert r.returncode == EX_CONFIG and "no such user" in r.stderr


def test_run_exits_73_without_traceback_when_storage_is_not_writable(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("a file where the directory should be")
    f = write_config(tmp_path, example_text(tmp_path))
    r = dust_agent("run", "-c", str(f))
    assert r.returncode == EX_CANTCREAT, r.stderr
    assert f"storage directory {tmp_path / 'state'}" in r.stderr
    assert "Traceback" not in r.stderr


def test_the_unit_does_not_restart_on_73() -> None:
    unit = (REPO / "systemd" / "dust-agent.service").read_text()
    line = next(ln for ln in unit.splitlines() if ln.startswith("RestartPreventExitStatus="))
    assert {"73", "78"} <= set(line.split("=", 1)[1].split())


# -- 6. a closed pipe ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["check"], ["--help"], ["check", "--help"]])
def test_no_traceback_on_a_closed_pipe(tmp_path: Path, command: list[str]) -> None:
    f = write_config(tmp_path, example_text(tmp_path))
    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first line (`| head -0`)
    args = [*command, "-c", str(f)] if command == ["check"] else command
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli.main", *args],
        stdout=w,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
        check=False,
    )
    os.close(w)
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr
    assert proc.returncode in (0, 141)


# -- 8. a serial port that is not there -------------------------------------------------------


def test_check_warns_about_a_missing_serial_port(tmp_path: Path) -> None:
    f = edit(tmp_path, "[[devices]]", RTU_BUS.lstrip() + "\n[[devices]]", _rtu_device(3))
    r = dust_agent("check", "-c", str(f))
    assert r.returncode == 0, r.stderr
    assert f"warning: {f}: buses[1].port: serial port /dev/ttyUSB7 does not exist" in r.stderr
    assert "/dev/serial/by-id" in r.stderr


def test_serial_warning_lists_the_by_id_names(tmp_path: Path) -> None:
    by_id = tmp_path / "by-id"
    by_id.mkdir()
    (by_id / "usb-FTDI_FT232R_A10K1234-if00-port0").symlink_to("/dev/null")
    (warning,) = serial_port_warnings(
        [("x: buses[0].port", "/dev/ttyUSB7"), ("x: buses[1].port", "/dev/null")], by_id
    )
    assert "x: buses[0].port" in warning and "usb-FTDI_FT232R_A10K1234-if00-port0" in warning


# -- 10. the default storage cap fits the disk --------------------------------------------------


def test_default_cap_is_bounded_by_the_filesystem() -> None:
    points = [point(i, bus="b", code=f"C{i:04d}" * 4) for i in range(200)]
    buses = [BusSpec("b", "tcp", "h", 502, 1.0, 0, 0.05)]
    unbounded = default_cap_bytes(points, buses)
    fs = 80 * 1024**3  # the 80 GB disk of the report
    assert unbounded > fs  # 7 days at 50 ms polls: more than the whole disk
    cap, basis = bounded_default_cap(points, buses, fs)
    assert cap == fs // 2 and "50%" in basis and "80.0 GiB" in basis
    small, why = bounded_default_cap(points[:1], [BusSpec("b", "tcp", "h", 502, 1.0, 0, 60)], fs)
    assert small == default_cap_bytes(points[:1], buses) or small >= 64 * 1024**2
    assert "7 days" in why and "bounded" not in why


def test_check_prints_the_cap_and_why(tmp_path: Path) -> None:
    f = edit(tmp_path, "max_mb = 256\n", "", "")
    cfg = loads(f)
    fs = filesystem_bytes(tmp_path)
    assert fs is not None and cfg.storage.max_bytes <= fs // 2
    r = dust_agent("check", "-c", str(f))
    assert r.returncode == 0, r.stderr
    assert "7 days at the poll rates" in r.stdout


def test_check_warns_when_max_mb_exceeds_the_filesystem(tmp_path: Path) -> None:
    f = edit(tmp_path, "max_mb = 256", "max_mb = 1e12")
    r = dust_agent("check", "-c", str(f))
    assert r.returncode == 0, r.stderr
    assert f"warning: {f}: storage.max_mb:" in r.stderr and "filesystem" in r.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a read-only tmpfs needs root")
def test_read_only_storage_is_a_warning_not_73(tmp_path: Path) -> None:
    """A read-only or full disk is a fault the running agent rides out (it reports
    storage_error and stores again later, tests/integration/test_disk_faults.py): `check`
    warns, it does not fail as for a directory the service user does not own."""
    from tests.integration.test_disk_faults import mount, tmpfs

    f = write_config(tmp_path, example_text(tmp_path))
    with tmpfs(tmp_path / "state", "1m") as state:
        mount("-o", "remount,ro", str(state))
        r = dust_agent("check", "-c", str(f))
    assert r.returncode == 0, r.stderr
    assert "warning: storage directory" in r.stderr and "Read-only" in r.stderr
