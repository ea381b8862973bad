"""What `ops` and `reload` need of the running agent, as Protocols: they see the Agent through
these views and never import agent.service.supervisor (which imports them), so the service's
modules form no import cycle."""

from __future__ import annotations

from typing import Any, Protocol

from agent.core.model import AgentConfig
from agent.rules import RuleEngine
from agent.service.runtime_status import DeviceTracker
from agent.source.plan import BusPlan
from agent.source.poller import BusPoller
from agent.store.guard import StoreGuard
from agent.store.outbox import Outbox
from agent.uplink.forwarder import Forwarder
from agent.uplink.platforms.forwarder import PlatformForwarder


class AgentView(Protocol):
    """The running agent as `ops.Ops` reads it (supervisor.Agent satisfies it)."""

    cfg: AgentConfig
    plans: tuple[BusPlan, ...]
    engine: RuleEngine

    @property
    def store(self) -> StoreGuard: ...
    @property
    def outbox(self) -> Outbox: ...
    @property
    def pollers(self) -> list[BusPoller]: ...
    @property
    def forwarder(self) -> Forwarder: ...
    @property
    def platforms(self) -> list[PlatformForwarder]: ...


class OpsView(Protocol):
    """What a reload tells the running agent's `ops.Ops`."""

    tracker: DeviceTracker

    def expect_progress(self) -> None: ...
    def record_reload(self, outcome: dict[str, Any]) -> None: ...
    def status_line(self) -> str: ...
    async def write_status(self, state: str = "running") -> None: ...


class ReloadableAgent(AgentView, Protocol):
    """The running agent as `reload.reload_config` swaps its config."""

    @property
    def ops(self) -> OpsView: ...

    async def stop_pollers(self) -> None: ...
    def start_pollers(self) -> None: ...
    async def restart_forwarder(self) -> None: ...
