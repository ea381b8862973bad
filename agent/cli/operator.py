"""`dust-agent ack|shelve|unshelve`: one request over the agent's operator socket.

The command connects to the socket of `[operator]` (agent.service.operator), sends one JSON
line and prints the agent's answer. Exit 0 applied, 1 refused by the agent (the reason is
printed), 2 bad arguments, 69 (EX_UNAVAILABLE) the agent cannot be reached, 75 (EX_TEMPFAIL)
no answer in time. It writes no file anywhere, so running it as root changes no ownership.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import socket
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from agent.cli.locale import Lang, cli_lang
from agent.core.model import AgentConfig
from agent.service.operator import MAX_BY, MAX_REPLY

EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75


class Unreachable(Exception):
    """The agent's socket cannot be reached (the message says why and what to check)."""


def _why(path: Path, exc: OSError) -> str:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return f"{path} does not exist: is the agent running (systemctl status dust-agent)?"
    except OSError:
        mode = 0
    if mode and not stat.S_ISSOCK(mode):
        return f"{path} is not a socket: remove it; the agent recreates its socket within 5 s"
    if exc.errno in (errno.EACCES, errno.EPERM):
        return (
            f"permission denied on {path}: run as root, or join the operators group "
            "(docs/operations.md, 'Operator commands')"
        )
    if exc.errno == errno.ECONNREFUSED:
        return f"nobody listens on {path}: is the agent running (systemctl status dust-agent)?"
    return f"cannot connect to {path}: {exc.strerror or exc}"


def exchange(path: Path, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Send one request and return the agent's answer; Unreachable or TimeoutError."""
    deadline = time.monotonic() + timeout
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(max(0.1, timeout))
        try:
            sock.connect(str(path))
        except TimeoutError:
            raise
        except OSError as exc:
            raise Unreachable(_why(path, exc)) from None
        sock.sendall(orjson.dumps(request) + b"\n")
        buf = b""
        while not buf.endswith(b"\n") and len(buf) < MAX_REPLY:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
    except (BrokenPipeError, ConnectionResetError):
        raise Unreachable(f"the agent closed {path} before answering") from None
    finally:
        sock.close()
    try:
        answer = orjson.loads(buf)
    except orjson.JSONDecodeError:
        raise Unreachable(f"no answer from the agent on {path}") from None
    if not isinstance(answer, dict):
        raise Unreachable(f"an answer that is not the agent's on {path}")
    return answer


def run_action(path: Path, request: dict[str, Any], timeout: float, lang: Lang = "en") -> int:
    """Send `request`, print what happened, return the exit code (see the module doc). The
    lead-ins are in `lang`; the agent's own message and reasons are printed as it sent them."""
    action = request["action"]
    zh = lang == "zh"
    try:
        answer = exchange(path, request, timeout)
    except Unreachable as exc:
        lead = "无法连接代理" if zh else "cannot reach the agent"
        print(f"dust-agent {action}: {lead}: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except TimeoutError:
        text = (
            f"代理在 {timeout:g} 秒内未应答（{path}）；是否已执行请看 `dust-agent alarms`"
            if zh
            else f"no answer from the agent within {timeout:g} s on {path}; "
            "see `dust-agent alarms` for whether it was applied"
        )
        print(f"dust-agent {action}: {text}", file=sys.stderr)
        return EX_TEMPFAIL
    if answer.get("ok") is True:
        done = f"{request['alarm_id']}: {action} " + ("已完成" if zh else "done")
        print(answer.get("message", done))
        return 0
    lead = "代理拒绝" if zh else "refused by the agent"
    print(f"dust-agent {action}: {lead}: {answer.get('error')}", file=sys.stderr)
    return 1


def _duration(text: str) -> float:
    from agent.cli.alarms import parse_since

    try:
        seconds = 0.0 - parse_since(text, 0.0)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0 or not text.strip()[:1].isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a duration such as 30m, 2h, 1d")
    return seconds


def _by(text: str) -> str:
    text = text.strip()
    if not text or len(text) > MAX_BY or not text.isprintable():
        raise argparse.ArgumentTypeError(
            f"--by: 1 to {MAX_BY} printable characters (a name), got {text[:80]!r}"
        )
    return text


def add_operator_commands(
    sub: Any,
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    load: Callable[[str], AgentConfig],
) -> None:
    """Register `ack`, `shelve` and `unshelve` on the dust-agent command line."""

    def common(name: str, text: str) -> argparse.ArgumentParser:
        p = with_config(sub.add_parser(name, help=text, description=text + _EPILOG))
        p.add_argument("alarm_id", metavar="ID", help="alarm id, e.g. 1301000000010101001:high")
        p.add_argument(
            "--by", required=True, type=_by, metavar="NAME", help="who does this (journaled)"
        )
        p.add_argument("--timeout", type=float, default=15.0, help="seconds to wait for the agent")
        return p

    ack = common("ack", "acknowledge an active alarm (recorded in the journal, sent upstream)")
    ack.add_argument("--note", default="", help="a remark kept with the acknowledgement")
    shelve = common(
        "shelve", "suppress an alarm's transitions for a while (e.g. --for 2h; at most 24 h)"
    )
    shelve.add_argument("--for", dest="duration", type=_duration, required=True, metavar="TIME")
    shelve.add_argument("--note", default="", help="why (kept with the shelve record)")
    common("unshelve", "end a shelve before it expires")

    def run(args: argparse.Namespace) -> int:
        cfg = load(args.config)
        request: dict[str, Any] = {
            "action": args.command,
            "alarm_id": args.alarm_id,
            "by": args.by,
        }
        if args.command in ("ack", "shelve") and args.note:
            request["note"] = args.note
        if args.command == "shelve":
            request["for"] = args.duration
        lang = cli_lang(configured=cfg.language)
        return run_action(cfg.operator_spec.socket, request, args.timeout, lang)

    for p in (ack, shelve, sub.choices["unshelve"]):
        p.set_defaults(func=run)


_EPILOG = (
    ". The request goes over the agent's operator socket ([operator] socket; root or the "
    "operators group). The agent records your OS user beside --by. Exit 0 done, 1 refused "
    "(reason printed), 69 agent unreachable, 75 no answer in time."
)
