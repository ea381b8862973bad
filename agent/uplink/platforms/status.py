"""A platform's view of each point's alarms: the transitions of the point's worst active state.

A platform event carries one status per point code (Hebei: `oname`, `scd`; no alarm id), so
several alarms of one point (high limit, state, comm_loss...) must not overwrite each other
there. `PointStatus` keeps, per point code, the alarms that are active and sent as a status
(scd not NOT_SENT), and turns every alarm transition into the change of the point's worst
active alarm, if any:

- worst = the highest level (warning < alarm < critical); between equal levels the higher
  scd; between equal scds the alarm that became active first (a newcomer does not take over);
- a status goes out when the worst alarm or its level changes, a clear (scd `clear`) only
  when nothing sent as a status is active on the point any more.

So the last event a platform has for a point always states the point's worst active alarm.
The state is committed only once the platform accepted the requests built from it, and
persisted beside the uplink's progress (`save` / `load`, a JSON file in the storage
directory), so a restart neither repeats nor skips a transition.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import orjson

RANKS: Final = {"warning": 1, "alarm": 2, "critical": 3}
VERSION: Final = 1


@dataclass(frozen=True, slots=True)
class Active:
    """One active alarm of a point, as the platform is told about it."""

    level: str
    scd: int
    threshold: float | None  # None: the alarm is not a limit of the point's value
    content: str  # the Chinese text of its last transition

    def rank(self) -> tuple[int, int]:
        return RANKS.get(self.level, 0), self.scd


@dataclass(frozen=True, slots=True)
class Change:
    """The point's new status: `alarm_id` None is a clear."""

    code: str
    alarm_id: str | None
    scd: int
    threshold: float | None
    content: str


@dataclass(slots=True)
class PointStatus:
    """Per point code: the active alarms sent as a status, and the status last sent."""

    active: dict[str, dict[str, Active]] = field(default_factory=dict)
    sent: dict[str, tuple[str, str, float | None]] = field(default_factory=dict)

    def copy(self) -> PointStatus:
        return PointStatus({c: dict(a) for c, a in self.active.items()}, dict(self.sent))

    def worst(self, code: str) -> tuple[str, Active] | None:
        alarms = self.active.get(code)
        if not alarms:
            return None
        best: tuple[str, Active] | None = None
        for aid, a in alarms.items():  # insertion order: the first active wins a tie
            if best is None or a.rank() > best[1].rank():
                best = aid, a
        return best

    def apply(
        self, code: str, alarm_id: str, now: Active | None, clear_scd: int, clear_text: str
    ) -> Change | None:
        """One alarm of `code` is now `now` (None: not active); the point's change, if any."""
        alarms = self.active.setdefault(code, {})
        if now is None:
            alarms.pop(alarm_id, None)
        else:
            alarms[alarm_id] = now
        if not alarms:
            del self.active[code]
        worst = self.worst(code)
        last = self.sent.get(code)
        if worst is None:
            if last is None:
                return None
            del self.sent[code]
            return Change(code, None, clear_scd, last[2], clear_text)
        aid, a = worst
        if last is not None and last[:2] == (aid, a.level):
            return None
        self.sent[code] = (aid, a.level, a.threshold)
        return Change(code, aid, a.scd, a.threshold, a.content)

    # -- persistence -------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "active": {
                code: {aid: [a.level, a.scd, a.threshold, a.content] for aid, a in alarms.items()}
                for code, alarms in self.active.items()
            },
            "sent": {code: list(s) for code, s in self.sent.items()},
        }

    @classmethod
    def from_json(cls, doc: Any) -> PointStatus:
        """The state saved by to_json; ValueError when it is not that."""
        try:
            if doc["v"] != VERSION:
                raise ValueError(f"version {doc['v']!r}")
            active = {
                str(code): {
                    str(aid): Active(str(lv), int(scd), _opt(thr), str(text))
                    for aid, (lv, scd, thr, text) in alarms.items()
                }
                for code, alarms in doc["active"].items()
            }
            sent = {
                str(code): (str(aid), str(lv), _opt(thr))
                for code, (aid, lv, thr) in doc["sent"].items()
            }
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a saved point status: {exc}") from None
        return cls(active, sent)

    def save(self, path: Path) -> None:
        """Write atomically (temporary file, fsync, rename)."""
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("wb") as f:
            f.write(orjson.dumps(self.to_json()))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> PointStatus:
        """The saved state, or an empty one when there is none (first start)."""
        with contextlib.suppress(FileNotFoundError):
            return cls.from_json(orjson.loads(path.read_bytes()))
        return cls()


def _opt(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None
