"""The platforms' HTTP transport over httpx (the only module that imports it), as an Uplink.

`publish(endpoint, plaintext)` seals the inner JSON with the profile's envelope, POSTs it to
`{url}/{endpoint}` and returns only when the platform accepted it: HTTP 200 and a JSON body
whose "code" is 200. Every httpx error and every other answer is translated here, once,
into agent.uplink.contract.UplinkError with a message an installer can act on:

    UplinkError
    └── PlatformRefused     the platform answered, but not HTTP 200 + code 200 (`code`, `msg`)
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

import httpx
import orjson

from agent.core.platformspec import PlatformSpec
from agent.uplink.contract import UplinkError

# httpx logs every request at INFO: one line per upload would flood the journal
logging.getLogger("httpx").setLevel(logging.WARNING)

Seal = Callable[[PlatformSpec, bytes], tuple[bytes, dict[str, str]]]
_ERRNO = re.compile(r"^\[Errno -?\d+\]\s*")
OK_CODE = 200


class PlatformRefused(UplinkError):
    """The platform answered but did not accept the data; retried later."""

    def __init__(self, message: str, code: object, msg: str) -> None:
        super().__init__(message)
        self.code, self.msg = code, msg


class HttpUplink:
    """One platform endpoint base URL; a fresh httpx.AsyncClient per connect()."""

    def __init__(self, spec: PlatformSpec, seal: Seal) -> None:
        self.spec, self._seal = spec, seal
        self._client: httpx.AsyncClient | None = None

    @property
    def target(self) -> str:
        return self.spec.url

    async def connect(self) -> None:
        await self.close(clean=False)
        self._client = httpx.AsyncClient(
            timeout=self.spec.timeout,
            headers={"Content-Type": "application/json;charset=UTF-8"},
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
        try:
            resp = await client.post(url, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            raise UplinkError(
                f"platform {self.spec.name} ({url}) did not answer within {self.spec.timeout:g} s"
            ) from exc
        except httpx.ConnectError as exc:
            raise UplinkError(
                f"cannot reach platform {self.spec.name} at {url}: {_reason(exc)}"
            ) from exc
        except httpx.HTTPError as exc:
            raise UplinkError(
                f"lost connection to platform {self.spec.name} ({url}): {_reason(exc)}"
            ) from exc
        self._check(url, resp.status_code, resp.content)

    def _check(self, url: str, status: int, content: bytes) -> None:
        name = self.spec.name
        text = content[:300].decode("utf-8", errors="replace")
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
        code, msg = doc.get("code"), str(doc.get("msg", doc.get("message", "")))
        if code != OK_CODE and str(code) != str(OK_CODE):
            raise PlatformRefused(
                f"platform {name} refused the data at {url}: code {code} {msg!r}; kept and sent "
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
    text = _ERRNO.sub("", text).strip()
    return text[:1].lower() + text[1:]
