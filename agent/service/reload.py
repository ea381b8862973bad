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
from typing import Any, Protocol

from agent.config import ConfigError, load_config
from agent.rules import RuleEngine
from agent.service.ops import Ops, OpsHost
from agent.service.runtime_status import DeviceTracker
from agent.service.systemd import sd_notify
from agent.source.plan import compile_config_plan
from agent.uplink.payload import encode_event

log = logging.getLogger(__name__)

MAX_LISTED = 50  # point codes listed in a config_reloaded event (the counts are always exact)


class ReloadHost(OpsHost, Protocol):
    """What a reload needs of the running agent (agent.service.supervisor.Agent provides it)."""

    ops: Ops

    async def stop_pollers(self) -> None: ...

    def start_pollers(self) -> None: ...

    async def restart_forwarder(self) -> None: ...


async def reload_config(agent: ReloadHost) -> bool:
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
    # alarm state moves to the new engine by point code (RuleEngine.export/import_state)
    engine.import_state(agent.engine.export_state())
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
        "alarm_state_carried": True,
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


async def _rejected(agent: ReloadHost, reason: str) -> None:
    log.error("config reload rejected, still running the previous config: %s", reason)
    data = {"file": str(agent.cfg.path), "error": reason}
    await agent.store.put([encode_event("config_rejected", data)])
    agent.ops.record_reload({"ok": False, "ts": round(time.time() * 1000), **data})
    await agent.ops.write_status()
