"""Operator actions on alarms and the alarm state that survives a restart.

`dust-agent ack ID --by NAME` (and `shelve` / `unshelve`) cannot call into the running agent,
so each request is a small JSON file written atomically into `<storage.dir>/requests/`; the
agent's rules stage picks the files up (at most every REQUEST_POLL s), applies them to the
engine, journals and forwards the resulting events, and deletes the files. Nothing
accumulates: a request the agent cannot apply (unknown or inactive alarm) is answered in
`<storage.dir>/requests/<name>.rejected` for the CLI to show, and the CLI removes it.

The engine's alarm state is written to `<storage.dir>/alarm_state.json` (temp file, fsync,
rename) after every batch of transitions and restored at start: an alarm active before a
restart is not raised twice, and one whose condition went away is cleared once the
condition is seen normal.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from agent.core.model import AgentConfig, AlarmEvent, Frame
from agent.rules import AlarmLookupError, RuleEngine

log = logging.getLogger(__name__)

STATE_FILE = "alarm_state.json"
REQUESTS = "requests"
REQUEST_POLL = 0.5  # seconds between looks into the requests folder
ACTIONS = ("ack", "shelve", "unshelve")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def load_state(directory: Path) -> dict[str, Any]:
    """The saved alarm state, or {} when there is none. A corrupt file is set aside."""
    path = directory / STATE_FILE
    try:
        data = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, orjson.JSONDecodeError) as exc:
        bad = path.with_suffix(f".corrupt-{int(time.time())}")
        with contextlib.suppress(OSError):
            path.replace(bad)
        log.error("alarm state %s unreadable (%s); set aside as %s, starting clean", path, exc, bad)
        return {}
    alarms = data.get("alarms") if isinstance(data, dict) else None
    return alarms if isinstance(alarms, dict) else {}


def save_state(directory: Path, alarms: dict[str, Any]) -> None:
    _write_atomic(
        directory / STATE_FILE, orjson.dumps({"v": 1, "saved": time.time(), "alarms": alarms})
    )


class AlarmOps:
    """Wraps the engine for the rules stage: restore at start, operator requests, saving.

    `step(frame)` = engine.step + any pending operator requests; the state file is rewritten
    whenever events came out. The engine is looked up through `engine()` on each call, so a
    config reload that swaps the engine is followed.
    """

    def __init__(self, directory: Path, engine: Callable[[], RuleEngine]) -> None:
        self.directory = directory
        self.requests = directory / REQUESTS
        self._engine = engine
        self._next_poll = 0.0

    def restore(self) -> None:
        saved = load_state(self.directory)
        if saved:
            dropped = self._engine().restore(saved)
            log.info("restored %d alarm(s) from %s", len(saved) - len(dropped), STATE_FILE)
            if dropped:
                log.warning("alarms no longer in the config, dropped: %s", ", ".join(dropped))

    def step(self, frame: Frame) -> list[AlarmEvent]:
        events = self._engine().step(frame)
        now = time.monotonic()
        if now >= self._next_poll:
            self._next_poll = now + REQUEST_POLL
            events += self.take_requests()
        if events:
            self.save()
        return events

    def save(self) -> None:
        try:
            save_state(self.directory, self._engine().snapshot())
        except OSError as exc:  # the journal and outbox still have the events
            log.error("cannot write %s: %s", self.directory / STATE_FILE, exc)

    def take_requests(self) -> list[AlarmEvent]:
        """Apply and delete every pending request file, oldest first."""
        try:
            names = sorted(p for p in self.requests.iterdir() if p.suffix == ".json")
        except FileNotFoundError:
            return []
        events: list[AlarmEvent] = []
        for path in names:
            try:
                req = orjson.loads(path.read_bytes())
                events += apply_request(self._engine(), req)
            except (
                AlarmLookupError,
                ValueError,
                KeyError,
                TypeError,
                orjson.JSONDecodeError,
            ) as exc:
                msg = exc.args[0] if exc.args else str(exc)
                log.warning("operator request %s rejected: %s", path.name, msg)
                with contextlib.suppress(OSError):
                    path.with_suffix(".rejected").write_text(str(msg), encoding="utf-8")
            path.unlink(missing_ok=True)
        return events


def apply_request(engine: RuleEngine, req: dict[str, Any]) -> list[AlarmEvent]:
    action, alarm_id, by = req["action"], str(req["alarm_id"]), str(req.get("by", ""))
    ts, note = float(req.get("ts", time.time())), str(req.get("note", ""))
    if action == "ack":
        return engine.ack(alarm_id, by, ts, note)
    if action == "shelve":
        return engine.shelve(alarm_id, float(req["until"]), by, ts, note)
    if action == "unshelve":
        return engine.unshelve(alarm_id, by, ts)
    raise ValueError(f"unknown action {action!r}")


# --- the CLI side ------------------------------------------------------------------------


def submit(directory: Path, action: str, alarm_id: str, by: str, **extra: Any) -> Path:
    """Queue one request for the running agent; returns the request file."""
    req_dir = directory / REQUESTS
    req_dir.mkdir(parents=True, exist_ok=True)
    now = time.time()
    name = f"{int(now * 1000):015d}-{uuid.uuid4().hex[:8]}.json"
    body = {"action": action, "alarm_id": alarm_id, "by": by, "ts": now, **extra}
    path = req_dir / name
    _write_atomic(path, orjson.dumps(body))
    return path


def known_alarm(directory: Path, alarm_id: str) -> dict[str, Any] | None:
    """The saved state of `alarm_id` (None when the state file does not list it)."""
    entry = load_state(directory).get(alarm_id)
    return entry if isinstance(entry, dict) else None


def wait_applied(path: Path, timeout: float) -> str | None:
    """Wait until the agent took `path`; None on success, the rejection text, or raise
    TimeoutError when the agent did not pick it up."""
    rejected = path.with_suffix(".rejected")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not path.exists():
            if rejected.exists():
                text = rejected.read_text(encoding="utf-8")
                rejected.unlink(missing_ok=True)
                return text
            return None
        time.sleep(0.05)
    raise TimeoutError


def run_action(
    directory: Path, action: str, alarm_id: str, by: str, timeout: float, **extra: Any
) -> int:
    """The body of `dust-agent ack|shelve|unshelve`; prints what happened, returns the exit
    code (0 done, 1 rejected, 75 queued but the agent did not pick it up)."""
    import sys

    if not by.strip():
        print(f"dust-agent {action}: --by NAME is required (who is doing this)", file=sys.stderr)
        return 2
    if action == "ack" and known_alarm(directory, alarm_id) is None:
        print(
            f"dust-agent {action}: '{alarm_id}' is not an active alarm in "
            f"{directory / STATE_FILE}; see `dust-agent alarms --active` for the ids",
            file=sys.stderr,
        )
        return 1
    path = submit(directory, action, alarm_id, by, **extra)
    try:
        rejected = wait_applied(path, timeout)
    except TimeoutError:
        print(
            f"dust-agent {action}: queued as {path}, but the agent did not pick it up within "
            f"{timeout:g} s: is it running (systemctl status dust-agent)? It is applied when "
            "the agent runs.",
            file=sys.stderr,
        )
        return 75
    if rejected is not None:
        print(f"dust-agent {action}: rejected by the agent: {rejected}", file=sys.stderr)
        return 1
    print(f"{alarm_id}: {action} recorded in the journal and sent upstream")
    return 0


def _duration(text: str) -> float:
    from agent.cli.alarms import parse_since

    try:
        return 0.0 - parse_since(text, 0.0)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r}: expected a duration such as 30m, 2h, 1d"
        ) from None


def add_operator_commands(
    sub: Any,
    with_config: Callable[[argparse.ArgumentParser], argparse.ArgumentParser],
    load: Callable[[str], AgentConfig],
) -> None:
    """Register `ack`, `shelve` and `unshelve` on the dust-agent command line."""

    def common(name: str, text: str) -> argparse.ArgumentParser:
        p = with_config(sub.add_parser(name, help=text, description=text))
        p.add_argument("alarm_id", metavar="ID", help="alarm id, e.g. 1301000000010101001:high")
        p.add_argument("--by", required=True, metavar="NAME", help="who does this (journaled)")
        p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the agent")
        return p

    ack = common("ack", "acknowledge an active alarm (recorded in the journal, sent upstream)")
    ack.add_argument("--note", default="", help="a remark kept with the acknowledgement")
    shelve = common("shelve", "suppress an alarm's transitions for a while (e.g. --for 2h)")
    shelve.add_argument("--for", dest="duration", type=_duration, required=True, metavar="TIME")
    shelve.add_argument("--note", default="", help="why (kept with the shelve record)")
    common("unshelve", "end a shelve before it expires")

    def run(args: argparse.Namespace) -> int:
        cfg = load(args.config)
        extra: dict[str, Any] = {}
        if args.command in ("ack", "shelve") and args.note:
            extra["note"] = args.note
        if args.command == "shelve":
            extra["until"] = time.time() + args.duration
        return run_action(
            cfg.storage.dir, args.command, args.alarm_id, args.by, args.timeout, **extra
        )

    for p in (ack, shelve, sub.choices["unshelve"]):
        p.set_defaults(func=run)
