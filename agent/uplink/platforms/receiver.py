"""Reference receivers: decrypt, validate every field, answer like the platform.

`Receiver(spec)` serves one profile (hebei_v1_1 or mem) on a loopback port with the same
keys, codes and field mapping as the agent's [[platforms]] entry. It is the tests' platform
and the installer's rehearsal (`dust-agent platform-rehearse`): point the entry's url at it
and watch what arrives before going live.

Answers (HTTP 200, like the platforms): {"code": 200, "msg": "success"} for a request whose
every field is right; {"code": 400, "msg": ...} for a wrong field, naming it; {"code": 401,
"msg": ...} for data that does not decrypt (wrong key or IV) or a wrong appid/appsecret;
HTTP 404 for an unknown endpoint. `answer_code` makes it answer another code to requests it
accepted (a platform that refuses, to rehearse the retries); `stop()` takes it down (the
port refuses connections) and `start()` brings it back on the same port.

Faults: `inject(*faults)` makes the next requests fail, one fault each, in order, before
they are looked at (not accepted): "http500" (HTTP 500), "code401" (HTTP 200 with
{"code": 401}), "hang" (no answer: the connection is held `hang_s` seconds, then closed),
"nonjson" (HTTP 200 with an HTML page, as a proxy in front of a platform may answer).

Built on the standard library's http.server (independent of the agent's HTTP client).
"""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

import orjson

from agent.core.platformspec import FieldMap, PlatformSpec
from agent.uplink.platforms import hebei, mem
from agent.uplink.platforms.crypto import EnvelopeError
from agent.uplink.platforms.records import WHOLE_FIELD

_NUMBER: Final = re.compile(r"^-?\d+(\.(\d+))?$")
_TS: Final = re.compile(r"^\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}$")
_CJK: Final = re.compile(r"[\u4e00-\u9fff]")
MAX_BODY: Final = 16 * 1024 * 1024
FAULTS: Final = ("http500", "code401", "hang", "nonjson")


class Invalid(Exception):
    """A request the platform would refuse: `code` and the message to answer."""

    def __init__(self, code: int, msg: str) -> None:
        super().__init__(msg)
        self.code = code


@dataclass(frozen=True, slots=True)
class Received:
    endpoint: str
    items: list[dict[str, Any]]
    doc: Any  # the whole inner JSON
    at: float  # wall clock when it arrived


@dataclass
class Receiver:
    spec: PlatformSpec
    host: str = "127.0.0.1"
    port: int = 0
    answer_code: int = 200
    log: Callable[[str], None] | None = None
    received: list[Received] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # messages of refused requests
    requests: int = 0  # every request that reached it
    faults: deque[str] = field(default_factory=deque)  # injected into the next requests
    faulted: list[tuple[str, str, float]] = field(default_factory=list)  # (fault, endpoint, at)
    hang_s: float = 30.0  # a "hang" holds the request this long (or until stop())
    _release: threading.Event = field(default_factory=threading.Event)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> int:
        """Listen (on the same port as before, after a stop) and serve in a thread."""
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(min(length, MAX_BODY))
                endpoint = self.path.rstrip("/").rsplit("/", 1)[-1]
                fault = receiver.next_fault(endpoint)
                if fault == "hang":
                    receiver._release.wait(receiver.hang_s)
                    self.close_connection = True
                    return
                kind = "application/json;charset=UTF-8"
                if fault == "http500":
                    status, answer = 500, {"code": 500, "msg": "injected server error"}
                elif fault == "code401":
                    status, answer = 200, {"code": 401, "msg": "数据解密失败 (injected)"}
                elif fault == "nonjson":
                    status, answer, kind = 200, None, "text/html"
                else:
                    status, answer = receiver.handle(endpoint, body, dict(self.headers.items()))
                data = b"<html>502 Bad Gateway</html>" if answer is None else orjson.dumps(answer)
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # handle() reports each request itself

        self._release.clear()
        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="receiver"
        )
        self._thread.start()
        return self.port

    def stop(self) -> None:
        """Go down: stop serving and close the listening socket."""
        server, self._server = self._server, None
        self._release.set()  # hung requests end
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def inject(self, *faults: str) -> None:
        """Fail the next requests, one fault each (FAULTS), in this order."""
        bad = [f for f in faults if f not in FAULTS]
        if bad:
            raise ValueError(f"unknown fault(s) {bad}; known: {', '.join(FAULTS)}")
        with self._lock:
            self.faults.extend(faults)

    def next_fault(self, endpoint: str) -> str | None:
        with self._lock:
            self.requests += 1
            if not self.faults:
                return None
            fault = self.faults.popleft()
            self.faulted.append((fault, endpoint, time.time()))
        self._say(f"{endpoint}: injected fault {fault}")
        return fault

    def items(self, endpoint: str) -> list[dict[str, Any]]:
        with self._lock:
            return [i for r in self.received if r.endpoint == endpoint for i in r.items]

    # -- one request -------------------------------------------------------------------------

    def handle(self, endpoint: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        fm = self._field_map(endpoint)
        if fm is None:
            return 404, {"code": 404, "msg": f"no endpoint {endpoint}"}
        try:
            doc = self._open(body, {k.lower(): v for k, v in headers.items()})
            items = self._validate(fm, doc)
        except Invalid as exc:
            with self._lock:
                self.refused.append(str(exc))
            self._say(f"{endpoint}: REFUSED code {exc.code}: {exc}")
            return 200, {"code": exc.code, "msg": str(exc)}
        code = self.answer_code
        if code == 200:
            with self._lock:
                self.received.append(Received(endpoint, items, doc, time.time()))
        self._say(f"{endpoint}: {len(items)} item(s), answered code {code}: {_sample(items)}")
        return 200, {"code": code, "msg": "success" if code == 200 else "rehearsed refusal"}

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    def _field_map(self, endpoint: str) -> FieldMap | None:
        for fm in (self.spec.telemetry, self.spec.alarm):
            if fm is not None and fm.endpoint.rsplit("/", 1)[-1] == endpoint:
                return fm
        return None

    def _open(self, body: bytes, headers: dict[str, str]) -> Any:
        spec = self.spec
        try:
            outer = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise Invalid(400, "the body is not JSON") from None
        if spec.profile == "hebei_v1_1":
            _keys(outer, {"qybm", "wgbm", "data"}, "the body")
            _equal(outer, "qybm", spec.enterprise_code)
            _equal(outer, "wgbm", spec.gateway_code)
            opener = hebei.open_body
        else:
            if headers.get("appsecret") != spec.appsecret:
                raise Invalid(401, "the appsecret header is missing or wrong")
            _keys(outer, {"appid", "data"}, "the body")
            if outer["appid"] != spec.appid:
                raise Invalid(401, f"unknown appid {outer['appid']!r}")
            opener = mem.open_body
        data = outer["data"]
        digits = "0-9A-F" if spec.hex_upper else "0-9a-f"
        if not isinstance(data, str) or not re.fullmatch(f"[{digits}]+", data) or len(data) % 2:
            case = "upper" if spec.hex_upper else "lower"
            raise Invalid(400, f"data is not {case}-case hexadecimal text")
        try:
            plain = opener(spec, outer)
        except EnvelopeError as exc:
            raise Invalid(401, f"数据解密失败 decryption failed ({exc})") from None
        try:
            return orjson.loads(plain)
        except orjson.JSONDecodeError:
            raise Invalid(
                401, "数据解密失败: the decrypted data is not JSON (wrong key?)"
            ) from None

    def _validate(self, fm: FieldMap, doc: Any) -> list[dict[str, Any]]:
        common = {"enterprise": self.spec.enterprise_code, "gateway": self.spec.gateway_code}
        items = doc
        if fm.list_key:  # "data.rts": the object {"data": {"rts": [items]}}
            reads = f"the platform reads {_shape(fm)}"
            if not isinstance(doc, dict):
                raise Invalid(400, f"the data is not a JSON object; {reads}")
            first, *rest = fm.list_key.split(".")
            _keys(doc, {k for k, _ in fm.extra} | {first}, f"the data ({reads})")
            for k, template in fm.extra:
                _equal(doc, k, template.format_map(common))
            items, where = doc[first], first
            for key in rest:
                _keys(items, {key}, f"{where} ({reads})")
                items, where = items[key], f"{where}.{key}"
        if not isinstance(items, list) or not items:
            raise Invalid(400, "the data holds no list of items")
        for n, item in enumerate(items):
            self._item(fm, item, f"item {n}")
        return items

    def _item(self, fm: FieldMap, item: Any, where: str) -> None:
        _keys(item, {name for name, _ in fm.fields}, where)
        names = {name: m.group(1) for name, t in fm.fields if (m := WHOLE_FIELD.match(t))}
        code = next((item[k] for k, v in names.items() if v == "point"), None)
        for name, what in names.items():
            value, at = item[name], f"{where}.{name}"
            if what == "point":
                if not isinstance(value, str) or not value:
                    raise Invalid(400, f"{at}: point code missing")
                if self.spec.codes and value not in self.spec.codes:
                    raise Invalid(400, f"{at}: unknown point code {value!r}")
            elif what == "ts":
                _timestamp(value, at)
            elif what in ("value", "threshold"):
                # an event may lack a value (the point did not answer) or a limit (comm_loss)
                decimals = self.spec.decimals_of(code) if isinstance(code, str) else None
                _number(value, at, decimals, empty_ok=fm is self.spec.alarm)
            elif what == "scd":
                codes = {c for c in self.spec.scd.values() if c >= 0}
                if not isinstance(value, int) or isinstance(value, bool) or value not in codes:
                    raise Invalid(400, f"{at}: status code {value!r} is not in the scd table")
            elif what == "content" and (not isinstance(value, str) or not _CJK.search(value)):
                raise Invalid(400, f"{at}: content must be Chinese text, got {value!r}")


def _shape(fm: FieldMap) -> str:
    """The inner JSON a field map describes, e.g. {"qybm", "data": {"rts": [items]}}."""
    inner = "[items]"
    for key in reversed(fm.list_key.split(".")):
        inner = f'{{"{key}": {inner}}}'
    extra = "".join(f'"{k}", ' for k, _ in fm.extra)
    return "{" + extra + inner[1:] if extra else inner


def _keys(doc: Any, want: set[str], where: str) -> None:
    if not isinstance(doc, dict):
        raise Invalid(400, f"{where} is not a JSON object")
    if set(doc) != want:
        missing, extra = sorted(want - set(doc)), sorted(set(doc) - want)
        raise Invalid(400, f"{where}: missing {missing}, unexpected {extra}")


def _equal(doc: dict[str, Any], key: str, want: str) -> None:
    if doc[key] != want:
        raise Invalid(400, f"{key} is {doc[key]!r}, this receiver expects {want!r}")


def _timestamp(value: Any, at: str) -> None:
    if not isinstance(value, str) or not _TS.match(value):
        raise Invalid(400, f"{at}: {value!r} is not YYYY-MM-DD HH:MM:SS")
    try:
        datetime.strptime(value, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise Invalid(400, f"{at}: {value!r} is not a valid date and time") from None


def _number(value: Any, at: str, decimals: int | None, *, empty_ok: bool) -> None:
    if empty_ok and value == "":
        return
    m = _NUMBER.match(value) if isinstance(value, str) else None
    if m is None:
        raise Invalid(400, f"{at}: {value!r} is not a number in a string")
    got = len(m.group(2) or "")
    if decimals is not None and got != decimals:
        raise Invalid(400, f"{at}: {value!r} has {got} decimals, the point has {decimals}")


def _sample(items: list[dict[str, Any]]) -> str:
    shown = "; ".join(" ".join(f"{k}={v}" for k, v in i.items()) for i in items[:3])
    return shown + (f"; ... {len(items) - 3} more" if len(items) > 3 else "")
