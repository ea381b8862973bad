"""Reconnect waits: the backoff of the bus pollers and platforms (tenacity waits), and the MQTT
uplink's probe-then-spread ReconnectPolicy.

The delays come from tenacity's wait strategies; what tenacity does not have (its retry
state lives for one call) is kept here: the attempt count survives across connections and
starts over only after a *stable* session, so a link that flaps keeps backing off.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import dataclass
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


GOLDEN = (5**0.5 - 1) / 2  # 0.618...: consecutive multiples mod 1 spread most evenly


def slot_phase(slot: int) -> float:
    """The fraction of the spread cycle where the agent with this slot number connects.

    Multiples of the golden ratio mod 1: any run of N consecutive slots is spread so evenly
    that every arc of the cycle holds N x its length, give or take one (the three-distance
    theorem), whatever N is and wherever the run starts.
    """
    return (slot * GOLDEN) % 1.0


def key_phase(key: str) -> float:
    """A stable phase for an agent without a slot (from its client id): as good as random."""
    digest = hashlib.sha256(key.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """How an uplink with a cheap reachability probe (MQTT) comes back after an outage.

    While the upstream is down the loop probes it (a bare TCP connect, closed at once) at an
    interval that starts at `initial` and doubles to `cap`, each drawn from [bound/2, bound].
    Once a probe succeeds, the real connect (MQTT CONNECT) waits for the agent's own instant
    in a wall-clock cycle of `jitter` seconds: `phase` x jitter after each multiple of jitter
    since the epoch. So a fleet that lost the same broker connects spread over `jitter` seconds,
    each agent at its phase: with distinct consecutive slots (slot_phase) at most
    N / jitter + 1 a second, with hashed phases (key_phase) N / jitter a second on average.
    Without synchronised clocks the phases are merely random. A refused login waits
    `refused` (times 0.5..1) first: it will not fix itself in a second. Sessions that end
    within `stable_after` seconds twice in a row widen the spread (random, doubling per flap,
    up to `refused`): a flapping link backs off.
    """

    initial: float = 0.1
    cap: float = 0.25
    jitter: float = 5.5
    refused: float = 60.0
    stable_after: float = 30.0
    phase: float | None = None  # in [0, 1); None: drawn at random once


class Reconnect:
    """The state of one uplink's ReconnectPolicy: probe cadence, spread and flap count."""

    def __init__(self, policy: ReconnectPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self._rng = rng or random.Random()
        self.phase = policy.phase if policy.phase is not None else self._rng.random()
        self._probes = Backoff(policy.initial, policy.cap, stable_after=0.0, jitter="equal")
        self._connected_at: float | None = None
        self.flaps = 0  # sessions in a row that ended within stable_after

    def connected(self, now: float | None = None) -> None:
        """A session started at `now` (monotonic seconds; default: now)."""
        self._connected_at = time.monotonic() if now is None else now

    def lost(self, now: float | None = None) -> None:
        """The session (or a connect attempt) failed: probing starts over from `initial`."""
        now = time.monotonic() if now is None else now
        if self._connected_at is not None:
            short = now - self._connected_at < self.policy.stable_after
            self.flaps = self.flaps + 1 if short else 0
        self._connected_at = None
        self._probes.attempt = 0

    def probe_delay(self) -> float:
        """The wait before the next probe."""
        return self._probes.next_delay()

    def connect_delay(self, wall: float | None = None) -> float:
        """The wait from `wall` (epoch seconds; default: now) to this agent's next instant in
        the spread cycle, after a successful probe."""
        p = self.policy
        if p.jitter <= 0:
            return 0.0
        if self.flaps >= 2:
            window = min(max(p.refused, p.jitter), p.jitter * 2.0 ** (self.flaps - 1))
            return self._rng.uniform(0.0, window)
        wall = time.time() if wall is None else wall
        return (self.phase * p.jitter - wall) % p.jitter

    def refused_delay(self) -> float:
        """The wait after the upstream refused the login (or the TLS handshake)."""
        return self.policy.refused * self._rng.uniform(0.5, 1.0)
