"""Delivery stall: has an uplink's delivery really stopped, and why (status.json and health).

This is not the systemd watchdog (agent.service.systemd, which asks "does the loop still
turn?" and exists only under a WatchdogSec). It asks "do records still get acknowledged?":
an uplink progresses while its acknowledged-record count grows or while it has nothing to
send. Only when records are pending and none has been acknowledged for `limit` seconds is
it a stall, with the reason: the broker is down (not connected, with the last error) or the
acknowledgements do not come (connected, messages published, no PUBACK).

The limit is derived from the uplink settings like the watchdog's (2 × (backoff cap +
publish timeout + keepalive) + 30 s) unless the environment sets DUST_AGENT_STALL_AFTER
(seconds).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Final, Protocol

from agent.core.model import UplinkSpec

STALL_ENV: Final = "DUST_AGENT_STALL_AFTER"


class UplinkStats(Protocol):
    """What is read of agent.uplink.forwarder.ForwarderStats."""

    @property
    def connected(self) -> bool: ...
    @property
    def records(self) -> int: ...
    @property
    def published(self) -> int: ...
    @property
    def messages(self) -> int: ...
    @property
    def last_error(self) -> str: ...


def stall_limit(spec: UplinkSpec, environ: dict[str, str] | None = None) -> float:
    """Seconds without an acknowledgement (records pending) before delivery counts as stalled."""
    env = os.environ if environ is None else environ
    raw = env.get(STALL_ENV, "").strip()
    if raw:
        try:
            value = float(raw)
        except ValueError:
            value = 0.0
        if value > 0:
            return value
    return 2 * (spec.backoff_cap + spec.publish_timeout + spec.keepalive) + 30


@dataclass(slots=True)
class DeliveryWatch:
    """Tracks one uplink's acknowledgements; `check()` after each look at its counters."""

    limit: float
    since: float = 0.0  # monotonic: the last time delivery was seen progressing (or idle)
    acked: int = -1  # acknowledged records at the last check
    stalled: str | None = None  # the current stall reason; None while delivery progresses

    def check(self, stats: UplinkStats, pending: int, now: float | None = None) -> str | None:
        """The stall reason, or None: records acknowledged since the last check, or none to
        send, count as progress."""
        t = time.monotonic() if now is None else now
        if self.acked < 0 or pending <= 0 or stats.records != self.acked:
            self.since = t
        self.acked = stats.records
        silent = t - self.since
        if silent <= self.limit:
            self.stalled = None
        elif not stats.connected:
            error = f" (last error: {stats.last_error})" if stats.last_error else ""
            self.stalled = (
                f"broker down: nothing acknowledged for {silent:.0f} s with {pending} records"
                f" pending{error}"
            )
        else:
            self.stalled = (
                f"acknowledgements not coming: connected, {stats.published - stats.messages}"
                f" message(s) unacknowledged, nothing acknowledged for {silent:.0f} s with"
                f" {pending} records pending"
            )
        return self.stalled

    def snapshot(self, now: float | None = None) -> dict[str, Any]:
        """The "delivery" entry of status.json / health: stalled reason (or null) and limit."""
        t = time.monotonic() if now is None else now
        return {
            "stalled": self.stalled,
            "silent_s": round(max(0.0, t - self.since), 1) if self.stalled else 0.0,
            "stall_after_s": self.limit,
        }
