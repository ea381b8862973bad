"""Platform uplinks without the network: cipher known answers, translation, config checks."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from agent.config import ConfigError, load_config
from agent.core.model import AlarmEvent, Frame, PointSpec
from agent.core.platformspec import DEFAULT_SCD, PlatformSpec, scd_for
from agent.store.outbox import Batch, Row
from agent.uplink.payload import encode_alarms, encode_telemetry
from agent.uplink.platforms import hebei, mem
from agent.uplink.platforms.crypto import (
    EnvelopeError,
    des_cbc,
    hebei_open,
    hebei_seal,
    parse_key,
    sm4_cbc,
    sm4_open,
    sm4_seal,
)
from agent.uplink.platforms.records import Translator
from firmware_sim.harness import dump_toml
from tests.factories import point as make_point
from tests.unit.test_config import BASE

PLAIN = b'[{"tnm":"P1","ts":"2024-05-01 12:00:00","val":"27.20"}]'

# Derived with the OpenSSL 3 command line, independently of this code:
#   printf '%s' "$PLAIN" | openssl enc -des-cbc -provider legacy -provider default \
#       -K 3132333435363738 -iv 3837363534333231 | base64 -w0 | xxd -p -u | tr -d '\n'
# (the same with -des-ede3-cbc and the key given three times, in the default provider)
HEBEI_KAT = (
    "7A76316D616732314561705172586857695056506E3370573346306E32566F336A61592B626467375"
    "74A2F526956636274745031754A45664E5A64363942504F75594E5544516C523149553D"
)
#   printf '%s' "$PLAIN" | openssl enc -sm4-cbc -K 30313233343536373839616263646566 \
#       -iv 66656463626139383736353433323130 | xxd -p | tr -d '\n'
SM4_KAT = (
    "8269a9d5774c6ef3cde27d06642c2beab5385b6f4bdcd506e72492f941ee12cebe88674a02c682350725ccb4"
    "738aa8a1caf344f897aa6b25c7850252e8a7701c"
)


def test_des_cbc_fips81_vector() -> None:
    # FIPS 81, appendix C (CBC): "Now is the time for all " under key 0123456789abcdef
    key, iv = bytes.fromhex("0123456789abcdef"), bytes.fromhex("1234567890abcdef")
    cipher = des_cbc(key, iv, b"Now is the time for all ")
    assert cipher[:24].hex() == "e5c7cdde872bf27c43e934008c389c0f683788499a7c05f6"
    assert len(cipher) == 32  # PKCS#5 adds a whole block to a 24-byte plaintext


def test_sm4_gbt32907_vector() -> None:
    # GB/T 32907-2016 appendix A: one block; CBC with a zero IV equals ECB for it
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    cipher = sm4_cbc(key, bytes(16), key)
    assert cipher[:16].hex() == "681edf34d206965e86b3e94f536e4246"


def test_hebei_envelope_known_answer() -> None:
    assert hebei_seal(b"12345678", b"87654321", PLAIN) == HEBEI_KAT
    assert hebei_open(b"12345678", b"87654321", HEBEI_KAT) == PLAIN


def test_sm4_envelope_known_answer() -> None:
    key, iv = b"0123456789abcdef", b"fedcba9876543210"
    assert sm4_seal(key, iv, PLAIN) == SM4_KAT
    assert sm4_open(key, iv, SM4_KAT.upper()) == PLAIN


def test_wrong_key_does_not_open() -> None:
    with pytest.raises(EnvelopeError, match="wrong key or IV"):
        hebei_open(b"12345670", b"87654321", HEBEI_KAT)
    with pytest.raises(EnvelopeError):
        sm4_open(b"0123456789abcdeX", b"fedcba9876543210", SM4_KAT)
    with pytest.raises(EnvelopeError, match="hexadecimal"):
        hebei_open(b"12345678", b"87654321", "XYZ")


def test_keys_as_text_or_hex() -> None:
    assert parse_key("12345678", 8, "key") == b"12345678"
    assert parse_key("3132333435363738", 8, "key") == b"12345678"
    with pytest.raises(ValueError, match="8 ASCII characters or 16 hexadecimal digits"):
        parse_key("1234567", 8, "the key")


# -- translation -----------------------------------------------------------------------------


def point(i: int, code: str) -> PointSpec:
    return make_point(
        i, key=f"k{i}", code=code, name_zh="温度", name_en="temp", address=i, unit="°C",
        code_explicit=True,
    )  # fmt: skip


POINTS = [point(0, "HB-T1"), point(1, "HB-P1"), point(2, "LOCAL")]


def spec(**kw: Any) -> PlatformSpec:
    base: dict[str, Any] = {
        "name": "hebei",
        "profile": "hebei_v1_1",
        "url": "http://127.0.0.1:1",
        "enterprise_code": "E1",
        "gateway_code": "G1",
        "key": b"12345678",
        "iv": b"87654321",
        "telemetry": hebei.RTS,
        "alarm": hebei.EVENTS,
        "codes": frozenset({"HB-T1", "HB-P1"}),
        "decimals": {"HB-P1": 0},
        "period": 60.0,
    }
    base.update(kw)
    return PlatformSpec(**base)


def batch_of(*entries: Any) -> Batch:
    rows = tuple(Row(i + 1, 1, e.n, e.body, e.ts) for i, e in enumerate(entries))
    return Batch(entries[0].stream, rows)


def frame(ts: float, values: list[float]) -> Frame:
    return Frame(
        index=np.arange(3, dtype=np.intp),
        ts=np.full(3, ts),
        value=np.array(values),
        quality=np.zeros(3, dtype=np.uint8),
    )


# 2024-05-01 12:00:00 in China (UTC+8)
T0 = 1714536000.0


def test_rts_one_value_per_point_and_period_with_decimals_and_local_time() -> None:
    tr = Translator(spec())
    frames = [
        frame(T0 + 0.2, [27.2, 101.4, 1]),
        frame(T0 + 30, [28.0, 102, 1]),  # same minute: not sent
        frame(T0 + 61, [float("nan"), 103.6, 1]),  # the temperature failed: not sent
    ]
    b = batch_of(*(encode_telemetry(f, POINTS) for f in frames))
    reqs, state = tr.requests(b)
    assert [r.endpoint for r in reqs] == ["rtsData"]
    assert orjson.loads(reqs[0].body) == {
        "qybm": "E1",
        "data": {
            "rts": [
                {"tnm": "HB-T1", "ts": "2024-05-01 12:00:00", "val": "27.20"},
                {"tnm": "HB-P1", "ts": "2024-05-01 12:00:00", "val": "101"},
                {"tnm": "HB-P1", "ts": "2024-05-01 12:01:01", "val": "104"},
            ]
        },
    }
    # not committed (the request was not acknowledged): the same batch gives the same request
    assert tr.requests(b)[0] == reqs
    tr.commit(state)
    assert tr.requests(b)[0] == []


def alarm(transition: Any, level: Any, direction: Any = "high", code: str = "HB-T1") -> AlarmEvent:
    return AlarmEvent(
        alarm_id=f"{code}:{direction}", point=code, device="DC-1", key="k0",
        direction=direction, transition=transition, level=level, prev_level=None, value=85.25,
        threshold=80.0, unit="°C", ts=T0 + 5, text_zh="1号除尘器温度高报警", text_en="high",
        reading=85.25,
    )  # fmt: skip


def test_events_raise_and_clear_with_scd_threshold_and_chinese_text() -> None:
    tr = Translator(spec())
    events = [
        alarm("raise", "alarm"),
        alarm("ack", "alarm"),  # a local operator action: not sent
        alarm("raise", "warning", "low"),
        alarm("clear", None),
        alarm("raise", "alarm", code="LOCAL"),  # not a point of this platform
    ]
    reqs, _ = tr.requests(batch_of(encode_alarms(events)))
    doc = orjson.loads(reqs[0].body)
    assert list(doc) == ["qybm", "data"] and list(doc["data"]) == ["events"]
    items = doc["data"]["events"]
    assert reqs[0].endpoint == "eventsData"
    # the point's worst active state: high alarm (4); the low warning is not worse (nothing
    # sent); the high alarm clears: the low warning is now the worst (2), not a clear
    assert [i["scd"] for i in items] == [4, 2]
    assert items[0] == {
        "ts": "2024-05-01 12:00:05",
        "oname": "HB-T1",
        "avx": "85.25",
        "scd": 4,
        "threshold": "80.00",
        "content": "1号除尘器温度高报警",
    }


def test_scd_table_lookup_order() -> None:
    table = {**DEFAULT_SCD, "comm_loss": 9, "rate.alarm": 7}
    assert scd_for(table, "comm_loss", "none", "alarm") == 9
    assert scd_for(table, "rate", "high", "alarm") == 7
    assert scd_for(table, "threshold", "high", "warning") == 3
    assert scd_for(table, "threshold", "low", "alarm") == 1
    assert scd_for(table, "threshold", "high", None) == 0


def test_mem_mapping_builds_the_installer_document() -> None:
    s = spec(
        profile="mem",
        name="mem",
        key=b"0123456789abcdef",
        iv=b"fedcba9876543210",
        telemetry=mem.EXAMPLE_TELEMETRY,
        alarm=mem.EXAMPLE_ALARM,
        appid="APP1",
        appsecret="S3CRET",
        hex_upper=False,
    )
    reqs, _ = Translator(s).requests(batch_of(encode_telemetry(frame(T0, [1, 2, 3]), POINTS)))
    doc = orjson.loads(reqs[0].body)
    assert reqs[0].endpoint == "realtime"
    assert doc["qybm"] == "E1" and doc["wgbm"] == "G1"
    assert doc["datas"][0] == {
        "pointCode": "HB-T1",
        "value": "1.00",
        "unit": "°C",
        "collectTime": "2024-05-01 12:00:00",
    }
    body, headers = mem.seal(s, reqs[0].body)
    outer = orjson.loads(body)
    assert set(outer) == {"appid", "data"} and headers == {"appsecret": "S3CRET"}
    assert mem.open_body(s, outer) == reqs[0].body


# -- config ----------------------------------------------------------------------------------


def secret(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> str:
    f = tmp_path / name
    f.write_text(text + "\n")
    os.chmod(f, mode)
    return str(f)


QYBM = "130100000001"  # the Hebei formats: qybm 12 digits, wgbm qybm + "01", points 19 digits
CODES = {"DC-1-HT": f"{QYBM}0101001", "DC-2-HT": f"{QYBM}0201001"}
CODES |= {"X-A": f"{QYBM}0301001", "X-B": f"{QYBM}0301002"}


def config(tmp_path: Path, platform: dict[str, Any], coded: bool = True) -> Path:
    data = copy.deepcopy(BASE)
    data["site"] = {"enterprise_code": QYBM, "gateway_id": f"{QYBM}01"}
    if coded:
        for dev in data["devices"][:2]:
            dev["override"] = {"hopper_temp": {"code": CODES[f"{dev['name']}-HT"]}}
        data["devices"][2]["points"][0]["code"] = CODES["X-A"]
        data["devices"][2]["points"][1]["code"] = CODES["X-B"]
    base = {
        "profile": "hebei_v1_1",
        "url": "http://127.0.0.1:8808/api",
        "allow_http": True,
        "key_file": secret(tmp_path, "k", "12345678"),
    }
    if platform.get("profile", "hebei_v1_1") == "hebei_v1_1":
        base["iv_file"] = secret(tmp_path, "iv", "87654321")
    data["platforms"] = [{**base, **platform}]
    f = tmp_path / "agent.toml"
    f.write_text(dump_toml(data))
    return f


def test_platform_needs_explicit_point_codes_and_names_the_points(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(config(tmp_path, {}, coded=False))
    msg = str(err.value)
    assert "platforms[0]: platform 'hebei_v1_1'" in msg and "18 point(s) have none" in msg
    assert "DC-1.diff_pressure" in msg and "X.a" in msg
    # choosing only the points that have codes passes
    ok = load_config(config(tmp_path, {"points": ["DC-1.hopper_temp", "X"]}))
    (pl,) = ok.platforms
    assert pl.codes == {CODES[c] for c in ("DC-1-HT", "X-A", "X-B")}
    assert pl.enterprise_code == QYBM and pl.gateway_code == f"{QYBM}01"  # from [site]
    assert pl.devices == {"DC-1": (CODES["DC-1-HT"],), "X": (CODES["X-A"], CODES["X-B"])}


MAP = {"endpoint": "rt", "fields": {"c": "{point}"}}


@pytest.mark.parametrize(
    ("platform", "path", "text"),
    [
        ({"period": 301}, "platforms[0].period", "at most 300"),
        ({"key_file": "short"}, "platforms[0].key_file", "does not exist"),
        ({"url": "ftp://x"}, "platforms[0].url", "http://"),
        ({"telemetry": {"endpoint": "x", "fields": {"a": "{point}"}}}, "telemetry", "fixed"),
        ({"profile": "mem", "telemetry": MAP}, "key_file", "16 ASCII characters or 32 hex"),
        ({"profile": "mem"}, "platforms[0].telemetry", "config/platforms/mem.example.toml"),
        ({"point_decimals": {"nope": 1}}, "point_decimals.nope", "not the code"),
        ({"timezone": "Mars/Base"}, "timezone", "unknown time zone"),
    ],
)
def test_platform_config_errors(
    tmp_path: Path, platform: dict[str, Any], path: str, text: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(config(tmp_path, {"points": ["X"], **platform}))
    assert path in str(err.value) and text in str(err.value)


def test_group_readable_key_file_is_refused(tmp_path: Path) -> None:
    key = secret(tmp_path, "open.key", "12345678", 0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        load_config(config(tmp_path, {"points": ["X"], "key_file": key}))


def test_mem_mapping_field_names_are_checked(tmp_path: Path) -> None:
    files = {
        "key_file": secret(tmp_path, "k16", "0123456789abcdef"),
        "appid_file": secret(tmp_path, "a", "APP1"),
        "appsecret_file": secret(tmp_path, "s", "S3CRET"),
    }
    bad = {"endpoint": "rt", "fields": {"v": "{valeu}"}}
    with pytest.raises(ConfigError, match=r"telemetry\.fields\.v: unknown record field\(s\) valeu"):
        load_config(
            config(tmp_path, {"profile": "mem", "points": ["X"], "telemetry": bad, **files})
        )
    good = {"endpoint": "rt", "list_key": "datas", "fields": {"c": "{point}", "v": "{value}"}}
    cfg = load_config(
        config(tmp_path, {"profile": "mem", "points": ["X"], "telemetry": good, **files})
    )
    assert cfg.platforms[0].appsecret == "S3CRET" and cfg.platforms[0].alarm is None


@pytest.mark.parametrize("example", ["hebei", "mem"])
def test_shipped_platform_examples_load(tmp_path: Path, example: str) -> None:
    import tomllib

    from tests.conftest import REPO

    data = tomllib.loads((REPO / "config" / "agent.example.toml").read_text())
    data["profiles_dir"] = str(REPO / "config" / "profiles")
    data["rules_pack"] = str(REPO / "config" / "rules" / "default.toml")
    data["storage"]["dir"] = str(tmp_path / "state")
    entry = tomllib.loads((REPO / "config" / "platforms" / f"{example}.example.toml").read_text())
    (pl,) = entry["platforms"]
    size = 8 if example == "hebei" else 16
    for key in [k for k in pl if k.endswith("_file")]:
        pl[key] = secret(tmp_path, key, "k" * size)
    pl.setdefault("points", ["DC-1.hopper_temp"])  # the example's one explicit code
    data["platforms"] = [pl]
    f = tmp_path / "agent.toml"
    f.write_text(dump_toml(data))
    (spec_,) = load_config(f).platforms
    assert spec_.codes == {"1301000000010101001"} and spec_.profile in ("hebei_v1_1", "mem")


def test_rehearse_cli_lists_the_receivers_fault_modes() -> None:
    """The CLI keeps its own copy so that building the parser imports no platform code."""
    from agent.cli.rehearse import FAULT_MODES
    from agent.uplink.platforms.receiver import FAULTS

    assert tuple(FAULT_MODES) == tuple(FAULTS)
