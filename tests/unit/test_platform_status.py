"""What a platform is told about alarms: per point, the transitions of its worst active state;
`avx` the point's own reading; non-limit kinds through the scd table; comm_loss per device
point; the state survives a restart. Expected items are written by hand from DOMAIN.md."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.config import ConfigError, load_config
from agent.core.model import AlarmEvent
from agent.core.platformspec import DEFAULT_SCD, NOT_SENT, PlatformSpec
from agent.store.outbox import Batch, Row
from agent.uplink.payload import encode_alarms
from agent.uplink.platforms import hebei
from agent.uplink.platforms.forwarder import PlatformCodec
from agent.uplink.platforms.records import Translator
from agent.uplink.platforms.status import PointStatus
from tests.unit.test_platforms import CODES, QYBM, config, secret

HT = f"{QYBM}0101001"  # DC-1 hopper temperature
DP = f"{QYBM}0102001"  # DC-1 differential pressure
T0 = 1714536000.0  # 2024-05-01 12:00:00 in China


def spec(**kw: Any) -> PlatformSpec:
    base: dict[str, Any] = {
        "name": "hebei",
        "profile": "hebei_v1_1",
        "url": "http://127.0.0.1:1",
        "enterprise_code": QYBM,
        "gateway_code": f"{QYBM}01",
        "key": b"12345678",
        "iv": b"87654321",
        "telemetry": hebei.RTS,
        "alarm": hebei.EVENTS,
        "codes": frozenset({HT, DP}),
        "devices": {"DC-1": (HT, DP)},
        "decimals": {DP: 0},
    }
    return PlatformSpec(**{**base, **kw})


def ev(
    slot: str,
    transition: str,
    level: str | None,
    *,
    kind: str = "threshold",
    value: float = 0.0,
    reading: float = math.nan,
    threshold: float = 0.0,
    dt: float = 0,
    point: str = HT,
    text: str = "",
    **extra: Any,
) -> AlarmEvent:
    direction = slot if slot in ("high", "low") else "none"
    return AlarmEvent(
        alarm_id=f"{point}:{slot}", point=point, device="DC-1", key="hopper_temp",
        direction=direction, transition=transition, level=level,  # type: ignore[arg-type]
        prev_level=None, value=value, threshold=threshold, unit="°C", ts=T0 + dt,
        text_zh=text or f"{slot} {transition}", text_en="", kind=kind, reading=reading,
        extra=extra,
    )  # fmt: skip


def comm(transition: str, dt: float, **extra: Any) -> AlarmEvent:
    level = "alarm" if transition == "raise" else None
    return AlarmEvent(
        alarm_id="DC-1:comm_loss", point="DC-1", device="DC-1", key="comm_loss",
        direction="none", transition=transition, level=level,  # type: ignore[arg-type]
        prev_level=None, value=0.0, threshold=0.0, unit="", ts=T0 + dt,
        text_zh="1号除尘器 通讯中断" if level else "1号除尘器 通讯恢复", text_en="",
        kind="comm_loss", extra=extra,
    )  # fmt: skip


def batch(*events: AlarmEvent, first_id: int = 1) -> Batch:
    e = encode_alarms(list(events))
    return Batch(e.stream, (Row(first_id, 1, e.n, e.body, e.ts),))


def sent(tr: Translator, *events: AlarmEvent) -> list[dict[str, Any]]:
    reqs, pending = tr.requests(batch(*events))
    tr.commit(pending)
    return [i for r in reqs for i in orjson.loads(r.body)["data"]["events"]]


def brief(items: list[dict[str, Any]]) -> list[tuple[str, str, int, str]]:
    return [(i["oname"][-6:], i["avx"], i["scd"], i["threshold"]) for i in items]


def test_rate_alarm_is_not_sent_and_avx_is_the_points_reading() -> None:
    """Issue 12 item 2: the rate alarm reached the platform as scd 4 with avx = the rate."""
    tr = Translator(spec())
    items = sent(
        tr,
        ev("rate", "raise", "alarm", kind="rate", value=26.8, reading=42.6, threshold=8.0),
        ev("high", "raise", "warning", value=61.5, reading=61.5, threshold=60.0, dt=20),
        ev("rate", "clear", None, kind="rate", value=-71.9, reading=85.0, threshold=8.0, dt=40),
    )
    assert brief(items) == [("101001", "61.50", 3, "60.00")]


def test_configured_rate_code_sends_the_reading_and_no_limit() -> None:
    tr = Translator(spec(scd={**DEFAULT_SCD, "rate.alarm": 4}))
    items = sent(
        tr,
        ev("rate", "raise", "alarm", kind="rate", value=26.8, reading=42.6, text="速率报警 26.8"),
        ev("rate", "clear", None, kind="rate", value=1.0, reading=50.0, dt=30, text="速率消除"),
    )
    assert brief(items) == [("101001", "42.60", 4, ""), ("101001", "50.00", 0, "")]
    assert [i["content"] for i in items] == ["速率报警 26.8", "速率消除"]


def test_worst_active_state_per_point_and_a_clear_only_when_nothing_is_active() -> None:
    """Issue 12 item 3: the status fell from 4 to 3, and a clear came while an alarm was on."""
    tr = Translator(spec(scd={**DEFAULT_SCD, "state": 4}))
    items = sent(
        tr,
        ev("high", "raise", "warning", reading=61.0, threshold=60.0, dt=0),  # 3
        ev("state", "raise", "alarm", kind="state", reading=1.0, threshold=1.0, dt=1),  # 4
        # a tie at level alarm, scd 4: the high alarm was active first, so it is the worst
        ev("high", "escalate", "alarm", reading=71.0, threshold=70.0, dt=2),
        ev("state", "clear", None, kind="state", reading=0.0, threshold=1.0, dt=3),  # no change
        ev("high", "deescalate", "warning", reading=65.0, threshold=60.0, dt=4),  # 3
        ev("high", "clear", None, reading=50.0, threshold=60.0, dt=5),  # 0
        ev("high", "clear", None, reading=50.0, threshold=60.0, dt=6),  # nothing: already clear
    )
    assert brief(items) == [
        ("101001", "61.00", 3, "60.00"),
        ("101001", "1.00", 4, "1.00"),
        ("101001", "71.00", 4, "70.00"),
        ("101001", "65.00", 3, "60.00"),
        ("101001", "50.00", 0, "60.00"),
    ]


def test_comm_loss_goes_to_every_point_of_the_device_with_its_code() -> None:
    tr = Translator(spec())
    items = sent(
        tr,
        ev("high", "raise", "alarm", reading=72.0, threshold=70.0),
        comm("raise", 10),
        comm("clear", 30, readings={HT: 80.5, DP: 1500.4}),
    )
    assert brief(items) == [
        ("101001", "72.00", 4, "70.00"),
        ("101001", "", 5, ""),  # comm_loss (5) is worse than the high alarm (4) at one level
        ("102001", "", 5, ""),
        ("101001", "80.50", 4, "70.00"),  # back to the high alarm, with the first reading
        ("102001", "1500", 0, ""),
    ]
    assert (
        items[1]["content"] == "1号除尘器 通讯中断" and items[4]["content"] == "1号除尘器 通讯恢复"
    )
    assert items[3]["content"] == "high raise"  # the high alarm's own text


def test_non_limit_kinds_default_to_not_sent() -> None:
    for kind in ("rate", "deviation", "drop", "count", "stale", "frozen", "range", "loop"):
        assert DEFAULT_SCD[kind] == NOT_SENT
    assert DEFAULT_SCD["comm_loss"] == 5 and DEFAULT_SCD["high.alarm"] == 4


def test_status_is_committed_on_acceptance_and_survives_a_restart(tmp_path: Path) -> None:
    f = tmp_path / "platform-hebei.status.json"
    codec = PlatformCodec(spec(), f)
    raise_ = batch(ev("high", "raise", "alarm", reading=72.0, threshold=70.0))
    assert len(codec.encode(raise_)) == 1
    assert not f.exists()  # not accepted yet: nothing committed
    assert len(codec.encode(raise_)) == 1  # sent again whole after a failure
    codec.acked(raise_)
    again = PlatformCodec(spec(), f)  # a restart
    assert again.encode(raise_) == []  # a batch sent again after the crash: already told
    low = batch(ev("low", "raise", "warning", reading=20.0, threshold=25.0), first_id=2)
    assert again.encode(low) == []  # not worse than the high alarm
    again.acked(low)
    clear = batch(ev("high", "clear", None, reading=60.0, threshold=70.0), first_id=3)
    (msg,) = again.encode(clear)
    (item,) = orjson.loads(msg.payload)["data"]["events"]
    assert (item["scd"], item["avx"], item["threshold"]) == (2, "60.00", "25.00")
    assert PointStatus.load(tmp_path / "none.json") == PointStatus()


# -- config: the Hebei code formats, at their key paths --------------------------------------


@pytest.mark.parametrize(
    ("change", "path", "text"),
    [
        ({"enterprise_code": "E100"}, "platforms[0].enterprise_code", "12 digits"),
        ({"gateway_code": "GW01"}, "platforms[0].gateway_code", f'"01" (wgbm): {QYBM}01'),
        ({"site": {"gateway_id": "GW01"}}, "site.gateway_id", 'enterprise code + "01"'),
        ({"code": "1301000000010101"}, "devices[0].override.hopper_temp.code", "19 digits"),
        ({"code": "9999000000010101001"}, "devices[0].override.hopper_temp.code", QYBM),
    ],
)
def test_check_refuses_malformed_codes_with_key_paths(
    tmp_path: Path, change: dict[str, Any], path: str, text: str
) -> None:
    import tomllib

    from firmware_sim.harness import dump_toml

    f = config(tmp_path, {"points": ["DC-1.hopper_temp", "X"]})
    data = tomllib.loads(f.read_text())
    if "code" in change:
        data["devices"][0]["override"]["hopper_temp"]["code"] = change["code"]
    elif "site" in change:
        data["site"].update(change["site"])
    else:
        data["platforms"][0].update(change)
    f.write_text(dump_toml(data))
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert f"{path}: " in str(err.value) and text in str(err.value)
    assert "expected" in str(err.value)


def test_hebei_iv_is_required(tmp_path: Path) -> None:
    import tomllib

    from firmware_sim.harness import dump_toml

    f = config(tmp_path, {"points": ["X"]})
    data = tomllib.loads(f.read_text())
    del data["platforms"][0]["iv_file"]
    f.write_text(dump_toml(data))
    with pytest.raises(ConfigError) as err:
        load_config(f)
    assert "platforms[0].iv_file" in str(err.value) and "not the key" in str(err.value)
    data["platforms"][0]["iv_file"] = secret(tmp_path, "iv2", "abcdefgh")
    f.write_text(dump_toml(data))
    (pl,) = load_config(f).platforms
    assert (pl.key, pl.iv) == (b"12345678", b"abcdefgh")
    assert copy.copy(CODES)  # the shared codes are the document's form


def test_chinese_texts_name_the_device_by_its_name_zh() -> None:
    from agent.rules.texts import make_event
    from agent.service.comm import comm_loss_events, with_readings
    from agent.source.poller import DeviceChange
    from tests.factories import point

    p = point(0, device="DC-1", device_zh="1号除尘器", name_zh="灰斗温度", unit="°C", code=HT)
    e = make_event(p, "high", 0, 2, value=72.4, threshold=70.0, ts=T0, reading=72.4)
    assert e.text_zh == "1号除尘器 灰斗温度 报警：72.4 °C ≥ 70 °C" and e.reading == 72.4
    assert e.text_en.startswith("DC-1 ")
    lost = DeviceChange("plant", 1, ("DC-1",), lost=True, ts=T0, reason="timeout")
    (raised,) = comm_loss_events(lost, {"DC-1": "1号除尘器"})
    assert raised.text_zh == "1号除尘器 通讯中断"
    back = DeviceChange("plant", 1, ("DC-1",), lost=False, ts=T0 + 9, reason="")
    (clear,) = with_readings(comm_loss_events(back), [p], lambda i: 80.5)
    assert clear.text_zh == "DC-1 通讯恢复"  # no name_zh given: the device name
    assert clear.to_record()["readings"] == {HT: 80.5}
    assert clear.to_record()["reading"] is None  # the device's event: no reading of its own
