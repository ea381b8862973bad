"""A platform uplink for the one forwarding loop: its codec, its policy and the factory.

The platforms want order: one request at a time (max_inflight 1), strictly oldest first per
stream (`ordered`: no live-before-backlog split), alarms first. A batch becomes one or more
requests (agent.uplink.platforms.records); it is acked when all were accepted. On any
failure the batch is kept and sent again whole after a backoff: a platform may see a
request twice (at-least-once, as for MQTT). Records keep their original timestamps.
"""

from __future__ import annotations

import logging
from pathlib import Path

from agent.core.platformspec import PlatformSpec
from agent.store.outbox import Batch, OutboxConsumer
from agent.uplink.contract import Message, Policy
from agent.uplink.forwarder import Forwarder
from agent.uplink.platforms.records import Pending, Translator
from agent.uplink.platforms.status import PointStatus

log = logging.getLogger(__name__)

# While alarms are pending, a failed platform is tried again at least every ALARM_PROBE s
# (whatever the backoff, at most backoff_cap): one request per 5 s does not hammer a dead
# platform, and a new alarm is accepted within seconds of the platform answering again.
ALARM_PROBE = 5.0


class PlatformCodec:
    """Batches to platform requests. The state a batch's requests were built with (sampling
    windows, the points' alarm status) is committed once the platform accepted them all; the
    points' alarm status is then saved to `status_file` (when given) before the outbox ack,
    so a restart neither repeats nor skips a status change."""

    def __init__(self, spec: PlatformSpec, status_file: Path | None = None) -> None:
        self.status_file = status_file
        status = PointStatus()
        if status_file is not None:
            try:
                status = PointStatus.load(status_file)
            except (OSError, ValueError) as exc:
                log.warning(
                    "platform %s: cannot read its alarm status %s (%s); starting from none",
                    spec.name,
                    status_file,
                    exc,
                )
        self.translator = Translator(spec, status)
        self._uncommitted: dict[tuple[str, int], Pending] = {}

    def encode(self, batch: Batch) -> list[Message]:
        requests, pending = self.translator.requests(batch)
        self._uncommitted[_key(batch)] = pending
        return [Message(r.endpoint, r.body, r.items) for r in requests]

    def acked(self, batch: Batch) -> None:
        pending = self._uncommitted.pop(_key(batch), None)
        if pending is not None:
            changed = pending.status is not self.translator.status
            self.translator.commit(pending)
            if changed and self.status_file is not None:
                pending.status.save(self.status_file)
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
        alarm_probe=min(ALARM_PROBE, spec.backoff_cap),
    )


def make_platform_forwarder(
    consumer: OutboxConsumer, spec: PlatformSpec, state_dir: Path | None = None
) -> Forwarder:
    """The forwarder for one [[platforms]] entry, with its registered profile's uplink; the
    points' alarm status is kept in `state_dir` (the storage directory) when given."""
    from agent.uplink.platforms.registry import make_uplink

    status_file = None if state_dir is None else state_dir / f"platform-{spec.name}.status.json"
    return Forwarder(
        consumer,
        make_uplink(spec),
        PlatformCodec(spec, status_file),
        platform_policy(spec),
        labels={"profile": spec.profile},
    )
