"""Reconnect backoff shared by the bus pollers and the uplink forwarder."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Literal


class Backoff:
    """Jittered exponential delays between reconnect attempts.

    The bound doubles from `base` up to `cap`. With jitter "full" a delay is drawn from
    [0, bound] (spreads many gateways reconnecting to one broker); with "equal" from
    [bound/2, bound] (never hammers a field device straight away). The sequence starts over
    only once a connection has lasted `stable_after` seconds, so a link that flaps (connects,
    then drops at once) keeps backing off.
    """

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        stable_after: float = 30.0,
        *,
        jitter: Literal["full", "equal"] = "full",
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.stable_after = base, cap, stable_after
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng
        self._connected_at: float | None = None

    def connected(self, now: float | None = None) -> None:
        """A connection was made at `now` (monotonic seconds; default: now)."""
        self._connected_at = time.monotonic() if now is None else now

    def next_delay(self, now: float | None = None) -> float:
        """The wait before the next attempt, after a failed attempt or a lost link at `now`."""
        now = time.monotonic() if now is None else now
        if self._connected_at is not None and now - self._connected_at >= self.stable_after:
            self.attempt = 0
        self._connected_at = None
        bound = min(self.cap, self.base * 2.0 ** min(self.attempt, 60))
        self.attempt += 1
        low = 0.0 if self.jitter == "full" else 0.5
        return bound * (low + (1.0 - low) * self._rng())
