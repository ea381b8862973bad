"""The platforms' HTTP transport over httpx (the only module that imports it), as an Uplink.

`publish(endpoint, plaintext)` seals the inner JSON with the profile's envelope, POSTs it to
`{url}/{endpoint}` and returns only when the platform accepted it: HTTP 200 and a JSON body
whose "code" is 200. Every httpx error and every other answer is translated here, once,
into agent.uplink.contract.UplinkError with a message an installer can act on:

    UplinkError
    ├── PlatformRefused     the platform answered, but not HTTP 200 + code 200 (`code`, `msg`)
    └── ReplyRefused        the reply broke a bound: over MAX_REPLY_BYTES decoded, an unknown
                            or corrupt content-encoding

Every request has one deadline (the platform's `timeout`) over connect, send and the whole
reply, so a reply trickling a byte at a time ends like a silent one. The reply is read as a
stream and decoded here (gzip/deflate with a bounded output per step), so neither a huge body
nor a compression bomb costs more than MAX_REPLY_BYTES of memory. The URL's credentials are
never shown and the platform's text is escaped before it reaches a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import zlib
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from agent.core.platformspec import PlatformSpec
from agent.core.redact import printable, redact_url
from agent.uplink.contract import UplinkError

# httpx logs every request at INFO: one line per upload would flood the journal
logging.getLogger("httpx").setLevel(logging.WARNING)

Seal = Callable[[PlatformSpec, bytes], tuple[bytes, dict[str, str]]]
_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")
OK_CODE = 200
MAX_REPLY_BYTES = 256 * 1024  # a platform's answer is a small JSON object
_SHOWN = 300  # bytes of a reply decoded for a message (then escaped and cut by printable)


class PlatformRefused(UplinkError):
    """The platform answered but did not accept the data; retried later."""

    def __init__(self, message: str, code: object, msg: str) -> None:
        super().__init__(message)
        self.code, self.msg = code, msg


class ReplyRefused(UplinkError):
    """The platform's reply broke a bound (size, encoding); the data is kept and retried."""


class _Decoder:
    """The reply body's content-encoding undone with at most `cap` bytes of output."""

    def __init__(self, encoding: str, cap: int) -> None:
        enc = encoding.strip().lower()
        if enc in ("", "identity"):
            self._z = None
        elif enc in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif enc == "deflate":
            self._z = zlib.decompressobj()
        else:
            raise ValueError(f"an unsupported content-encoding {printable(enc, 40)!r}")
        self.cap, self.out = cap, bytearray()

    def feed(self, raw: bytes) -> None:
        """Append the decoded `raw`; ValueError past the cap or on corrupt data."""
        if self._z is None:
            self.out += raw
        else:
            chunk = raw
            while chunk:
                try:
                    self.out += self._z.decompress(chunk, self.cap - len(self.out) + 1)
                except zlib.error as exc:
                    raise ValueError(f"a corrupt compressed body ({exc})") from None
                if len(self.out) > self.cap:
                    break
                chunk = self._z.unconsumed_tail
        if len(self.out) > self.cap:
            raise ValueError(f"more than {self.cap // 1024} KiB (decoded)")


def tls_context(spec: PlatformSpec) -> ssl.SSLContext:
    """The HTTPS context: the system CAs or spec.ca_file, and TLS 1.2 at least."""
    ctx = ssl.create_default_context(cafile=str(spec.ca_file) if spec.ca_file else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class HttpUplink:
    """One platform endpoint base URL; a fresh httpx.AsyncClient per connect()."""

    def __init__(self, spec: PlatformSpec, seal: Seal) -> None:
        self.spec, self._seal = spec, seal
        self._client: httpx.AsyncClient | None = None
        self.max_reply = MAX_REPLY_BYTES

    @property
    def target(self) -> str:
        return redact_url(self.spec.url)

    async def connect(self) -> None:
        await self.close(clean=False)
        try:
            verify = tls_context(self.spec) if self.spec.url.startswith("https:") else True
        except (OSError, ssl.SSLError) as exc:
            raise UplinkError(
                f"platform {self.spec.name}: cannot load ca_file {self.spec.ca_file}: {exc}"
            ) from exc
        self._client = httpx.AsyncClient(
            timeout=self.spec.timeout,
            verify=verify,
            headers={
                "Content-Type": "application/json;charset=UTF-8",
                "Accept-Encoding": "gzip, deflate",  # the encodings _Decoder bounds
            },
            trust_env=False,  # a proxy variable in the service environment must not divert it
        )

    async def close(self, *, clean: bool) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(httpx.HTTPError, OSError):
                await client.aclose()

    async def publish(self, topic: str, payload: bytes) -> None:
        """POST the sealed `payload` (inner JSON) to the endpoint `topic`."""
        client = self._client
        if client is None:
            raise UplinkError(f"platform {self.spec.name}: not connected")
        body, headers = self._seal(self.spec, payload)
        url = f"{self.spec.url.rstrip('/')}/{topic}"
        shown = redact_url(url)
        try:
            async with asyncio.timeout(self.spec.timeout):
                status, content = await self._post(client, url, body, headers)
        except (httpx.TimeoutException, TimeoutError) as exc:
            raise UplinkError(
                f"platform {self.spec.name} ({shown}) did not answer within {self.spec.timeout:g} s"
            ) from exc
        except ValueError as exc:
            raise ReplyRefused(
                f"platform {self.spec.name} ({shown}) answered with {exc}; refused, the data "
                "is kept and sent again"
            ) from exc
        except httpx.ConnectError as exc:
            raise UplinkError(
                f"cannot reach platform {self.spec.name} at {shown}: {_reason(exc)}"
            ) from exc
        except httpx.HTTPError as exc:
            raise UplinkError(
                f"lost connection to platform {self.spec.name} ({shown}): {_reason(exc)}"
            ) from exc
        self._check(shown, status, content)

    async def _post(
        self, client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """POST and read the reply as a stream, decoded here up to `max_reply` bytes."""
        request = client.build_request("POST", url, content=body, headers=headers)
        resp = await client.send(request, stream=True)
        try:
            length = resp.headers.get("content-length", "")
            if length.isdigit() and int(length) > self.max_reply:
                raise ValueError(f"a body of {int(length)} bytes (the cap is {self.max_reply})")
            decoder = _Decoder(resp.headers.get("content-encoding", ""), self.max_reply)
            async for raw in resp.aiter_raw():
                decoder.feed(raw)
        finally:
            await resp.aclose()
        return resp.status_code, bytes(decoder.out)

    def _check(self, url: str, status: int, content: bytes) -> None:
        name = self.spec.name
        text = printable(content[:_SHOWN].decode("utf-8", errors="replace"))
        if status != OK_CODE:
            raise PlatformRefused(
                f"platform {name} answered HTTP {status} to {url}: {text}", status, text
            )
        try:
            doc: Any = orjson.loads(content)
        except orjson.JSONDecodeError:
            doc = None
        if not isinstance(doc, dict) or "code" not in doc:
            raise PlatformRefused(
                f'platform {name} answered {url} without the JSON {{"code": 200}}: {text}',
                None,
                text,
            )
        code, msg = doc.get("code"), printable(str(doc.get("msg", doc.get("message", ""))))
        if code != OK_CODE and str(code) != str(OK_CODE):
            raise PlatformRefused(
                f"platform {name} refused the data at {url}: code {printable(str(code), 40)} "
                f"'{msg}'; kept and sent "
                "again. If it reports a decryption or format error, check the key and IV files "
                "(key_file / iv_file), the enterprise and gateway codes and the point codes",
                code,
                msg,
            )


def _reason(exc: httpx.HTTPError) -> str:
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    while cause is not None and not text:
        text = str(cause)
        cause = cause.__cause__
    text = printable(redact_url(_ERRNO.sub("", text).strip()))
    return text[:1].lower() + text[1:]
