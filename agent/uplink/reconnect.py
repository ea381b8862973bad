"""The wait before an uplink connects again: probe while the upstream is down, then spread.

agent.uplink.forwarder runs this between connects when its Policy has a `reconnect`
(agent.core.backoff.ReconnectPolicy) and its uplink can probe (contract.Probing, MQTT):

1. after a refused login or TLS handshake, wait `refused` (x 0.5..1) first;
2. probe (a TCP connect, closed at once) every `initial`..`cap` seconds until one succeeds;
3. wait for this agent's instant in the wall-clock spread cycle of `jitter` seconds (its
   phase: from `reconnect_slot`, or a hash of the client id), so a fleet that lost the same
   broker connects spread over the cycle instead of all in the same instant.

A probe costs the broker host an accept (or a RST) and the agent well under a millisecond,
so probing every `cap` seconds keeps the time from "broker back" to "connected" short
whatever the outage length, while the cycle, not the probe cadence, sets how many CONNECTs the
broker sees per second. docs/config.md gives the numbers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from agent.core.backoff import Reconnect
from agent.uplink.contract import Probing, UplinkError

TICK = 5.0  # longest single sleep, so the loop's progress mark (the watchdog's) stays fresh


async def sleep_ticking(delay: float, tick: Callable[[], None]) -> None:
    """Sleep `delay` seconds, calling tick() at least every TICK seconds."""
    end = time.monotonic() + delay
    while (left := end - time.monotonic()) > 0:
        tick()
        await asyncio.sleep(min(left, TICK))
    tick()


async def wait_until_reachable(
    uplink: Probing,
    state: Reconnect,
    *,
    refused: bool,
    failed: Callable[[UplinkError], None],
    tick: Callable[[], None],
) -> None:
    """Return when the next connect should start (steps 1-3 of the module docstring).

    failed(exc) is called for every failed probe (the first one names the outage's cause).
    """
    if refused:
        await sleep_ticking(state.refused_delay(), tick)
    while True:
        await sleep_ticking(state.probe_delay(), tick)
        try:
            await uplink.probe()
        except UplinkError as exc:
            failed(exc)
            continue
        break
    await sleep_ticking(state.connect_delay(), tick)


class OutageLog:
    """One warning when an outage starts, naming its cause, and one line when it ends.

    A link that breaks mid-session only tells us the socket went away ("the connection was
    closed or reset"); failed(lost=True) holds that back and the outage is logged with the
    cause the next probe or connect gets ("connection refused", "not authorised"), followed by
    the loss in brackets. A link lost and regained at the first attempt gets one line.
    """

    def __init__(self, name: str, target: str, logger: logging.Logger) -> None:
        self.name, self.target, self.log = name, target, logger
        self.since: float | None = None  # monotonic start of the current outage
        self._lost: UplinkError | None = None
        self._logged = False

    def failed(self, exc: UplinkError, *, lost: bool = False) -> None:
        """A connect, probe or send failed; lost: a working link broke (deferred, see above)."""
        if self.since is None:
            self.since = time.monotonic()
            if lost:
                self._lost = exc
                return
        if self._logged:
            self.log.debug("uplink %s still down: %s", self.name, exc)
            return
        self._logged = True
        after = f" (after: {self._lost})" if self._lost is not None else ""
        self.log.warning("uplink down: %s%s; data is kept in the outbox and retried", exc, after)

    def up(self, first: bool) -> None:
        """The link is proven again (first: the first connection since start-up)."""
        if self.since is None:
            if first:
                self.log.info("uplink %s (%s) connected", self.name, self.target)
            return
        down = time.monotonic() - self.since
        if self._logged:
            self.log.info(
                "uplink %s (%s) is back after %.1f s; sending the backlog",
                self.name,
                self.target,
                down,
            )
        else:
            self.log.warning("uplink %s: %s; reconnected after %.1f s", self.name, self._lost, down)
        self.since, self._lost, self._logged = None, None, False
