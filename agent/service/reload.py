"""SIGHUP: re-read the config inside the running agent, keeping the outbox, journal and alarms.

Contract of `reload_config(agent)`:

- invalid config (ConfigError, or a plan that does not compile): nothing changes; the reason is
  logged and sent as a `config_rejected` event; returns False;
- valid config: the pollers are stopped, the frames already read are processed with the old
  rules, then pollers, poll plan and rule engine are rebuilt for the new config. Alarm state
  (active levels, pending delay timers, raise times) is carried over by point code, so an
  alarm active before the reload is not raised again; points added start at normal, removed
  points drop out. The Outbox and Journal objects are kept; the Forwarder is kept unless the
  uplink or site changed (then it reconnects with the new settings over the same outbox).
  `[storage]` changes need a restart: they are reported and ignored. A `config_reloaded` event
  lists the points added and removed. Returns True.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from agent.config import ConfigError, load_config
from agent.core.model import PointSpec
from agent.rules import RuleEngine
from agent.service.runtime_status import DeviceTracker
from agent.service.systemd import sd_notify
from agent.source.plan import compile_config_plan
from agent.uplink.payload import encode_event

if TYPE_CHECKING:
    from agent.service.host import ReloadableAgent

log = logging.getLogger(__name__)

MAX_LISTED = 50  # point codes listed in a config_reloaded event (the counts are always exact)


@runtime_checkable
class StatefulEngine(Protocol):
    """An engine that can hand its per-point alarm state to another one, keyed by point code."""

    def export_state(self) -> dict[str, Any]: ...
    def import_state(self, state: dict[str, Any]) -> None: ...


async def reload_config(agent: ReloadableAgent) -> bool:
    old = agent.cfg
    started = time.monotonic()
    try:
        new = await asyncio.to_thread(load_config, old.path)
        plans = compile_config_plan(new)
    except (ConfigError, ValueError) as exc:
        await _rejected(agent, str(exc))
        return False
    notes: list[str] = []
    if new.storage != old.storage:
        new = dataclasses.replace(new, storage=old.storage)
        notes.append("[storage] changes take effect after a restart")
    if new.platforms != old.platforms:
        new = dataclasses.replace(new, platforms=old.platforms)
        notes.append("[[platforms]] changes take effect after a restart")
    if new.web != old.web:
        new = dataclasses.replace(new, web=old.web)
        notes.append("[web] changes take effect after a restart")
    sd_notify("RELOADING=1")
    await agent.stop_pollers()
    engine = RuleEngine(new.points)
    carried = carry_alarm_state(agent.engine, engine, old.points, new.points)
    agent.cfg, agent.plans, agent.engine = new, plans, engine
    agent.ops.tracker = DeviceTracker(new)
    agent.start_pollers()
    agent.ops.expect_progress()
    if (new.uplink, new.site) != (old.uplink, old.site):
        await agent.restart_forwarder()
        notes.append("uplink reconnected with the new settings")
    old_codes, new_codes = {p.code for p in old.points}, {p.code for p in new.points}
    added, removed = sorted(new_codes - old_codes), sorted(old_codes - new_codes)
    data: dict[str, Any] = {
        "file": str(new.path),
        "points": len(new.points),
        "added": len(added),
        "removed": len(removed),
        "added_points": added[:MAX_LISTED],
        "removed_points": removed[:MAX_LISTED],
        "alarm_state_carried": carried,
        "notes": notes,
    }
    await agent.store.put([encode_event("config_reloaded", data)])
    agent.ops.record_reload({"ok": True, "ts": round(time.time() * 1000), **data})
    log.info(
        "config reloaded from %s in %.2f s: %d points (+%d, -%d)%s",
        new.path,
        time.monotonic() - started,
        len(new.points),
        len(added),
        len(removed),
        "; " + "; ".join(notes) if notes else "",
    )
    sd_notify(f"READY=1\nSTATUS={agent.ops.status_line()}")
    await agent.ops.write_status()
    return True


async def _rejected(agent: ReloadableAgent, reason: str) -> None:
    log.error("config reload rejected, still running the previous config: %s", reason)
    data = {"file": str(agent.cfg.path), "error": reason}
    await agent.store.put([encode_event("config_rejected", data)])
    agent.ops.record_reload({"ok": False, "ts": round(time.time() * 1000), **data})
    await agent.ops.write_status()


def carry_alarm_state(
    old: RuleEngine,
    new: RuleEngine,
    old_points: Sequence[PointSpec],
    new_points: Sequence[PointSpec],
) -> bool:
    """Copy per-point alarm state from `old` to `new` for every point code in both.

    Uses the engines' export_state/import_state when they offer it; otherwise the state
    arrays of the threshold engine (agent.rules.RuleEngine). Returns False (and logs) when
    neither is possible: the carried-over alarms will then be raised again.
    """
    if isinstance(old, StatefulEngine) and isinstance(new, StatefulEngine):
        new.import_state(old.export_state())
        return True
    try:
        _copy_threshold_state(old, new, old_points, new_points)
    except AttributeError as exc:
        log.warning("reload: alarm state not carried over (%s); active alarms will re-raise", exc)
        return False
    return True


def _copy_threshold_state(
    old: Any, new: Any, old_points: Sequence[PointSpec], new_points: Sequence[PointSpec]
) -> None:
    by_code = {p.code: p.index for p in old_points}
    pairs = [(by_code[p.code], p.index) for p in new_points if p.code in by_code]
    if not pairs:
        return
    o = np.fromiter((a for a, _ in pairs), dtype=np.intp, count=len(pairs))
    n = np.fromiter((b for _, b in pairs), dtype=np.intp, count=len(pairs))
    # The true state; thresholds and delays come from the new config.
    for name in ("_active", "_since", "_level", "_raised"):
        getattr(new, name)[:, n] = getattr(old, name)[:, o]
    new._value[n] = old._value[o]
    # The derived per-detector test: an active detector waits for its clear condition.
    active = new._active
    sign = np.broadcast_to(np.array([1.0, 1.0, -1.0, -1.0])[:, None], active.shape)
    new._gain[...] = np.where(active, -sign, sign)
    new._level_thr[...] = np.where(active, -new._off, new._on)
    new._delay[...] = np.where(active, new._off_delay, new._on_delay)
