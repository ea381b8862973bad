"""Small parts of the forwarding loop (agent.uplink.forwarder): honouring a swallowed cancel,
the loop's counters, and the token bucket that paces a backlog beside live data."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass


def honour_cancel() -> None:
    """Re-raise a cancel that was swallowed.

    Python 3.11's asyncio.wait_for (used inside aiomqtt) returns the result instead of raising
    CancelledError when the awaited operation completes in the same loop turn as the cancel;
    the task then keeps running with cancelling() > 0. Loops call this once per turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


@dataclass(slots=True)
class ForwarderStats:
    messages: int = 0  # messages (requests) acknowledged by the upstream
    items: int = 0  # items in those messages (MQTT: records; platforms: their items)
    records: int = 0  # outbox records acknowledged
    acked_rows: int = 0  # outbox rows acknowledged
    published: int = 0  # messages handed to the uplink (acknowledged or not)
    published_records: int = 0  # items in them
    backfill_records: int = 0  # acknowledged records sent as backfill
    connects: int = 0  # successful connections
    reconnects: int = 0  # connection attempts after a failure
    failures: int = 0  # failed connects and sends
    last_error: str = ""
    connected: bool = False
    last_progress: float = 0.0  # monotonic: the loop's last turn (read by the systemd watchdog)


class TokenBucket:
    """`rate` tokens per second, up to `burst`; rate 0 means unlimited."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, max(burst, 1.0)
        self.tokens = self.burst
        self._at = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self._at) * self.rate)
        self._at = now

    def ready(self) -> bool:
        if self.rate <= 0:
            return True
        self._refill()
        return self.tokens > 0

    def take(self, n: int) -> None:
        if self.rate > 0:
            self._refill()
            self.tokens -= n  # may go negative: one batch may exceed the remaining budget

    def wait_time(self) -> float:
        return 0.0 if self.rate <= 0 or self.tokens > 0 else -self.tokens / self.rate
