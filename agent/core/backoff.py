"""Reconnect backoff shared by the bus pollers and the uplink forwarding loop (tenacity waits).

The delays come from tenacity's wait strategies; what tenacity does not have (its retry
state lives for one call) is kept here: the attempt count survives across connections and
starts over only after a *stable* session, so a link that flaps keeps backing off.
"""

from __future__ import annotations

import time
from typing import Literal

import tenacity
from tenacity.wait import wait_base

Jitter = Literal["full", "equal"]


def wait_strategy(base: float, cap: float, jitter: Jitter) -> wait_base:
    """tenacity wait: bound = min(cap, base * 2**(attempt - 1)).

    "full": uniform in [0, bound] (spreads many gateways reconnecting to one broker);
    "equal": uniform in [bound/2, bound] (never hammers a field device straight away).
    """
    if jitter == "full":
        return tenacity.wait_random_exponential(multiplier=base, max=cap)
    half, half_cap = base / 2.0, cap / 2.0
    return tenacity.wait_exponential(multiplier=half, max=half_cap) + (
        tenacity.wait_random_exponential(multiplier=half, max=half_cap)
    )


class Backoff:
    """Jittered exponential delays between reconnect attempts (see `wait_strategy`).

    The bound doubles from `base` up to `cap`. The sequence starts over only once a
    connection has lasted `stable_after` seconds.
    """

    def __init__(
        self,
        base: float = 0.5,
        cap: float = 30.0,
        stable_after: float = 30.0,
        *,
        jitter: Jitter = "full",
    ) -> None:
        self.base, self.cap, self.stable_after = base, cap, stable_after
        self.jitter = jitter
        self.attempt = 0
        self._wait = wait_strategy(base, cap, jitter)
        # one reusable retry state: tenacity's waits read only its attempt_number
        self._state = tenacity.RetryCallState(tenacity.Retrying(), None, (), {})
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
        self.attempt += 1
        self._state.attempt_number = min(self.attempt, 60)
        return float(self._wait(self._state))
