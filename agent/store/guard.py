"""Keeps the agent running when the disk refuses writes (full, read-only, I/O error).

`StoreGuard.put(entries)` stores through the outbox. When the outbox raises
OutboxWriteError, the guard keeps alarm and event entries in a bounded memory queue
(MAX_HELD entries; beyond it the oldest held event, then alarm, is dropped and counted),
drops telemetry (counted, with its time range), sets `error`, logs once, and tries again
on the next put (at most every RETRY_EVERY seconds). When a write succeeds again, the held
entries go first, followed by a `data_dropped` event (reason "storage_error") and a
`storage_recovered` event. Polling never stops and the process does not crash-loop.
Other OutboxErrors propagate (a bug or a broken database: the supervisor exits).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Final

from agent.store.outbox import Outbox
from agent.store.records import Entry, OutboxWriteError, event_entry

log = logging.getLogger(__name__)

MAX_HELD: Final = 10_000  # alarm/event entries kept in memory while the disk refuses writes
RETRY_EVERY: Final = 1.0  # seconds between write attempts while failing


class StoreGuard:
    def __init__(self, outbox: Outbox, max_held: int = MAX_HELD) -> None:
        self.outbox = outbox
        self.max_held = max_held
        self.held: deque[Entry] = deque()
        self.error: str | None = None  # the current storage error, None when writes work
        self.failed_since: float | None = None
        self.failures = 0  # times writes started failing (one per outage), ever
        self.dropped_records = 0  # telemetry (and overflowing held entries) lost, ever
        self._lost: list[float] = []  # [records, from_ts, to_ts] of the current failure
        self._next_try = 0.0

    async def put(self, entries: Sequence[Entry]) -> None:
        if self.error is not None and time.monotonic() < self._next_try:
            self._hold(entries)
            return
        todo = [*self.held, *entries]
        if self.error is not None:
            todo += self._recovery_events()
        try:
            await self.outbox.put(todo)
        except OutboxWriteError as exc:
            self._failed(exc, entries)
            return
        if self.error is not None:
            log.warning(
                "outbox writes work again after %.0f s; %d held records stored",
                time.time() - (self.failed_since or time.time()),
                sum(e.n for e in self.held),
            )
        self.held.clear()
        self.error, self.failed_since, self._lost = None, None, []

    def _failed(self, exc: OutboxWriteError, entries: Sequence[Entry]) -> None:
        self._next_try = time.monotonic() + RETRY_EVERY
        if self.error is None:
            self.failed_since = time.time()
            self.failures += 1
            log.error("%s", exc)
        self.error = str(exc)
        self._hold(entries)

    def _hold(self, entries: Sequence[Entry]) -> None:
        for e in entries:
            if e.stream == "telemetry":
                self._lose(e)
                continue
            self.held.append(e)
            if len(self.held) > self.max_held:
                victim = next((h for h in self.held if h.stream == "event"), self.held[0])
                self.held.remove(victim)
                self._lose(victim)

    def _lose(self, e: Entry) -> None:
        self.dropped_records += e.n
        if not self._lost:
            self._lost = [0.0, e.ts, e.ts]
        self._lost[0] += e.n
        self._lost[1] = min(self._lost[1], e.ts)
        self._lost[2] = max(self._lost[2], e.ts)

    def _recovery_events(self) -> list[Entry]:
        now = time.time()
        out = [
            event_entry(
                "storage_recovered",
                {"error": self.error, "since": round((self.failed_since or now) * 1000)},
                now,
            )
        ]
        if self._lost:
            n, first, last = self._lost
            out.append(
                event_entry(
                    "data_dropped",
                    {
                        "stream": "telemetry",
                        "records": int(n),
                        "from_ts": round(first * 1000),
                        "to_ts": round(last * 1000),
                        "dropped_total": self.dropped_records,
                        "reason": "storage_error",
                    },
                    now,
                )
            )
        return out
