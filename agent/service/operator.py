"""The local operator socket: `dust-agent ack|shelve|unshelve` talk to the running agent.

One request per connection, the way systemctl, docker and mosquitto_ctrl reach their daemons.
The client sends one JSON object on one line (at most MAX_REQUEST bytes, complete within
READ_DEADLINE s of connecting); the agent answers one JSON line, `{"ok": true, "message": ...}`
once the action is applied, journaled and stored for upstream, or `{"ok": false, "error": ...}`
with the reason. Request fields: `action` (ack, shelve, unshelve), `alarm_id`, `by` (who:
1..MAX_BY printable characters), `note` (optional), `for` (shelve only: seconds, finite,
above 0, at most `operator.max_shelve`). Unknown fields are refused; the client sends no
times (the agent's clock stamps the action). The caller's uid comes from SO_PEERCRED and is
journaled as `os_user`/`os_uid` beside `by`.

The socket is bound under a temporary name, given mode 0660 and the operators group, then
renamed into place. Anything else at the path (a directory, FIFO, symlink, file) is left
alone: the socket is then unavailable (logged once, an `operator_socket_unavailable` event)
and retried every RETRY s. Connections beyond MAX_CLIENTS are refused at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import logging
import math
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from agent.core.model import OperatorSpec

log = logging.getLogger(__name__)

ACTIONS = ("ack", "shelve", "unshelve")
FIELDS = frozenset({"action", "alarm_id", "by", "note", "for"})
MAX_REQUEST = 4096  # bytes, newline included
MAX_REPLY = 64 * 1024
MAX_BY = 64
MAX_NOTE = 500
MAX_ALARM_ID = 200
READ_DEADLINE = 5.0  # seconds for the whole request line
WRITE_DEADLINE = 2.0
MAX_CLIENTS = 8
RETRY = 5.0  # seconds between attempts to create the socket (an lstat: cheap)


class RequestError(ValueError):
    """A request the agent refuses before it reaches the engine (the reason is the text)."""


@dataclass(frozen=True, slots=True)
class Peer:
    """The connecting process, from SO_PEERCRED."""

    pid: int
    uid: int
    gid: int

    @property
    def user(self) -> str:
        try:
            return pwd.getpwuid(self.uid).pw_name
        except KeyError:
            return f"uid {self.uid}"


@dataclass(frozen=True, slots=True)
class OperatorRequest:
    action: str
    alarm_id: str
    by: str
    note: str
    duration: float | None  # shelve: seconds
    os_user: str
    os_uid: int


@dataclass(frozen=True, slots=True)
class Answer:
    ok: bool
    text: str

    def to_line(self) -> bytes:
        body = {"ok": True, "message": self.text} if self.ok else {"ok": False, "error": self.text}
        return orjson.dumps(body) + b"\n"


def peer_of(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


def _text(body: dict[str, Any], name: str, limit: int, *, required: bool, spaces: bool) -> str:
    value = body.get(name, "")
    if not isinstance(value, str):
        raise RequestError(f"'{name}' must be a string")
    value = value.strip()
    if required and not value:
        raise RequestError(f"'{name}' is required")
    if len(value) > limit:
        raise RequestError(f"'{name}' is longer than {limit} characters")
    if not value.isprintable() or (not spaces and any(c.isspace() for c in value)):
        raise RequestError(f"'{name}' holds control characters" + ("" if spaces else " or spaces"))
    return value


def _duration(body: dict[str, Any], action: str, max_shelve: float) -> float | None:
    if action != "shelve":
        if "for" in body:
            raise RequestError(f"'for' is only for shelve, not {action}")
        return None
    value = body.get("for")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError("shelve needs 'for': a duration in seconds")
    if not math.isfinite(value) or value <= 0:
        raise RequestError(f"shelve duration {value!r} must be a finite number of seconds above 0")
    if value > max_shelve:
        raise RequestError(
            f"shelve for {value:.0f} s is longer than the maximum {max_shelve:.0f} s "
            "(operator.max_shelve in the config)"
        )
    return float(value)


def parse_request(data: bytes, peer: Peer, max_shelve: float) -> OperatorRequest:
    """Validate one request line; RequestError says what is wrong."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise RequestError("the request is not JSON") from None
    if not isinstance(body, dict):
        raise RequestError("the request must be a JSON object")
    unknown = sorted(set(body) - FIELDS)
    if unknown:
        raise RequestError(f"unknown field(s): {', '.join(repr(k)[:40] for k in unknown[:5])}")
    action = body.get("action")
    if action not in ACTIONS:
        raise RequestError(f"'action' must be one of {', '.join(ACTIONS)}")
    return OperatorRequest(
        action=str(action),
        alarm_id=_text(body, "alarm_id", MAX_ALARM_ID, required=True, spaces=False),
        by=_text(body, "by", MAX_BY, required=True, spaces=True),
        note=_text(body, "note", MAX_NOTE, required=False, spaces=True),
        duration=_duration(body, str(action), max_shelve),
        os_user=peer.user,
        os_uid=peer.uid,
    )


class SocketUnavailable(Exception):
    """The socket cannot be created now (the message says why and what to do)."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO")):
        if test(mode):
            return name
    return "a symlink" if stat.S_ISLNK(mode) else "a file"


def _clear_stale(path: Path) -> None:
    """Remove a stale socket at `path`; refuse anything else, and a live socket."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketUnavailable(
            f"{path} is {_kind(st.st_mode)}, not the operator socket: remove it "
            "(the agent leaves it alone and retries)"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno not in (errno.ECONNREFUSED, errno.ENOENT):
            raise SocketUnavailable(f"cannot probe {path}: {exc.strerror}") from None
        path.unlink(missing_ok=True)  # nobody listens: left over from a crash
        return
    finally:
        probe.close()
    raise SocketUnavailable(f"another process already listens on {path}")


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def bind_socket(spec: OperatorSpec) -> socket.socket:
    """A listening socket at spec.socket, mode 0660, group spec.group when it exists."""
    path = spec.socket
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale(path)
    except OSError as exc:
        raise SocketUnavailable(f"cannot prepare {path}: {exc.strerror or exc}") from None
    tmp = path.with_name(f".opsock-{os.getpid()}")
    if len(str(tmp).encode()) > 107:
        tmp = path
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        tmp.unlink(missing_ok=True)
        sock.bind(str(tmp))
        os.chmod(tmp, 0o660)
        gid = group_id(spec.group)
        if gid is not None:
            try:
                os.chown(tmp, -1, gid)
            except PermissionError:
                log.warning(
                    "operator socket: cannot give it to group %s (the agent's user is not a "
                    "member): only the agent's own group can use it",
                    spec.group,
                )
        sock.listen(MAX_CLIENTS * 2)
        if tmp != path:
            os.rename(tmp, path)
    except OSError as exc:
        sock.close()
        with contextlib.suppress(OSError):
            if tmp != path:
                tmp.unlink()
        raise SocketUnavailable(f"cannot create {path}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


Submit = Callable[[OperatorRequest], Awaitable[Answer]]
Notify = Callable[[str, dict[str, object]], None]


class OperatorServer:
    """Serves the operator socket until cancelled; `submit` applies one valid request."""

    def __init__(self, spec: OperatorSpec, submit: Submit, notify: Notify) -> None:
        self.spec = spec
        self._submit = submit
        self._notify = notify
        self._clients = 0
        self._last_error: str | None = None
        self.requests = 0  # answered, since start
        self.refused = 0

    async def run(self) -> None:
        while True:
            try:
                sock = bind_socket(self.spec)
            except SocketUnavailable as exc:
                self._unavailable(str(exc))
                await asyncio.sleep(RETRY)
                continue
            self._last_error = None
            inode = os.stat(self.spec.socket).st_ino
            server = await asyncio.start_unix_server(self._handle, sock=sock, limit=MAX_REQUEST)
            log.info("operator socket ready at %s", self.spec.socket)
            try:
                await server.serve_forever()
            finally:
                server.close()
                with contextlib.suppress(OSError):
                    if os.lstat(self.spec.socket).st_ino == inode:
                        self.spec.socket.unlink()

    def _unavailable(self, why: str) -> None:
        if why == self._last_error:
            return
        self._last_error = why
        log.error(
            "operator socket unavailable: %s; dust-agent ack/shelve cannot reach the agent", why
        )
        self._notify("operator_socket_unavailable", {"path": str(self.spec.socket), "error": why})

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._clients >= MAX_CLIENTS:
            await self._reply(writer, Answer(False, "the agent is busy with other requests"))
            return
        self._clients += 1
        try:
            answer = await self._answer(reader, writer)
            self.requests += 1
            self.refused += not answer.ok
            await self._reply(writer, answer)
        finally:
            self._clients -= 1

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Answer:
        try:
            peer = peer_of(writer.get_extra_info("socket"))
            async with asyncio.timeout(READ_DEADLINE):
                line = await reader.readuntil(b"\n")
            req = parse_request(line, peer, self.spec.max_shelve)
        except TimeoutError:
            return Answer(False, f"no complete request line within {READ_DEADLINE:g} s")
        except asyncio.LimitOverrunError:
            return Answer(False, f"request larger than {MAX_REQUEST} bytes")
        except asyncio.IncompleteReadError:
            return Answer(False, "incomplete request: the line has no newline")
        except (RequestError, OSError) as exc:
            return Answer(False, str(exc))
        answer = await self._submit(req)
        log.info(
            "operator %s %s by %s (os user %s): %s",
            req.action,
            ascii(req.alarm_id),
            ascii(req.by),
            req.os_user,
            answer.text if answer.ok else "refused: " + answer.text,
        )
        return answer

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, answer: Answer) -> None:
        try:
            writer.write(answer.to_line())
            async with asyncio.timeout(WRITE_DEADLINE):
                await writer.drain()
        except (OSError, TimeoutError):
            pass  # the client went away: nothing to tell
        finally:
            writer.close()
