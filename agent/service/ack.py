"""Operator actions on alarms and the alarm state that survives a restart.

`dust-agent ack ID --by NAME` (and `shelve` / `unshelve`) reach the running agent over the
operator socket (agent.service.operator). A valid request waits in `AlarmOps` until the rules
stage takes its next frame: it is applied to the engine there (so its events are journaled
and stored in order with the frame's), and answered once they are stored (`settle`). A
request the engine refuses (unknown or inactive alarm, a shelve too long or of a critical
alarm, a non-finite time) changes nothing and is answered with the reason.

The engine's alarm state is written to `<storage.dir>/alarm_state.json` (temp file, fsync,
rename) after every batch of transitions and restored at start: an alarm active before a
restart is not raised twice, and one whose condition went away is cleared once the
condition is seen normal. A file that is not JSON or not of the expected shape is moved
aside as `alarm_state.json.bad-<epoch>` (logged, an `alarm_state_rejected` event) and the
agent starts clean.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from agent.core.model import AgentConfig, AlarmEvent, Frame, OperatorSpec
from agent.rules import AlarmLookupError, RuleEngine
from agent.service.operator import Answer, OperatorRequest, OperatorServer, group_id
from agent.store.journal import Journal
from agent.store.outbox import Entry
from agent.uplink.payload import encode_event

log = logging.getLogger(__name__)

STATE_FILE = "alarm_state.json"
APPLY_TIMEOUT = 10.0  # seconds a request may wait for the rules stage
_LEVEL_KEYS = ("published", "computed", "held")
_STATE_KEYS = frozenset(
    {*_LEVEL_KEYS, "acked", "since", "shelved_until", "value", "threshold", "unit"}
)


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


def _time_or_none(v: object) -> bool:
    return v is None or (
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    )


def state_problem(data: object) -> str | None:
    """Why `data` is not a saved alarm state (None when it is one)."""
    alarms = data.get("alarms") if isinstance(data, dict) else None
    if not isinstance(alarms, dict):
        return "not an object with an 'alarms' object"
    for aid, d in alarms.items():
        if not isinstance(d, dict) or not set(d) <= _STATE_KEYS:
            return f"alarm {aid!r}: not an object of {', '.join(sorted(_STATE_KEYS))}"
        for k in _LEVEL_KEYS:
            v = d.get(k, 0)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 3:
                return f"alarm {aid!r}: {k} must be a level 0..3, got {v!r}"
        if not isinstance(d.get("acked", False), bool):
            return f"alarm {aid!r}: acked must be true or false"
        for k in ("since", "shelved_until"):
            if not _time_or_none(d.get(k)):
                return f"alarm {aid!r}: {k} must be a finite time or null"
        for k in ("value", "threshold"):  # the rule's measure and limit, for status
            v = d.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
                return f"alarm {aid!r}: {k} must be a number or null"
        if not isinstance(d.get("unit", ""), str):
            return f"alarm {aid!r}: unit must be a string"
    return None


def load_state(directory: Path) -> tuple[dict[str, Any], dict[str, object] | None]:
    """The saved alarm state ({} when none), and an event's data when the file was bad and
    moved aside."""
    path = directory / STATE_FILE
    try:
        data = orjson.loads(path.read_bytes())
        problem = state_problem(data)
    except FileNotFoundError:
        return {}, None
    except (OSError, orjson.JSONDecodeError) as exc:
        problem = f"unreadable: {exc}"
    if problem is None:
        return dict(data["alarms"]), None
    bad = path.with_name(f"{STATE_FILE}.bad-{int(time.time())}")
    with contextlib.suppress(OSError):
        path.replace(bad)
    log.error("alarm state %s rejected (%s); moved aside as %s, starting clean", path, problem, bad)
    return {}, {"file": str(path), "moved_to": str(bad), "reason": problem}


def save_state(directory: Path, alarms: dict[str, Any]) -> None:
    _write_atomic(
        directory / STATE_FILE, orjson.dumps({"v": 1, "saved": time.time(), "alarms": alarms})
    )


def make_journal(cfg: AgentConfig) -> Journal:
    """The alarm journal of `cfg`: HMAC-keyed when configured, shared with the operators."""
    st = cfg.storage
    return Journal(
        st.dir / "journal",
        st.journal_max_bytes,
        st.journal_keep,
        hmac_key=st.journal_hmac_key,
        gid=group_id(cfg.operator_spec.group),
    )


class AlarmOps:
    """Wraps the engine for the rules stage: restore at start, operator requests, saving.

    `step(frame)` = pending operator requests + engine.step; the state file is rewritten
    whenever events came out; `settle()` (after the frame's records are stored) answers the
    requests applied. `drain()` hands over gateway events (a rejected state file, the socket
    unavailable). The engine is looked up through `engine()` on each call, so a config
    reload that swaps the engine is followed.
    """

    def __init__(
        self, directory: Path, engine: Callable[[], RuleEngine], spec: OperatorSpec | None = None
    ) -> None:
        self.directory = directory
        self.spec = spec or OperatorSpec(directory / "operator.sock")
        self._engine = engine
        self._pending: list[tuple[OperatorRequest, asyncio.Future[Answer]]] = []
        self._applied: list[tuple[asyncio.Future[Answer], str]] = []
        self._events: list[Entry] = []

    def notify(self, kind: str, data: dict[str, object]) -> None:
        self._events.append(encode_event(kind, data))

    def drain(self) -> list[Entry]:
        out, self._events = self._events, []
        return out

    def restore(self) -> None:
        saved, rejected = load_state(self.directory)
        if rejected is not None:
            self.notify("alarm_state_rejected", rejected)
        if saved:
            dropped = self._engine().restore(saved)
            log.info("restored %d alarm(s) from %s", len(saved) - len(dropped), STATE_FILE)
            if dropped:
                log.warning("alarms no longer in the config, dropped: %s", ", ".join(dropped))

    async def serve(self) -> None:
        """The operator socket, until cancelled; pending requests are then refused."""
        try:
            await OperatorServer(self.spec, self.request, self.notify).run()
        finally:
            for _req, fut in self._pending:
                if not fut.done():
                    fut.set_result(Answer(False, "the agent is stopping; not applied"))
            self._pending.clear()

    async def request(self, req: OperatorRequest) -> Answer:
        """Queue `req` for the rules stage; its answer, or a refusal when it was not taken
        within APPLY_TIMEOUT s (then nothing was changed)."""
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        item = (req, fut)
        self._pending.append(item)
        try:
            async with asyncio.timeout(APPLY_TIMEOUT):
                return await asyncio.shield(fut)
        except TimeoutError:
            if item in self._pending:
                self._pending.remove(item)
                return Answer(
                    False,
                    f"not applied: the rules stage took no frame within "
                    f"{APPLY_TIMEOUT:g} s (are the buses polled?)",
                )
            return Answer(
                False, "applied, but storing it was not confirmed in time: see `dust-agent alarms`"
            )

    def step(self, frame: Frame) -> list[AlarmEvent]:
        events = self._apply_pending()
        events += self._engine().step(frame)
        if events:
            self.save()
        return events

    def settle(self) -> None:
        """Answer the requests applied in the steps since the last call (now stored)."""
        for fut, text in self._applied:
            if not fut.done():
                fut.set_result(Answer(True, text))
        self._applied.clear()

    def _apply_pending(self) -> list[AlarmEvent]:
        events: list[AlarmEvent] = []
        pending, self._pending = self._pending, []
        for req, fut in pending:
            if fut.done():
                continue
            try:
                out = self.apply(req)
            except (AlarmLookupError, ValueError) as exc:
                fut.set_result(Answer(False, str(exc.args[0] if exc.args else exc)))
                continue
            events += out
            self._applied.append(
                (
                    fut,
                    f"{req.alarm_id}: {req.action} recorded in the journal and queued for upstream",
                )
            )
        return events

    def apply(self, req: OperatorRequest) -> list[AlarmEvent]:
        """One validated request on the engine, stamped with the agent's clock."""
        now = time.time()
        who = {"os_user": req.os_user, "os_uid": req.os_uid}
        engine = self._engine()
        if req.action == "ack":
            return engine.ack(req.alarm_id, req.by, now, req.note, who=who)
        if req.action == "shelve":
            assert req.duration is not None
            return engine.shelve(
                req.alarm_id,
                now + req.duration,
                req.by,
                now,
                req.note,
                max_duration=self.spec.max_shelve,
                allow_critical=self.spec.allow_shelve_critical,
                who=who,
            )
        return engine.unshelve(req.alarm_id, req.by, now, who=who)

    def save(self) -> None:
        try:
            save_state(self.directory, self._engine().snapshot())
        except OSError as exc:  # the journal and outbox still have the events
            log.error("cannot write %s: %s", self.directory / STATE_FILE, exc)
