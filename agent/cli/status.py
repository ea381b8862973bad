"""`dust-agent status [--json]`: the running agent's last snapshot ({storage.dir}/status.json).

The snapshot is rewritten every few seconds (agent.service.ops.STATUS_EVERY); one older than
STALE_AFTER seconds, or from a process that is gone, is shown with a warning that the agent is
not running. Exit codes: 0 running, 3 not running or stale (like `systemctl status`), 1 no
snapshot to read.
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from agent.cli.locale import Lang, translator
from agent.service.status_file import STATUS_NAME, read_status

STALE_AFTER = 30.0
EXIT_RUNNING, EXIT_NO_STATUS, EXIT_NOT_RUNNING = 0, 1, 3


def load(state_dir: Path) -> dict[str, Any]:
    """The snapshot; raises OSError / ValueError with the file named."""
    path = state_dir / STATUS_NAME
    try:
        return read_status(path)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"no status snapshot at {path}: the agent has not run with this config's storage.dir"
            " (is it running? `systemctl status dust-agent`)"
        ) from None
    except PermissionError:
        raise PermissionError(
            f"cannot read {path}: run as root or as a member of the dust-agent group"
        ) from None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


def liveness(doc: dict[str, Any], now: float | None = None) -> tuple[bool, str]:
    """(running?, why not) from the snapshot age, its state and whether its pid exists."""
    t = time.time() if now is None else now
    age = t - doc.get("written", 0) / 1000
    agent = doc.get("agent", {})
    if agent.get("state") == "stopped":
        return False, f"the agent stopped {_age(age)} ago"
    pid = agent.get("pid")
    if isinstance(pid, int) and not Path(f"/proc/{pid}").exists():
        return False, f"the agent (pid {pid}) is gone; last snapshot {_age(age)} old"
    if age > STALE_AFTER:
        return False, f"the snapshot is {_age(age)} old: the agent is not updating it"
    return True, ""


def exit_code(doc: dict[str, Any], now: float | None = None) -> int:
    return EXIT_RUNNING if liveness(doc, now)[0] else EXIT_NOT_RUNNING


def to_json(doc: dict[str, Any], now: float | None = None) -> str:
    running, why = liveness(doc, now)
    out = {**doc, "running": running, "not_running_reason": why or None}
    return orjson.dumps(out, option=orjson.OPT_INDENT_2).decode()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = max(0.0, seconds)
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    if s < 172800:
        return f"{s / 3600:.1f} h"
    return f"{s / 86400:.1f} d"


def _when(ms: int | None, now: float) -> str:
    if ms is None:
        return "never"
    ts = ms / 1000
    return f"{datetime.fromtimestamp(ts).strftime('%Y-%m-%d %H:%M:%S')} ({_age(now - ts)} ago)"


Tr = Callable[[str], str]


def to_table(doc: dict[str, Any], now: float | None = None, lang: Lang = "en") -> str:
    t = time.time() if now is None else now
    tr = translator(lang)

    def _(phrase: str) -> str:
        return tr.get(phrase, phrase)

    lines = _agent_lines(doc, t, _)
    lines += _uplink_lines(doc, _)
    lines += _outbox_lines(doc, _)
    lines.append("")
    lines += _bus_lines(doc, t, lang, _)
    alarms = doc.get("alarms", [])
    lines.append("")
    lines.append(f"  {_('active alarms')}: {len(alarms)}")
    lines.extend(_alarm_line(al, t, _) for al in alarms)
    lines.append(f"\n({_('snapshot written')} {_when(doc.get('written'), t)})")
    return "\n".join(lines)


def _agent_lines(doc: dict[str, Any], t: float, _: Tr) -> list[str]:
    """The agent, its watchdog, the last reload and the clock."""
    running, why = liveness(doc, t)
    a = doc.get("agent", {})
    lines = [
        f"dust-agent {a.get('version', '?')}: "
        + (
            f"{_('running')} (pid {a.get('pid')}, {_('up')} {_age(a.get('uptime_s'))})"
            if running
            else ""
        )
        + (f"{_('NOT RUNNING')}: {why}" if not running else ""),
        f"  {_('config'):<8} {a.get('config', '?')} ({a.get('points', '?')} {_('points')})",
    ]
    wd = a.get("watchdog")  # null without a systemd watchdog
    if isinstance(wd, dict):
        lines.append(
            f"  {_('watchdog STALLED')}: {wd['stalled']}"
            if wd.get("stalled")
            else f"  {_('watchdog ok')} ({_('pinged every')} {wd.get('interval_s', '?')} s)"
        )
    reloads = a.get("reloads") or []
    if reloads:
        last = reloads[-1]
        what = _("ok") if last.get("ok") else f"{_('REJECTED')}: {last.get('error')}"
        lines.append(f"  {_('reload'):<8} {_when(last.get('ts'), t)} {what}")
    c = doc.get("clock", {})
    sync = _({True: "synchronised", False: "NOT synchronised", None: "unknown"}[c.get("synced")])
    jump = c.get("last_jump")
    lines.append(
        f"  {_('clock'):<8} {sync} ({c.get('source', '?')}); {_('jumps')} {c.get('jumps', 0)}"
        + (
            f", {_('last')} {jump['step_s']:+.1f} s {_('at')} {_when(jump['now'], t)}"
            if jump
            else ""
        )
    )
    return lines


def _uplink_lines(doc: dict[str, Any], _: Tr) -> list[str]:
    """MQTT (with a delivery stall when there is one) and each platform."""
    u = doc.get("uplink", {})
    uplinks = doc.get("health", {}).get("uplinks") or {}

    def oldest(pu: dict[str, Any]) -> str:  # this uplink's oldest unacknowledged record
        if "oldest_unsent_age_s" not in pu:
            return ""  # a snapshot from an agent before this field
        return f", {_('oldest unsent')} {_age(pu['oldest_unsent_age_s'])}"

    mqtt = uplinks.get("mqtt")
    lines = [
        f"  {_('uplink'):<8} {u.get('target', '?')} "
        + (_("connected") if u.get("connected") else _("DISCONNECTED"))
        + (f"; {_('pending')} {mqtt.get('pending_records', 0)}{oldest(mqtt)}" if mqtt else "")
        + (f" ({_('last error')}: {u['last_error']})" if u.get("last_error") else "")
    ]
    stall = (u.get("delivery") or {}).get("stalled")
    if stall:
        lines.append(f"  {_('delivery STALLED')}: {stall}")
    for name, pu in uplinks.items():
        if name == "mqtt":
            continue  # the line above
        state = _("accepting") if pu.get("connected") else _("NOT ACCEPTING")
        lines.append(
            f"  {_('platform')} {name} ({pu.get('profile', '?')}) {pu.get('target', '?')} {state}; "
            f"{_('pending')} {pu.get('pending_records', 0)}{oldest(pu)}, {pu.get('requests', 0)} "
            f"{_('requests accepted')}"
            + (f" ({_('last error')}: {pu['last_error']})" if pu.get("last_error") else "")
        )
    return lines


def _outbox_lines(doc: dict[str, Any], _: Tr) -> list[str]:
    """The outbox, the delivery counters and the storage faults."""
    o = doc.get("outbox", {})
    pend = o.get("pending_records", {})
    lines = [
        f"  {_('outbox'):<8} {_('pending')} "
        + ", ".join(f"{k} {v}" for k, v in pend.items())
        + f"; {_('oldest unsent')} {_age(o.get('oldest_unsent_age_s'))}"
        + f"; {_('file')} {o.get('db_bytes', 0) / 2**20:.1f} MiB"
        + (f" ({o['used_bytes'] / 2**20:.1f} MiB {_('used')})" if "used_bytes" in o else "")
        + f"; {_('dropped')} {o.get('dropped_records', 0)}"
    ]
    h = doc.get("health")
    if h:  # agent.service.health: delivery counters since start (docs/payloads.md#health)
        lines.append(
            f"  delivery published {h.get('published', 0)}, acknowledged"
            f" {h.get('acknowledged', 0)} messages ({h.get('acknowledged_records', 0)} records);"
            f" pending {h.get('pending_records', 0)}; dropped {h.get('dropped_records', 0)};"
            f" oldest unsent {_age(h.get('oldest_unsent_age_s'))};"
            f" reconnects {h.get('reconnects', 0)}"
        )
        if h.get("storage_error") or h.get("storage_failures"):
            lines.append(
                f"  storage  {h.get('storage_failures', 0)} write failure(s) since start; "
                + (
                    f"FAILING NOW: {h['storage_error']} ({h.get('held_in_memory', 0)} held)"
                    if h.get("storage_error")
                    else "writes work now"
                )
            )
    return lines


def _bus_lines(doc: dict[str, Any], t: float, lang: Lang, _: Tr) -> list[str]:
    """Each bus and its devices."""
    lines = [f"  {_('bus / device'):<24} {_('unit'):>4}  {_('state'):<11} {_('last good read')}"]
    for bus in doc.get("buses", []):
        link = _("connected") if bus.get("connected") else _("DOWN")
        lines.append(
            f"  {bus['name']:<24} {'':>4}  {link:<11} {bus.get('target', '')}"
            f" {_('every')} {bus.get('poll_interval', '?')} s, {bus.get('cycles', 0)} {_('cycles')}"
        )
        for d in bus.get("devices", []):
            state = _(d["state"]) if d["state"] == "ok" or lang == "zh" else d["state"].upper()
            busy = f" ({d['busy_points']} {_('points BUSY')})" if d.get("busy_points") else ""
            lines.append(
                f"    {d['name']:<22} {d['unit']:>4}  {state:<11} {_when(d.get('last_good'), t)}"
                + busy
            )
    return lines


def _qty(v: Any, unit: str) -> str:
    if v is None:
        return "-"
    return f"{v:g} {unit}".rstrip() if isinstance(v, int | float) else f"{v} {unit}".rstrip()


def _alarm_line(al: dict[str, Any], t: float, _: Callable[[str], str]) -> str:
    """One active alarm: what its rule measures, in the rule's unit, against its threshold."""
    head = f"    {_(al.get('level', '?')):<7} {al.get('alarm_id', '?'):<28}"
    since = f" {_('since')} {_when(al.get('since'), t)}"
    if al.get("kind") == "comm_loss":
        return f"{head} {_('comm_loss: no answer for')} {_age(al.get('value'))}" + since
    unit = al.get("unit", "")
    text = f"{head} {al.get('kind', '')} {_qty(al.get('value'), unit)}"
    text += f" ({_('threshold')} {_qty(al.get('threshold'), unit)})"
    if al.get("reading_unit") != unit or al.get("kind") not in ("threshold", "range"):
        text += f"; {_('reading')} {_qty(al.get('reading'), al.get('reading_unit', ''))}"
    return text + since


def state_dir_of(config: Path) -> tuple[Path, str]:
    """The storage dir named by a config file, read leniently: status must work even while
    the config is broken (a rejected reload). Returns (dir, warning or "")."""
    default = Path(os.environ.get("STATE_DIRECTORY", "/var/lib/dust-agent").split(":")[0])
    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        return default, f"cannot read {config} ({exc}); looking in {default}"
    storage = data.get("storage")
    directory = storage.get("dir") if isinstance(storage, dict) else None
    if not isinstance(directory, str):
        return default, ""
    return (config.resolve().parent / directory).resolve(), ""
