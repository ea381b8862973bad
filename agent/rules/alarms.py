"""The alarm book of the RuleEngine: per-alarm lifecycle (latch, acknowledgement, shelving,
chattering), operator actions, the active list, and the restart snapshot."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from agent.core.decimals import event_numbers, round_value
from agent.core.model import AlarmEvent, Direction, Level, PointSpec
from agent.rules.base import Kind
from agent.rules.lifecycle import AlarmState, chattering
from agent.rules.rows import FloatArray
from agent.rules.texts import LEVELS, make_event, operator_texts

Int8Array = npt.NDArray[np.int8]
Who = Mapping[str, object] | None  # the operator's OS identity, journaled beside `by`


@dataclass(frozen=True, slots=True)
class ActiveAlarm:
    """An alarm whose published level is not normal."""

    alarm_id: str
    point: str  # platform point code
    device: str
    key: str
    kind: str
    direction: Direction
    level: Level
    since: float  # source ts of the raise (the step out of normal)
    value: float  # what the rule measured at the last transition, in `unit` (NaN: unknown)
    threshold: float  # threshold of the current level, in `unit`
    unit: str  # the rule's unit: the point's, or e.g. degC/min (rate), /60 s (count), s (stale)
    acked: bool = False
    shelved_until: float | None = None
    reading: float = math.nan  # latest reading of the point, in its own unit (NaN if bad)
    reading_unit: str = ""


class AlarmLookupError(LookupError):
    """An operator named an alarm id the engine does not know or that is not active."""


def _finite(**times: float) -> None:
    """Refuse NaN and ±inf times (ValueError naming the argument)."""
    for name, value in times.items():
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
        ):
            raise ValueError(f"{name} must be a finite time in epoch seconds, got {value!r}")


class AlarmBook:
    """The alarm states of a RuleEngine, keyed by alarm id (the engine's step fills it)."""

    kinds: list[Kind]
    _level: list[Int8Array]  # per kind: the level of each (slot, column)
    _value: FloatArray  # latest reading of every point
    _by_code: dict[str, int]
    _suffix: dict[str, tuple[int, int]]  # alarm-id suffix -> (kind index, slot)
    _states: dict[str, AlarmState]
    _shelved: int  # how many entries have a shelf (skip the expiry scan when 0)

    def _publish(
        self,
        kind: Kind,
        s: int,
        c: int,
        computed: int,
        *,
        value: float,
        thr: float,
        unit: str,
        ts: float,
    ) -> AlarmEvent | None:
        spec = kind.specs[c]
        slot = kind.slots[s]
        aid = f"{spec.code}:{slot.suffix}"
        st = self._states.get(aid)
        if st is None:
            st = self._states[aid] = AlarmState()
        if computed > st.computed:
            st.acked = False  # a new raise or escalation needs a new acknowledgement
        st.computed = computed
        if computed:  # status shows what the rule measured, in its unit (not the reading)
            st.value, st.threshold = event_numbers(spec, value, thr, unit)
            st.unit = unit
        if spec.rules.latch:
            st.held = max(st.held, computed)
        eff = st.effective()
        ev = None
        if eff != st.published and st.shelved_until is None:
            ev = self._event(
                spec, kind, s, st.published, eff, value=value, thr=thr, unit=unit, ts=ts, st=st
            )
        if st.disposable():
            del self._states[aid]
        return ev

    def _event(
        self,
        spec: PointSpec,
        kind: Kind,
        s: int,
        prev: int,
        new: int,
        *,
        value: float,
        thr: float,
        unit: str,
        ts: float,
        st: AlarmState,
        extra: dict[str, object] | None = None,
    ) -> AlarmEvent:
        slot = kind.slots[s]
        extra = dict(extra or {})
        if chattering(st, ts, spec.rules.chatter_count):
            extra["chattering"] = True
        if st.held > st.computed:
            extra["latched"] = True
        if prev == 0:
            st.since = ts
        st.published = new
        return make_event(
            spec,
            slot.direction,
            prev,
            new,
            value=value,
            threshold=thr,
            ts=ts,
            kind=slot.kind,
            suffix=slot.suffix,
            unit=unit,
            extra=extra,
            reading=float(self._value[spec.index]),  # the engine stored this frame's readings
        )

    def _resolve(self, alarm_id: str) -> tuple[int, Kind, int, int]:
        code, _, suffix = alarm_id.rpartition(":")
        i = self._by_code.get(code)
        found = self._suffix.get(suffix)
        if i is not None and found is not None:
            ki, s = found
            kind = self.kinds[ki]
            c = int(np.searchsorted(kind.points, i))
            if c < len(kind) and kind.points[c] == i:
                return ki, kind, s, c
        raise AlarmLookupError(f"no alarm '{alarm_id}' in this config")

    def _operator_event(
        self,
        alarm_id: str,
        action: str,
        by: str,
        ts: float,
        extra: dict[str, object],
        *,
        st: AlarmState | None = None,
    ) -> AlarmEvent:
        _ki, kind, s, c = self._resolve(alarm_id)
        spec, slot = kind.specs[c], kind.slots[s]
        st = st or self._states.get(alarm_id) or AlarmState()
        until = st.shelved_until
        assert action in ("ack", "shelve", "unshelve")
        zh, en = operator_texts(spec, slot.kind, action, by, until)  # type: ignore[arg-type]
        level = LEVELS[st.published]
        row = kind.row_for(s, st.published, c) if st.published else None
        return AlarmEvent(
            alarm_id=alarm_id,
            point=spec.code,
            device=spec.device,
            key=spec.key,
            direction=slot.direction,
            transition=action,  # type: ignore[arg-type]
            level=level,
            prev_level=level,
            value=round_value(spec, float(self._value[spec.index])),
            threshold=math.nan if row is None else kind.rows.threshold(row, c),
            unit=kind.unit_of_measure or spec.unit,
            ts=ts,
            text_zh=zh,
            text_en=en,
            kind=slot.kind,
            extra={k: v for k, v in {"by": by, **extra}.items() if v not in (None, "")},
            reading=float(self._value[spec.index]),
        )

    def ack(
        self, alarm_id: str, by: str, ts: float, note: str = "", *, who: Who = None
    ) -> list[AlarmEvent]:
        """Acknowledge an active alarm: an `ack` event, then a clear if a latch held it.

        Validate, then change state: the event is built before anything is changed, so a
        refused request (ValueError, AlarmLookupError) leaves the alarm as it was."""
        _finite(ts=ts)
        st = self._states.get(alarm_id)
        if st is None or st.published == 0:
            self._resolve(alarm_id)  # unknown id → its own message
            raise AlarmLookupError(f"alarm '{alarm_id}' is not active")
        event = self._operator_event(alarm_id, "ack", by, ts, {"note": note, **(who or {})})
        st.acked = True
        st.held = 0
        return [event, *self._republish(alarm_id, st, ts)]

    def shelve(
        self,
        alarm_id: str,
        until: float,
        by: str,
        ts: float,
        note: str = "",
        *,
        max_duration: float = math.inf,
        allow_critical: bool = True,
        who: Who = None,
    ) -> list[AlarmEvent]:
        """Suppress an alarm's transitions until `until` (epoch s), at most `max_duration` s
        after `ts`; an alarm that is critical or can become critical only with
        `allow_critical`. Nothing changes when the request is refused (ValueError)."""
        _finite(ts=ts, until=until)
        if until <= ts:
            raise ValueError(f"shelve until {until:.0f} is not after now ({ts:.0f})")
        if until - ts > max_duration:
            raise ValueError(
                f"shelve for {until - ts:.0f} s is longer than the maximum "
                f"{max_duration:.0f} s (operator.max_shelve)"
            )
        _ki, kind, s, c = self._resolve(alarm_id)
        if not allow_critical and self._can_be_critical(kind, s, c, alarm_id):
            raise ValueError(
                f"alarm '{alarm_id}' is or can become critical: shelving it is refused "
                "(operator.allow_shelve_critical)"
            )
        st = self._states.get(alarm_id) or AlarmState()
        previous = st.shelved_until
        st.shelved_until = until  # the event text names the expiry
        try:
            event = self._operator_event(
                alarm_id,
                "shelve",
                by,
                ts,
                {"until": round(until * 1000), "note": note, **(who or {})},
                st=st,
            )
        finally:
            st.shelved_until = previous
        if st.shelved_until is None:
            self._shelved += 1
        st.shelved_until = until
        self._states[alarm_id] = st
        return [event]

    def _can_be_critical(self, kind: Kind, s: int, c: int, alarm_id: str) -> bool:
        st = self._states.get(alarm_id)
        if st is not None and LEVELS[st.published] == "critical":
            return True
        return kind.row_for(s, LEVELS.index("critical"), c) is not None

    def unshelve(self, alarm_id: str, by: str, ts: float, *, who: Who = None) -> list[AlarmEvent]:
        _finite(ts=ts)
        st = self._states.get(alarm_id)
        if st is None or st.shelved_until is None:
            self._resolve(alarm_id)
            raise AlarmLookupError(f"alarm '{alarm_id}' is not shelved")
        event = self._operator_event(alarm_id, "unshelve", by, ts, dict(who or {}))
        st.shelved_until = None
        self._shelved -= 1
        return [event, *self._republish(alarm_id, st, ts)]

    def _republish(self, alarm_id: str, st: AlarmState, ts: float) -> list[AlarmEvent]:
        """After an operator action: publish the effective level if it differs."""
        out: list[AlarmEvent] = []
        eff = st.effective()
        if eff != st.published and st.shelved_until is None:
            _ki, kind, s, c = self._resolve(alarm_id)
            lvl = st.published if eff == 0 else eff
            row = kind.row_for(s, lvl, c)
            x = float(self._value[kind.specs[c].index])
            thr = math.nan if row is None else kind.rows.threshold(row, c)
            value, _, unit = kind.describe(row or 0, c, x, x)
            out.append(
                self._event(
                    kind.specs[c],
                    kind,
                    s,
                    st.published,
                    eff,
                    value=value,
                    thr=thr,
                    unit=unit,
                    ts=ts,
                    st=st,
                )
            )
        if st.disposable():
            self._states.pop(alarm_id, None)
        return out

    def _expire(self, now: float) -> list[AlarmEvent]:
        out: list[AlarmEvent] = []
        for aid, st in list(self._states.items()):
            if st.shelved_until is not None and st.shelved_until <= now:
                out += self.unshelve(aid, "", now)
        return out

    # -- inspection and persistence ---------------------------------------------------------

    def active(self) -> list[ActiveAlarm]:
        """Every alarm whose published level is not normal, in point order."""
        out: list[ActiveAlarm] = []
        for aid, st in self._states.items():
            level = LEVELS[st.published]
            if level is None:
                continue
            _ki, kind, s, c = self._resolve(aid)
            spec, slot = kind.specs[c], kind.slots[s]
            row = kind.row_for(s, st.published, c)
            out.append(
                ActiveAlarm(
                    alarm_id=aid,
                    point=spec.code,
                    device=spec.device,
                    key=spec.key,
                    kind=slot.kind,
                    direction=slot.direction,
                    level=level,
                    since=st.since,
                    value=st.value,
                    threshold=math.nan if row is None else kind.rows.threshold(row, c),
                    unit=(kind.unit_of_measure or spec.unit) if st.unit is None else st.unit,
                    acked=st.acked,
                    shelved_until=st.shelved_until,
                    reading=round_value(spec, float(self._value[spec.index])),
                    reading_unit=spec.unit,
                )
            )
        out.sort(key=lambda a: (self._by_code[a.point], a.alarm_id))
        return out

    def snapshot(self) -> dict[str, Any]:
        """The alarm state worth keeping across a restart (JSON-ready)."""
        return {aid: st.to_json() for aid, st in self._states.items() if not st.idle()}

    def restore(self, saved: dict[str, Any]) -> list[str]:
        """Adopt a snapshot taken before a restart: alarms active then are active now (no new
        raise) and clear once their condition is seen normal. Returns the ids dropped because
        this config no longer has them."""
        dropped: list[str] = []
        for aid, d in saved.items():
            try:
                ki, kind, s, c = self._resolve(aid)
                st = AlarmState.from_json(d)
            except (AlarmLookupError, TypeError, ValueError):
                dropped.append(aid)
                continue
            row = kind.row_for(s, st.computed, c) if st.computed else None
            if row is None:
                st.computed = 0
            else:
                kind.set_active(row, c)
                self._level[ki][s, c] = st.computed
            if st.shelved_until is not None:
                self._shelved += 1
            if not st.idle():
                self._states[aid] = st
        return dropped

    # agent.service.reload hands the alarm state to the new engine through these two methods.
    def export_state(self) -> dict[str, Any]:
        return self.snapshot()

    def import_state(self, state: dict[str, Any]) -> None:
        self.restore(state)
