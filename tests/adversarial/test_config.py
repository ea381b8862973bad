"""Installer mistakes in config files: each refused or warned with file, key path and a fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adversarial.conftest import config_error, example_text, loads, write_config

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


DC1_OVERRIDE = 'code = "130100000001DC01HT"'


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
    from tests.adversarial.conftest import dust_agent

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
