"""The status page's HTTP server (aiohttp), in the agent's event loop. Read-only.

Safety: a strict Content-Security-Policy (scripts only from /static/app.js, no inline code),
every page rendered through `pages.esc`, requests capped at 4 KiB, journal answers capped at
JOURNAL_LIMIT rows, and a token (Bearer header or an HttpOnly cookie set by `?token=`) on
every path when the spec has one (the config loader requires it for a non-loopback bind).
Cost: the live data is a snapshot rebuilt at most once a second (agent.service.web.source),
and a rendered page is reused per (path, language) for as long as that snapshot is current.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections import deque
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web

from agent.core.webspec import WebSpec, is_loopback
from agent.service.web import pages
from agent.service.web.i18n import LANGS, Lang, negotiate, t
from agent.service.web.source import WebSource
from agent.store.journal import read_journal, verify_journal

log = logging.getLogger(__name__)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer would make form POSTs send Origin: null
    "X-Frame-Options": "DENY",
}
CACHE_MAX = 128
JOURNAL_LIMIT = 200
JOURNAL_KEEP = 5000  # newest journal records held for filtering (memory bound)
TOKEN_COOKIE = "dust_token"
LANG_COOKIE = "lang"
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
KINDS = (
    "threshold", "rate", "deviation", "drop", "count", "state", "idle", "stale", "frozen",
    "range", "loop", "comm_loss", "difference",
)  # fmt: skip


class WebServer:
    def __init__(self, src: WebSource, spec: WebSpec) -> None:
        self.src, self.spec = src, spec
        self.cache: dict[tuple[str, str, bool], tuple[object, str]] = {}
        self._journal: tuple[object, list[dict[str, Any]], Any] | None = None
        self.static = {
            name: resources.files("agent.service.web").joinpath(name).read_bytes()
            for name in STATIC
        }
        self.runner: web.AppRunner | None = None
        self.url = ""

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4096, middlewares=[self._guard])
        app.router.add_get("/", self._overview)
        app.router.add_get("/device/{name}", self._device)
        app.router.add_get("/trend/{device}/{key}", self._trend)
        app.router.add_get("/alarms", self._alarms)
        app.router.add_get("/journal", self._journal_page)
        app.router.add_get("/uplinks", self._uplinks)
        app.router.add_get("/api/live", self._api_live)
        app.router.add_get("/static/{name}", self._static)
        if self.spec.allow_ack:  # no write endpoint unless the config asks for one
            app.router.add_post("/alarms/action", self._action)
        return app

    async def start(self) -> str:
        """Listen; returns the page's URL (the real port when the spec says 0)."""
        self.runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.spec.bind, self.spec.port, backlog=16)
        await site.start()
        port = self.spec.port
        for addr in self.runner.addresses:  # the bound (host, port, ...) of each socket
            port = int(addr[1])
            break
        host = self.spec.bind if ":" not in self.spec.bind else f"[{self.spec.bind}]"
        self.url = f"http://{host}:{port}/"
        return self.url

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    # -- middleware: headers, token, language -------------------------------------------

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        token = self.spec.token
        if token is None and not _loopback_host(request.host):
            # DNS rebinding: a web site's name pointed at 127.0.0.1 must not read the page
            return self._secure(web.Response(status=403, text="loopback host names only"))
        if token is not None:
            given = request.query.get("token")
            if given is not None and hmac.compare_digest(given, token):
                resp: web.StreamResponse = web.HTTPSeeOther(_without(request, "token"))
                resp.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
                return self._secure(resp)
            if not self._authorised(request, token):
                lang = self._lang(request)
                return self._secure(web.Response(status=401, text=t(lang, "token_required")))
        if request.query.get("lang") in LANGS:
            resp = web.HTTPSeeOther(_without(request, "lang"))
            resp.set_cookie(LANG_COOKIE, request.query["lang"], samesite="Strict")
            return self._secure(resp)
        try:
            resp = await handler(request)
        except web.HTTPException as exc:
            resp = exc
        return self._secure(resp)

    @staticmethod
    def _authorised(request: web.Request, token: str) -> bool:
        auth = request.headers.get("Authorization", "")
        given = auth[7:] if auth.startswith("Bearer ") else request.cookies.get(TOKEN_COOKIE, "")
        return hmac.compare_digest(given.encode(), token.encode())

    @staticmethod
    def _secure(resp: web.StreamResponse) -> web.StreamResponse:
        resp.headers.update(HEADERS)
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @staticmethod
    def _lang(request: web.Request) -> Lang:
        chosen = request.cookies.get(LANG_COOKIE)
        if chosen == "zh":
            return "zh"
        if chosen == "en":
            return "en"
        return negotiate(request.headers.get("Accept-Language", "")[:200])

    # -- pages ---------------------------------------------------------------------------

    def _ctx(self, request: web.Request) -> pages.Ctx:
        query = {k: v[:100] for k, v in list(request.query.items())[:10]}
        return pages.Ctx(self.src, self._lang(request), request.path, query)

    def _cached(self, request: web.Request, lang: str) -> tuple[tuple[str, str, bool], str | None]:
        key = (request.path_qs, lang, request.headers.get("X-Fragment") == "1")
        hit = self.cache.get(key)
        if hit is not None and hit[0] is self.src.live():  # rendered from the current snapshot
            return key, hit[1]
        return key, None

    def _respond(
        self,
        key: tuple[str, str, bool],
        ctx: pages.Ctx,
        title: str,
        main: str,
        *,
        before: str = "",
        refresh: int = 2,
    ) -> web.Response:
        body = main if key[2] else pages.layout(ctx, title, main, before, refresh)
        if len(self.cache) >= CACHE_MAX:
            self.cache.clear()
        self.cache[key] = (self.src.live(), body)
        return web.Response(text=body, content_type="text/html")

    async def _simple(self, request: web.Request, title_key: str, render: Any) -> web.Response:
        ctx = self._ctx(request)
        key, hit = self._cached(request, ctx.lang)
        if hit is not None:
            return web.Response(text=hit, content_type="text/html")
        refresh = 1 if title_key == "alarms" else 2
        return self._respond(key, ctx, ctx.t(title_key), render(ctx), refresh=refresh)

    async def _overview(self, request: web.Request) -> web.Response:
        return await self._simple(request, "overview", pages.overview)

    async def _alarms(self, request: web.Request) -> web.Response:
        return await self._simple(request, "alarms", pages.alarms)

    async def _uplinks(self, request: web.Request) -> web.Response:
        return await self._simple(request, "uplinks", pages.uplinks)

    async def _device(self, request: web.Request) -> web.Response:
        ctx = self._ctx(request)
        name = request.match_info["name"]
        main = pages.device(ctx, name)
        if main is None:
            raise web.HTTPNotFound(text=ctx.t("not_found"))
        key, _ = self._cached(request, ctx.lang)
        return self._respond(key, ctx, f"{ctx.t('device')} {ctx.device_name(name)}", main)

    async def _trend(self, request: web.Request) -> web.Response:
        ctx = self._ctx(request)
        dev, pkey = request.match_info["device"], request.match_info["key"]
        got = pages.trend(ctx, dev, pkey)
        if got is None:
            raise web.HTTPNotFound(text=ctx.t("not_found"))
        key, hit = self._cached(request, ctx.lang)
        if hit is not None:
            return web.Response(text=hit, content_type="text/html")
        before, main = got
        return self._respond(
            key, ctx, f"{ctx.t('trend')}: {ctx.device_name(dev)} {pkey}", main, before=before
        )

    async def _journal_page(self, request: web.Request) -> web.Response:
        ctx = self._ctx(request)
        records, verify = await self._journal_data()
        try:
            hours = min(max(float(ctx.query.get("hours", "24")), 0.01), 720.0)
        except ValueError:
            hours = 24.0
        since_ms = (time.time() - hours * 3600) * 1000
        dev, kind = ctx.query.get("device", ""), ctx.query.get("kind", "")
        picked = [
            r
            for r in reversed(records)
            if r.get("ts", 0) >= since_ms
            and (not dev or r.get("device") == dev)
            and (not kind or r.get("kind") == kind)
        ][:JOURNAL_LIMIT]
        key, _ = self._cached(request, ctx.lang)
        main = pages.journal(ctx, picked, verify, JOURNAL_LIMIT)
        return self._respond(
            key, ctx, ctx.t("journal"), main, before=pages.journal_form(ctx, KINDS)
        )

    async def _journal_data(self) -> tuple[list[dict[str, Any]], Any]:
        """Every journal record and the chain check, re-read only when a file changed."""
        directory = self.src.journal_dir
        sig = await asyncio.to_thread(_signature, directory)
        if self._journal is None or self._journal[0] != sig:

            def load() -> tuple[list[dict[str, Any]], Any]:
                return list(deque(read_journal(directory), JOURNAL_KEEP)), verify_journal(directory)

            records, verify = await asyncio.to_thread(load)
            self._journal = (sig, records, verify)
        return self._journal[1], self._journal[2]

    async def _action(self, request: web.Request) -> web.StreamResponse:
        from agent.service.web import actions

        self.cache.clear()
        return await actions.handle(self.src, request)

    async def _api_live(self, request: web.Request) -> web.Response:
        body = orjson.dumps(self.src.live(), option=orjson.OPT_SERIALIZE_NUMPY)
        return web.Response(body=body, content_type="application/json")

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.static:
            raise web.HTTPNotFound()
        resp = web.Response(body=self.static[name], content_type=STATIC[name])
        resp.headers["Cache-Control"] = "max-age=3600"
        return resp


def _loopback_host(host: str) -> bool:
    """The Host header names a loopback address (with or without a port)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.endswith("]") else host
    if host.startswith("[") and "]" in host:
        name = host[1 : host.index("]")]
    return is_loopback(name)


def _without(request: web.Request, key: str) -> str:
    """This request's path and query without `key` (where a token or language link leads)."""
    return str(request.rel_url.without_query_params(key))


def _signature(directory: Path) -> tuple[tuple[str, int, int], ...]:
    try:
        return tuple(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(directory.iterdir())
        )
    except OSError:
        return ()
