"""A platform uplink for the one forwarding loop: its codec, its policy and the factory.

The platforms want order: one request at a time (max_inflight 1), strictly oldest first per
stream (`ordered`: no live-before-backlog split), alarms first. A batch becomes one or more
requests (agent.uplink.platforms.records); it is acked when all were accepted. On any
failure the batch is kept and sent again whole after a backoff: a platform may see a
request twice (at-least-once, as for MQTT). Records keep their original timestamps.
"""

from __future__ import annotations

from agent.core.platformspec import PlatformSpec
from agent.store.outbox import Batch, OutboxConsumer
from agent.uplink.contract import Message, Policy
from agent.uplink.forwarder import Forwarder
from agent.uplink.platforms.records import Translator


class PlatformCodec:
    """Batches to platform requests; sampling windows are committed only after the ack."""

    def __init__(self, spec: PlatformSpec) -> None:
        self.translator = Translator(spec)
        self._uncommitted: dict[tuple[str, int], dict[str, int]] = {}

    def encode(self, batch: Batch) -> list[Message]:
        requests, state = self.translator.requests(batch)
        self._uncommitted[_key(batch)] = state
        return [Message(r.endpoint, r.body, r.items) for r in requests]

    def acked(self, batch: Batch) -> None:
        state = self._uncommitted.pop(_key(batch), None)
        if state is not None:
            self.translator.commit(state)
        self._uncommitted.clear()  # kept batches are encoded again when they come back


def _key(batch: Batch) -> tuple[str, int]:
    return batch.stream, batch.rows[0].id


def platform_policy(spec: PlatformSpec, stable_after: float = 30.0) -> Policy:
    return Policy(
        max_records=spec.max_items,
        max_inflight=1,
        ordered=True,
        backoff_base=spec.backoff_base,
        backoff_cap=spec.backoff_cap,
        stable_after=stable_after,
        connect_confirms=False,  # connect() makes a client; an accepted request proves the link
    )


def make_platform_forwarder(consumer: OutboxConsumer, spec: PlatformSpec) -> Forwarder:
    """The forwarder for one [[platforms]] entry, with its registered profile's uplink."""
    from agent.uplink.platforms.registry import make_uplink

    return Forwarder(
        consumer,
        make_uplink(spec),
        PlatformCodec(spec),
        platform_policy(spec),
        labels={"profile": spec.profile},
    )
