"""The local status page (issue 14): `WebHook` is all the supervisor sees of it.

With `[web] enabled = false` (the default) the hook does nothing and aiohttp is never
imported. Enabled, it keeps the trend history (agent.store.history), feeds the page's
`WebSource` (source.py) and runs the aiohttp server (server.py) as one task in the agent's
TaskGroup. Pages: pages.py; plots: svg.py; labels: i18n.py; assets: app.js, app.css.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agent.core.model import AlarmEvent, Frame

if TYPE_CHECKING:
    from agent.service.web.server import WebServer
    from agent.service.web.source import AgentFeed, WebAgent

log = logging.getLogger(__name__)


class WebHook:
    """The supervisor's calls: `observe(frame)`, `note(events)`, `start(tg)`, `await stop()`."""

    def __init__(self, agent: WebAgent) -> None:
        self.feed: AgentFeed | None = None
        self.server: WebServer | None = None
        self._agent = agent
        if agent.cfg.web.enabled:
            from agent.service.web.source import AgentFeed

            self.feed = AgentFeed(agent)

    def observe(self, frame: Frame) -> None:
        if self.feed is not None:
            self.feed.observe(frame)

    def note(self, events: Sequence[AlarmEvent]) -> None:
        """Alarm transitions, for the quantity and threshold each active alarm was raised with."""
        if self.feed is not None:
            self.feed.note(events)

    def start(self, tg: asyncio.TaskGroup) -> None:
        if self.feed is None:
            return
        from agent.service.web.server import WebServer

        self.feed.start(tg)
        self.server = WebServer(self.feed, self._agent.cfg.web)
        tg.create_task(self._serve(self.server), name="web")

    async def _serve(self, server: WebServer) -> None:
        try:
            url = await server.start()
        except OSError as exc:  # the port is taken: the agent keeps running without the page
            log.error(
                "status page: cannot listen on %s:%s: %s", server.spec.bind, server.spec.port, exc
            )
            return
        log.info("status page on %s", url)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
        if self.feed is not None:
            await self.feed.stop()
