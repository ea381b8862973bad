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

Built on the standard library's http.server (independent of the agent's HTTP client).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
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
                status, answer = receiver.handle(endpoint, body, dict(self.headers.items()))
                data = orjson.dumps(answer)
                self.send_response(status)
                self.send_header("Content-Type", "application/json;charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # handle() reports each request itself

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
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def items(self, endpoint: str) -> list[dict[str, Any]]:
        with self._lock:
            return [i for r in self.received if r.endpoint == endpoint for i in r.items]

    # -- one request -------------------------------------------------------------------------

    def handle(self, endpoint: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        with self._lock:
            self.requests += 1
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
                decimals = self.spec.decimals_of(code) if isinstance(code, str) else None
                _number(value, at, decimals, empty_ok=what == "value" and fm is self.spec.alarm)
            elif what == "scd":
                if not isinstance(value, int) or value not in set(self.spec.scd.values()):
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


# -- `dust-agent platform-rehearse` ----------------------------------------------------------


def spec_from_args(args: argparse.Namespace) -> PlatformSpec:
    """The spec the receiver checks against; SystemExit(2) with a message when incomplete."""
    if args.config:
        from agent.config import ConfigError, load_config

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            raise SystemExit(f"dust-agent platform-rehearse: config error: {exc}") from None
        found = [p for p in cfg.platforms if args.platform in (None, p.name)]
        if len(found) != 1:
            names = ", ".join(p.name for p in cfg.platforms) or "none"
            raise SystemExit(
                f"dust-agent platform-rehearse: name one platform with --platform ({names})"
            )
        return found[0]
    if not args.profile or not args.key_file:
        raise SystemExit(
            "dust-agent platform-rehearse: give -c CONFIG, or --profile and --key-file"
        )
    from agent.config.secrets import SecretError, read_secret
    from agent.uplink.platforms.crypto import DES_BYTES, SM4_BYTES, parse_key

    size = DES_BYTES if args.profile == "hebei_v1_1" else SM4_BYTES
    try:
        key = parse_key(read_secret(args.key_file), size, "the key")
        iv = parse_key(read_secret(args.iv_file), size, "the IV") if args.iv_file else key
        appid = read_secret(args.appid_file) if args.appid_file else ""
        secret = read_secret(args.appsecret_file) if args.appsecret_file else ""
    except (SecretError, ValueError) as exc:
        raise SystemExit(f"dust-agent platform-rehearse: {exc}") from None
    hebei_profile = args.profile == "hebei_v1_1"
    return PlatformSpec(
        name=args.profile,
        profile=args.profile,
        url="",
        enterprise_code=args.enterprise,
        gateway_code=args.gateway,
        key=key,
        iv=iv,
        telemetry=hebei.RTS if hebei_profile else mem.EXAMPLE_TELEMETRY,
        alarm=hebei.EVENTS if hebei_profile else mem.EXAMPLE_ALARM,
        codes=frozenset(),
        decimals={},
        appid=appid,
        appsecret=secret,
        hex_upper=hebei_profile,
    )


def cmd_rehearse(args: argparse.Namespace) -> int:
    spec = spec_from_args(args)
    rec = Receiver(spec, args.host, args.port, answer_code=args.answer_code)
    rec.log = lambda line: print(line, flush=True)
    try:
        rec.start()
    except OSError as exc:
        print(f"dust-agent platform-rehearse: cannot listen on {args.host}:{args.port}: {exc}")
        return 1
    print(
        f"rehearsal receiver for {spec.profile} ({spec.name}) listening on {rec.url}; point the "
        f"platform's url at it; answering code {args.answer_code}",
        flush=True,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    rec.stop()
    print(f"{len(rec.received)} request(s) accepted, {len(rec.refused)} refused", file=sys.stderr)
    return 0
