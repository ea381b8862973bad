"""Scenario expectations, checked against the alarm records that reach the broker.

    [[expect]]
    alarm = "DC-1.hopper_temp"    # DEVICE.KEY, or DEVICE (any of its points)
    kind = "rate"                 # optional: threshold, rate, drop, count, idle, comm_loss, ...
    level = "warning"             # optional: warning, alarm, critical
    transition = "raise"          # optional: raise (default: raise or escalate), clear, ...
    between = [10, 40]            # optional: scenario seconds from the start

    [[expect]]
    no_alarm = "DC-2"             # DEVICE or DEVICE.KEY: no raise/escalate during the run
    kind = "threshold"            # optional, as above

A positive expectation passes as soon as a matching record arrives inside its window and fails
once the window is over (or the run ends) without one. A `no_alarm` passes at the end of the
run and fails at the first matching record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from firmware_sim.timeline import ScenarioError

RAISING = ("raise", "escalate")


@dataclass(frozen=True, slots=True)
class Expectation:
    target: str  # DEVICE or DEVICE.KEY
    negative: bool = False  # no_alarm
    kind: str | None = None
    level: str | None = None
    transition: str | None = None
    start: float = 0.0
    end: float | None = None

    def describe(self) -> str:
        what = " ".join(x for x in (self.kind, self.level) if x)
        if self.negative:
            return f"no {what + ' ' if what else ''}alarm on {self.target}"
        window = ""
        if self.end is not None:
            window = f" between {self.start:g} and {self.end:g} s"
        elif self.start:
            window = f" after {self.start:g} s"
        return f"{self.target} {what or 'alarm'} {self.transition or 'raised'}{window}"

    def matches(self, record: Mapping[str, Any]) -> bool:
        device, _, key = self.target.partition(".")
        if record.get("device") != device or (key and record.get("key") != key):
            return False
        if self.kind is not None and record.get("kind") != self.kind:
            return False
        if self.level is not None and record.get("level") != self.level:
            return False
        if self.transition is not None:
            return bool(record.get("transition") == self.transition)
        return record.get("transition") in RAISING


@dataclass(slots=True)
class Outcome:
    expectation: Expectation
    passed: bool | None = None  # None: not decided yet
    seen_at: float | None = None  # scenario seconds of the deciding record
    note: str = ""


def _opt(entry: Mapping[str, Any], key: str) -> str | None:
    value = entry.get(key)
    return None if value is None else str(value)


def parse_expectations(entries: list[Any]) -> tuple[Expectation, ...]:
    out = []
    for i, entry in enumerate(entries):
        where = f"expect[{i}]"
        if not isinstance(entry, dict) or ("alarm" in entry) == ("no_alarm" in entry):
            raise ScenarioError(f"{where}: needs exactly one of alarm = ..., no_alarm = ...")
        negative = "no_alarm" in entry
        between = entry.get("between")
        start, end = 0.0, None
        if between is not None:
            if (
                not isinstance(between, list)
                or len(between) != 2
                or not all(isinstance(x, int | float) for x in between)
            ):
                raise ScenarioError(f"{where}.between: expected [START, END] in seconds")
            start, end = float(between[0]), float(between[1])
        out.append(
            Expectation(
                target=str(entry["no_alarm" if negative else "alarm"]),
                negative=negative,
                kind=_opt(entry, "kind"),
                level=_opt(entry, "level"),
                transition=_opt(entry, "transition"),
                start=start,
                end=end,
            )
        )
    return tuple(out)


class Checker:
    """Feeds alarm records (with their scenario time) to every expectation."""

    def __init__(self, expectations: tuple[Expectation, ...]) -> None:
        self.outcomes = [Outcome(e) for e in expectations]

    def record(self, rec: Mapping[str, Any], s: float) -> None:
        for o in self.outcomes:
            e = o.expectation
            if o.passed is not None or not e.matches(rec):
                continue
            label = f"{rec.get('kind')} {rec.get('level') or ''} {rec.get('transition')}".strip()
            if e.negative:
                o.passed, o.seen_at, o.note = False, s, f"got {label} at {s:.1f} s"
            elif s < e.start:
                o.note = f"early: {label} at {s:.1f} s"
            elif e.end is None or s <= e.end:
                o.passed, o.seen_at, o.note = True, s, f"{label} at {s:.1f} s"

    def tick(self, s: float) -> None:
        """Scenario time `s` has passed: windows that closed without a match fail."""
        for o in self.outcomes:
            e = o.expectation
            if o.passed is None and not e.negative and e.end is not None and s > e.end + 5.0:
                o.passed = False
                o.note = o.note or "not seen in the window"

    def finish(self, s: float) -> None:
        for o in self.outcomes:
            if o.passed is None:
                o.passed = o.expectation.negative
                if not o.passed:
                    o.note = o.note or f"not seen in {s:.0f} s"

    @property
    def decided(self) -> bool:
        """Every expectation that can be decided before the end is."""
        return all(o.passed is not None or o.expectation.negative for o in self.outcomes)

    @property
    def ok(self) -> bool:
        return all(o.passed for o in self.outcomes)

    def table(self) -> list[str]:
        rows = [("result", "expectation", "observed")]
        for o in self.outcomes:
            mark = {True: "PASS", False: "FAIL", None: "?"}[o.passed]
            rows.append((mark, o.expectation.describe(), o.note))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        return [f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows]
