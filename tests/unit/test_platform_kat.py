"""Platform known answers: the documents' literal shapes, enciphered by the openssl CLI.

The expected inner JSON of each request is written here by hand from DOMAIN.md "What the
platforms take" (Hebei V1.1: an object {"qybm", "data": {"rts" | "events": [items]}}); the
expected ciphertext is made from that literal by `openssl enc` (DES-CBC with PKCS#5 padding
and the document's sample IV 12345678, then Base64, then upper-case hex; SM4-CBC then hex for
the ministry style). Neither uses the agent's crypto or mapping code. Both directions are
checked: what the agent sends equals the openssl ciphertext of the literal, and what the agent
sends, deciphered by openssl, is the literal document. The reference receiver refuses the
shape the document does not print (a bare list), saying why.
"""

from __future__ import annotations

import subprocess
from typing import Any

import numpy as np
import orjson
import pytest

from agent.core.model import AlarmEvent, Frame, PointSpec
from agent.core.platformspec import PlatformSpec
from agent.store.outbox import Batch, Row
from agent.uplink.payload import encode_alarms, encode_telemetry
from agent.uplink.platforms import hebei, mem
from agent.uplink.platforms.receiver import Receiver
from agent.uplink.platforms.records import Translator
from tests.factories import point

QYBM = "130100000001"  # 12 digits
WGBM = "13010000000101"  # qybm + "01"
HT = "1301000000010101001"  # qybm + equipment 01 + type 01 + sequence 001: hopper temperature
DP = "1301000000010102001"  # ... type 02: differential pressure (0 decimals)
DES_KEY = "hbkey-01"  # an issued 8-byte key (ASCII)
DES_IV = "12345678"  # the document's sample IV
SM4_KEY, SM4_IV = "0123456789abcdef", "fedcba9876543210"
T0 = 1714536000.0  # 2024-05-01 12:00:00 in China (UTC+8)

RTS_DOC = (
    '{"qybm":"130100000001","data":{"rts":['
    '{"tnm":"1301000000010101001","ts":"2024-05-01 12:00:00","val":"27.20"},'
    '{"tnm":"1301000000010102001","ts":"2024-05-01 12:00:00","val":"1502"}]}}'
)
EVENTS_DOC = (
    '{"qybm":"130100000001","data":{"events":['
    '{"ts":"2024-05-01 12:00:05","oname":"1301000000010101001","avx":"72.40","scd":4,'
    '"threshold":"70.00","content":"1号除尘器 灰斗温度 报警：72.4 °C ≥ 70 °C"},'
    '{"ts":"2024-05-01 12:03:05","oname":"1301000000010101001","avx":"66.00","scd":0,'
    '"threshold":"70.00","content":"1号除尘器 灰斗温度 报警消除：66 °C ≤ 70 °C"}]}}'
)
MEM_DOC = (
    '{"qybm":"130100000001","wgbm":"13010000000101","datas":['
    '{"pointCode":"1301000000010101001","value":"27.20","unit":"°C",'
    '"collectTime":"2024-05-01 12:00:00"},'
    '{"pointCode":"1301000000010102001","value":"1502","unit":"Pa",'
    '"collectTime":"2024-05-01 12:00:00"}]}'
)


def openssl(*args: str, data: bytes) -> bytes:
    done = subprocess.run(["openssl", "enc", *args], input=data, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def des(*args: str, data: bytes) -> bytes:
    """openssl's DES-CBC (PKCS#5 padding is openssl's default) with Base64 on one line."""
    k, iv = DES_KEY.encode().hex(), DES_IV.encode().hex()
    return openssl("-des-cbc", "-K", k, "-iv", iv, "-a", "-A",
                   "-provider", "legacy", "-provider", "default", *args, data=data)  # fmt: skip


def sm4(*args: str, data: bytes) -> bytes:
    k, iv = SM4_KEY.encode().hex(), SM4_IV.encode().hex()
    return openssl("-sm4-cbc", "-K", k, "-iv", iv, *args, data=data)


def hebei_expected(doc: str) -> str:
    """The document's data field for an inner JSON: DES-CBC, Base64, upper-case hex."""
    return des(data=doc.encode()).strip().hex().upper()


def hebei_decipher(data: str) -> Any:
    return orjson.loads(des("-d", data=bytes.fromhex(data)))


POINTS: list[PointSpec] = [
    point(0, code=HT, unit="°C", code_explicit=True),
    point(1, code=DP, unit="Pa", code_explicit=True),
]


def spec(profile: str = "hebei_v1_1") -> PlatformSpec:
    common: dict[str, Any] = {
        "name": profile,
        "url": "http://127.0.0.1:1",
        "enterprise_code": QYBM,
        "gateway_code": WGBM,
        "codes": frozenset({HT, DP}),
        "decimals": {DP: 0},
    }
    if profile == "mem":
        return PlatformSpec(
            profile="mem", key=SM4_KEY.encode(), iv=SM4_IV.encode(),
            telemetry=mem.EXAMPLE_TELEMETRY, alarm=mem.EXAMPLE_ALARM, appid="APP1",
            appsecret="S3CRET", hex_upper=False, **common,
        )  # fmt: skip
    return PlatformSpec(
        profile="hebei_v1_1", key=DES_KEY.encode(), iv=DES_IV.encode(),
        telemetry=hebei.RTS, alarm=hebei.EVENTS, **common,
    )  # fmt: skip


def telemetry_batch() -> Batch:
    frame = Frame(
        index=np.arange(2, dtype=np.intp),
        ts=np.full(2, T0),
        value=np.array([27.2, 1501.6]),
        quality=np.zeros(2, dtype=np.uint8),
    )
    e = encode_telemetry(frame, POINTS)
    return Batch(e.stream, (Row(1, 1, e.n, e.body, e.ts),))


def alarm_batch() -> Batch:
    def event(transition: str, level: str | None, value: float, dt: float, zh: str) -> AlarmEvent:
        return AlarmEvent(
            alarm_id=f"{HT}:high", point=HT, device="DC-1", key="hopper_temp",
            direction="high", transition=transition, level=level,  # type: ignore[arg-type]
            prev_level=None, value=value, threshold=70.0, unit="°C", ts=T0 + dt, text_zh=zh,
            text_en="", reading=value,
        )  # fmt: skip

    e = encode_alarms(
        [
            event("raise", "alarm", 72.4, 5, "1号除尘器 灰斗温度 报警：72.4 °C ≥ 70 °C"),
            event("clear", None, 66.0, 185, "1号除尘器 灰斗温度 报警消除：66 °C ≤ 70 °C"),
        ]
    )
    return Batch(e.stream, (Row(1, 1, e.n, e.body, e.ts),))


def sent(s: PlatformSpec, batch: Batch) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(endpoint, outer body, headers) of the one request the agent makes for a batch."""
    (req,), _ = Translator(s).requests(batch)
    seal = hebei.seal if s.profile == "hebei_v1_1" else mem.seal
    body, headers = seal(s, req.body)
    return req.endpoint, orjson.loads(body), headers


@pytest.mark.parametrize(
    ("batch", "endpoint", "doc"),
    [(telemetry_batch, "rtsData", RTS_DOC), (alarm_batch, "eventsData", EVENTS_DOC)],
)
def test_hebei_request_is_the_documents_object_under_openssl_des(
    batch: Any, endpoint: str, doc: str
) -> None:
    got_endpoint, outer, headers = sent(spec(), batch())
    assert got_endpoint == endpoint and headers == {}
    assert list(outer) == ["qybm", "wgbm", "data"]
    assert (outer["qybm"], outer["wgbm"]) == (QYBM, WGBM)
    assert outer["data"] == hebei_expected(doc)  # the ciphertext, byte for byte
    assert hebei_decipher(outer["data"]) == orjson.loads(doc)


def test_hebei_known_answer_of_the_cipher_chain() -> None:
    # made once with the shell, no Python involved:
    #   printf '%s' "$DOC" | openssl enc -des-cbc -K $(printf hbkey-01 | xxd -p) \
    #     -iv $(printf 12345678 | xxd -p) -provider legacy -provider default \
    #     | base64 -w0 | xxd -p -u | tr -d '\n'
    doc = '{"qybm":"130100000001","data":{"rts":[]}}'
    kat = (
        "2B56336B656C64797846576335447241454A637378376244496775487534426F5138384F2B744242"
        "42746C496C4B474C32794170514C676543507138316D5237"
    )
    assert hebei_expected(doc) == kat
    assert hebei.seal(spec(), doc.encode())[0] == orjson.dumps(
        {"qybm": QYBM, "wgbm": WGBM, "data": kat}
    )


def test_mem_request_is_the_mapping_under_openssl_sm4() -> None:
    endpoint, outer, headers = sent(spec("mem"), telemetry_batch())
    assert endpoint == "realtime" and headers == {"appsecret": "S3CRET"}
    assert list(outer) == ["appid", "data"] and outer["appid"] == "APP1"
    assert outer["data"] == sm4(data=MEM_DOC.encode()).hex()  # lower-case hex
    assert orjson.loads(sm4("-d", data=bytes.fromhex(outer["data"]))) == orjson.loads(MEM_DOC)


def post(rec: Receiver, endpoint: str, doc: str) -> tuple[int, Any]:
    """What the reference receiver answers to a request made with openssl alone."""
    body = {"qybm": QYBM, "wgbm": WGBM, "data": hebei_expected(doc)}
    return rec.handle(endpoint, orjson.dumps(body), {"Content-Type": "application/json"})


def test_receiver_takes_the_documents_object_and_refuses_a_bare_list() -> None:
    rec = Receiver(spec())
    assert post(rec, "rtsData", RTS_DOC) == (200, {"code": 200, "msg": "success"})
    assert post(rec, "eventsData", EVENTS_DOC) == (200, {"code": 200, "msg": "success"})
    assert [i["tnm"] for i in rec.items("rtsData")] == [HT, DP]
    assert [i["scd"] for i in rec.items("eventsData")] == [4, 0]
    items = RTS_DOC[RTS_DOC.index("[") : RTS_DOC.rindex("]") + 1]
    status, answer = post(rec, "rtsData", items)  # the bare list the agent used to send
    assert status == 200 and answer["code"] == 400
    assert answer["msg"] == (
        'the data is not a JSON object; the platform reads {"qybm", "data": {"rts": [items]}}'
    )
    wrong = '{"qybm":"130100000001","data":{"events":[]}}'
    assert post(rec, "rtsData", wrong)[1]["msg"] == (
        'data (the platform reads {"qybm", "data": {"rts": [items]}}): missing [\'rts\'], '
        "unexpected ['events']"
    )
    assert len(rec.received) == 2 and len(rec.refused) == 2
