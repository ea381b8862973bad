"""The status page's HTML, rendered on the server: every text from configs, devices or the
journal goes through `esc`, so a name like `<script>` is shown as text, never run."""

from __future__ import annotations

import html
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from agent.core.model import AgentConfig, PointSpec, Quality
from agent.service.web.i18n import Lang, t
from agent.service.web.source import WebSource
from agent.service.web.svg import trend_svg

OVERVIEW_POINTS = 8  # values shown per device on the overview (the device page shows all)
HOURS = (1, 3, 6, 12, 24)
NAV = (("/", "overview"), ("/alarms", "alarms"), ("/journal", "journal"), ("/uplinks", "uplinks"))


def esc(v: object) -> str:
    return html.escape(str(v), quote=True)


@dataclass
class Ctx:
    """One request as the renderers see it."""

    src: WebSource
    lang: Lang
    path: str
    query: Mapping[str, str]

    def t(self, key: str) -> str:
        return t(self.lang, key)

    def device_name(self, device: str) -> str:
        if self.lang == "zh":
            for name, zh in self.src.cfg.web.device_names_zh:
                if name == device:
                    return f"{zh} ({device})"
        return device

    def point_name(self, p: PointSpec) -> str:
        return p.name_zh if self.lang == "zh" else (p.name_en or p.key)


def when(ts: float | None) -> str:
    if ts is None or (isinstance(ts, float) and math.isnan(ts)):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def num(v: float | None) -> str:
    if v is None or math.isnan(v):
        return "—"
    return f"{v:.2f}"


def quality_label(ctx: Ctx, q: int) -> str:
    names = [
        ctx.t(k)
        for bit, k in (
            (Quality.COMM_FAIL, "comm_fail"),
            (Quality.PROTOCOL, "protocol"),
            (Quality.BAD_VALUE, "bad_value"),
            (Quality.CLOCK_UNSYNCED, "unsynced"),
        )
        if q & bit
    ]
    return ", ".join(names) or ctx.t("good")


def layout(ctx: Ctx, title: str, main: str, before: str = "", refresh: int = 2) -> str:
    cfg = ctx.src.cfg
    nav = "".join(
        f'<a href="{href}"{" class=on" if ctx.path == href else ""}>{esc(ctx.t(k))}</a>'
        for href, k in NAV
    )
    other: Lang = "en" if ctx.lang == "zh" else "zh"
    name = "English" if other == "en" else "中文"
    query = urlencode({**ctx.query, "lang": other})
    switch = f'<a id="lang" href="?{esc(query)}">{name}</a>'
    site = esc(cfg.site.name or cfg.site.enterprise_code)
    return (
        f'<!doctype html><html lang="{"zh-CN" if ctx.lang == "zh" else "en"}"><head>'
        '<meta charset="utf-8"><meta name="viewport" content="width=device-width">'
        f"<title>{esc(title)} · {site}</title>"
        '<link rel="stylesheet" href="/static/app.css">'
        '<script src="/static/app.js" defer></script></head><body>'
        f'<header><span class="brand">{esc(ctx.t("title"))} · {site} · {esc(cfg.site.gateway_id)}'
        f"</span><nav>{nav}</nav>{switch}</header>"
        f"<h1>{esc(title)}</h1>{before}"
        f'<main id="main" data-refresh="{refresh}">{main}</main></body></html>'
    )


@dataclass(frozen=True)
class _Index:
    """Per-config lookups built once: points by device, escaped overview fragments."""

    cfg: AgentConfig
    by_device: dict[str, list[PointSpec]]
    spans: dict[tuple[Lang, int], tuple[str, str]]  # (lang, point) -> text around the value


_INDEX: list[_Index] = []


def _index(ctx: Ctx) -> _Index:
    cfg = ctx.src.cfg
    if not _INDEX or _INDEX[0].cfg is not cfg:
        by_device: dict[str, list[PointSpec]] = {}
        for p in cfg.points:
            by_device.setdefault(p.device, []).append(p)
        _INDEX[:] = [_Index(cfg, by_device, {})]
    return _INDEX[0]


def _points_of(ctx: Ctx, device: str) -> list[PointSpec]:
    return _index(ctx).by_device.get(device, [])


def _value_span(ctx: Ctx, p: PointSpec) -> str:
    spans = _index(ctx).spans
    around = spans.get((ctx.lang, p.index))
    if around is None:
        around = spans[(ctx.lang, p.index)] = (
            f'<span class="pv" data-point="{esc(p.device)}.{esc(p.key)}">'
            f'<span class="pn">{esc(ctx.point_name(p))}</span> <b class="v">',
            f"</b> {esc(p.unit)}</span>",
        )
    return f"{around[0]}{num(float(ctx.src.history.value[p.index]))}{around[1]}"


def overview(ctx: Ctx) -> str:
    live = ctx.src.live()
    out = [f'<p class="stamp">{esc(ctx.t("updated"))} {when(live["now"])}</p>']
    for bus in live["buses"]:
        conn = ctx.t("connected") if bus.get("connected") else ctx.t("disconnected")
        cyc = "—" if bus.get("interval") is None else f"{bus['interval']:.2f} s"
        counts = " · ".join(
            f"{esc(ctx.t(k))} {bus[k]}" for k in ("cycles", "overruns", "timeouts") if k in bus
        )
        out.append(
            f'<section class="bus"><h2>{esc(ctx.t("bus"))} {esc(bus["name"])}</h2>'
            f"<p>{esc(bus['type'])} {esc(bus['target'])} · {esc(conn)} · {esc(ctx.t('cycle'))} "
            f"{cyc} · {counts}</p><table><tr>"
            + "".join(
                f"<th>{esc(ctx.t(k))}</th>"
                for k in ("device", "state", "points", "bad_points", "last_good", "value")
            )
            + "</tr>"
        )
        for dev in bus["devices"]:
            pts = _points_of(ctx, dev["name"])
            vals = " ".join(_value_span(ctx, p) for p in pts[:OVERVIEW_POINTS])
            out.append(
                f'<tr data-device="{esc(dev["name"])}"><td><a href="/device/{esc(dev["name"])}">'
                f"{esc(ctx.device_name(dev['name']))}</a></td>"
                f'<td><span class="st st-{esc(dev["state"])}">'
                f"{esc(ctx.t(dev['state']))}</span></td>"
                f"<td>{dev['points']}</td><td>{dev['bad_points']}</td>"
                f"<td>{when(None if dev['last_good'] is None else dev['last_good'] / 1000)}</td>"
                f'<td class="vals">{vals}</td></tr>'
            )
        out.append("</table></section>")
    return "".join(out)


def device(ctx: Ctx, name: str) -> str | None:
    pts = _points_of(ctx, name)
    if not pts:
        return None
    h = ctx.src.history
    rows = []
    for p in pts:
        q = int(h.quality[p.index])
        rows.append(
            f'<tr data-point="{esc(p.device)}.{esc(p.key)}"><td>{esc(ctx.point_name(p))}</td>'
            f"<td>{esc(p.key)}</td><td class=v>{num(float(h.value[p.index]))}</td>"
            f"<td>{esc(p.unit)}</td><td class=q{' bad' if q & ~Quality.CLOCK_UNSYNCED else ''}>"
            f"{esc(quality_label(ctx, q))}</td><td>{when(float(h.ts[p.index]))}</td>"
            f'<td><a href="/trend/{esc(p.device)}/{esc(p.key)}">{esc(ctx.t("trend"))}</a></td></tr>'
        )
    head = "".join(
        f"<th>{esc(ctx.t(k))}</th>"
        for k in ("point", "key", "value", "unit", "quality", "read_at", "trend")
    )
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def trend(ctx: Ctx, dev: str, key: str) -> tuple[str, str] | None:
    """(hour links, plot) for one point, or None when the point is unknown."""
    p = next((p for p in _points_of(ctx, dev) if p.key == key), None)
    if p is None:
        return None
    try:
        hours = min(max(int(ctx.query.get("h", "1")), 1), 24)
    except ValueError:
        hours = 1
    links = " ".join(
        f'<a href="?h={h}"{" class=on" if h == hours else ""}>{h} h</a>' for h in HOURS
    )
    now = time.time()
    s = ctx.src.history.series(p.index, hours * 3600, now)
    label = esc(f"{ctx.device_name(dev)} {ctx.point_name(p)} ({p.key})")
    plot = trend_svg(s, hours * 3600, now, esc(p.unit), label)
    note = "" if len(s) else f"<p>{esc(ctx.t('no_history'))}</p>"
    return f'<p class="hours">{esc(ctx.t("hours"))}: {links} · {esc(ctx.t("min_max"))}</p>', (
        plot + note
    )


def alarms(ctx: Ctx) -> str:
    live = ctx.src.live()
    rows = []
    names = {(p.device, p.key): p for p in ctx.src.cfg.points}
    for a in live["alarms"]:
        p = names.get((a["device"], a["key"]))
        pname = ctx.point_name(p) if p else a["key"]
        shelf = when(a["shelved_until"]) if a["shelved_until"] else ctx.t("no")
        rows.append(
            f'<tr class="lv-{esc(a["level"])}" data-alarm="{esc(a["alarm_id"])}" '
            f'data-kind="{esc(a["kind"])}">'
            f'<td><span class="lvl lvl-{esc(a["level"])}">{esc(ctx.t(a["level"]))}</span></td>'
            f"<td>{esc(ctx.device_name(a['device']))}</td><td>{esc(pname)}</td>"
            f"<td>{esc(a['kind'])} {esc(a['direction'])}</td><td>{when(a['since'])}</td>"
            f"<td>{num(a['value'])} {esc(a['unit'])}</td><td>{num(a['threshold'])}</td>"
            f"<td>{esc(ctx.t('yes' if a['acked'] else 'no'))}</td><td>{esc(shelf)}</td>"
            + (_action_form(ctx, a) if ctx.src.cfg.web.allow_ack else "")
            + "</tr>"
        )
    if not rows:
        return f'<p class="empty">{esc(ctx.t("none_active"))}</p>'
    keys = ["level", "device", "point", "kind", "since", "quantity", "threshold", "acked"]
    keys += ["shelved", "action"] if ctx.src.cfg.web.allow_ack else ["shelved"]
    head = "".join(f"<th>{esc(ctx.t(k))}</th>" for k in keys)
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _action_form(ctx: Ctx, a: Mapping[str, Any]) -> str:
    """Acknowledge / shelve buttons ([web] allow_ack): a plain form, the name is required."""
    hours = "".join(f'<option value="{h}">{h} h</option>' for h in (1, 8, 24))
    return (
        '<td><form class="act" method="post" action="/alarms/action">'
        f'<input type="hidden" name="alarm_id" value="{esc(a["alarm_id"])}">'
        f'<input name="by" required maxlength="64" placeholder="{esc(ctx.t("by"))}">'
        f'<button name="action" value="ack">{esc(ctx.t("ack"))}</button>'
        f'<select name="hours">{hours}</select>'
        f'<button name="action" value="shelve">{esc(ctx.t("shelve"))}</button></form></td>'
    )


def journal_form(ctx: Ctx, kinds: Sequence[str]) -> str:
    q = ctx.query
    devs = sorted({p.device for p in ctx.src.cfg.points})

    def options(values: Sequence[str], chosen: str) -> str:
        opts = [f'<option value="">{esc(ctx.t("all"))}</option>']
        opts += [
            f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(v)}</option>'
            for v in values
        ]
        return "".join(opts)

    return (
        '<form class="filter" method="get" action="/journal">'
        f'<label>{esc(ctx.t("device"))} <select name="device">'
        f"{options(devs, q.get('device', ''))}</select></label> "
        f'<label>{esc(ctx.t("kind"))} <select name="kind">'
        f"{options(kinds, q.get('kind', ''))}</select></label> "
        f'<label>{esc(ctx.t("hours"))} <input name="hours" type="number" min="1" max="720" '
        f'value="{esc(q.get("hours", "24"))}"></label> '
        f'<button type="submit">{esc(ctx.t("filter"))}</button></form>'
    )


def journal(ctx: Ctx, entries: Sequence[Mapping[str, Any]], verify: Any, limit: int) -> str:
    ok = verify.ok
    chain = (
        f'<p class="chain {"ok" if ok else "broken"}">'
        f"{esc(ctx.t('chain_ok' if ok else 'chain_broken'))}: {verify.lines} {esc(ctx.t('lines'))}"
        + "".join(f"<br>{esc(b)}" for b in verify.breaks[:10])
        + "</p>"
    )
    if not entries:
        return chain + f'<p class="empty">{esc(ctx.t("no_entries"))}</p>'
    text_key = "text_zh" if ctx.lang == "zh" else "text_en"
    rows = "".join(
        f'<tr class="lv-{esc(e.get("level") or "clear")}"><td>{when(e.get("ts", 0) / 1000)}</td>'
        f"<td>{esc(ctx.device_name(str(e.get('device', ''))))}</td>"
        f"<td>{esc(e.get('kind', ''))}</td>"
        f"<td>{esc(e.get('transition', ''))}</td><td>{esc(ctx.t(str(e.get('level') or '—')))}</td>"
        f"<td>{esc(e.get(text_key, ''))}</td></tr>"
        for e in entries
    )
    head = "".join(
        f"<th>{esc(ctx.t(k))}</th>"
        for k in ("time", "device", "kind", "transition", "level", "text")
    )
    count = f"<p>{len(entries)} {esc(ctx.t('shown'))} {limit})</p>"
    return chain + count + f"<table><tr>{head}</tr>{rows}</table>"


def uplinks(ctx: Ctx) -> str:
    live = ctx.src.live()
    rows = "".join(
        f'<tr data-uplink="{esc(u["name"])}"><td>{esc(u["name"])}</td><td>{esc(u["target"])}</td>'
        f'<td><span class="st st-{"ok" if u["connected"] else "down"}">'
        f"{esc(ctx.t('connected' if u['connected'] else 'disconnected'))}</span></td>"
        f"<td>{'—' if u['pending'] is None else u['pending']}</td><td>{when(u['oldest'])}</td>"
        f"<td>{esc(u['last_error'] or '—')}</td></tr>"
        for u in live["uplinks"]
    )
    head = "".join(
        f"<th>{esc(ctx.t(k))}</th>"
        for k in ("uplink", "target", "state", "pending", "oldest", "last_error")
    )
    clock = live["clock"]
    synced = ctx.t("clock_synced" if clock.get("synced") else "clock_unsynced")
    cfg = ctx.src.cfg
    facts = (
        (ctx.t("clock"), f"{synced} ({clock.get('source') or '—'})"),
        (ctx.t("clock_jumps"), clock.get("jumps", 0)),
        (ctx.t("version"), live["agent"]["version"]),
        (ctx.t("uptime"), when(live["agent"]["started"])),
        (ctx.t("site"), f"{cfg.site.name} {cfg.site.enterprise_code}"),
        (ctx.t("gateway"), cfg.site.gateway_id),
    )
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in facts)
    return f"<table><tr>{head}</tr>{rows}</table><dl class=facts>{dl}</dl>"
