"""Acknowledge and shelve from the status page (`[web] allow_ack = true` only).

The page takes the operator socket's path inside the agent (the same request validation,
agent.service.operator.parse_request, and the same rules-stage application,
agent.service.ack.AlarmOps.request), so the journal and the uplink record the action and who
did it, exactly as for `dust-agent ack --by NAME`; the OS user recorded is the agent's own, the
note says "from the status page". Guards: the route exists only when enabled; a POST must come
from the page itself (Origin or Referer host = Host header); the alarm must be active; `by` is
required and short; the agent's refusal is shown as it is.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from aiohttp import web

from agent.service.web.source import WebSource

SHELVE_HOURS = (1, 8, 24)
MAX_BY = 64


def same_origin(request: web.Request) -> bool:
    """A browser sends Origin (or at least Referer) with a form POST; it must be this page."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    return bool(source) and urlsplit(source).netloc == request.host


async def handle(src: WebSource, request: web.Request) -> web.StreamResponse:
    if not same_origin(request):
        raise web.HTTPForbidden(text="cross-site request refused")
    form = await request.post()
    action = str(form.get("action", ""))
    alarm_id = str(form.get("alarm_id", ""))
    by = str(form.get("by", "")).strip()[:MAX_BY]
    if action not in ("ack", "shelve", "unshelve") or not by:
        raise web.HTTPBadRequest(text="action and by (your name) are required")
    if alarm_id not in {a["alarm_id"] for a in src.live()["alarms"]}:
        raise web.HTTPNotFound(text=f"alarm {alarm_id!r} is not active")
    body: dict[str, object] = {
        "action": action,
        "alarm_id": alarm_id,
        "by": by,
        "note": "from the status page",
    }
    if action == "shelve":
        try:
            hours = int(str(form.get("hours", "1")))
        except ValueError:
            hours = 0
        if hours not in SHELVE_HOURS:
            raise web.HTTPBadRequest(text=f"hours must be one of {SHELVE_HOURS}")
        body["for"] = hours * 3600.0
    ok, text = await src.operate(body)
    if not ok:
        raise web.HTTPConflict(text=f"refused by the agent: {text}")
    raise web.HTTPSeeOther("/alarms")
