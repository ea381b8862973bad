"""The uplink contract: a transport, a codec and a policy, driven by the one forwarding loop.

Every uplink (MQTT, each HTTP platform) is a peer: it reads the outbox through its own
consumer (cursor and delivery progress) and is driven by agent.uplink.forwarder.Forwarder,
which owns batching, the in-flight window, backoff, acknowledgement, live-vs-backlog and
alarms first. An uplink supplies only:

`Uplink` (the transport; agent.uplink.mqtt.MqttUplink, agent.uplink.platforms.http.HttpUplink)

- `connect()` opens a fresh connection (MQTT: CONNECT, then the retained "online" birth), or
  raises UplinkError. The loop calls it before the first send and again after any failure,
  never concurrently with itself or with a send.
- `publish(topic, payload)` (the send) returns only after the far end acknowledged the
  message (MQTT: PUBACK; HTTP: 200 and code 200), or raises UplinkError; the connection is
  then considered broken. Up to `Policy.max_inflight` sends run at once (plus side
  messages). A send is never called after `close()` until the next `connect()`.
- `probe()` (optional, the `Probing` protocol): a cheap reachability check that sends nothing
  (MQTT: a TCP connect to host:port, closed at once); raises UplinkError naming the cause.
  With a `Policy.reconnect`, the loop probes while the upstream is down and connects only
  after a probe succeeded and a random spread delay passed (agent.core.backoff.ReconnectPolicy).
- `connect()` raises UplinkRefused (an UplinkError) when the upstream answered and said no
  (MQTT: a CONNACK refusal such as bad credentials, or a failed TLS handshake); the loop then
  waits long before it tries again.
- `close(clean=True)` says goodbye (MQTT: retained "offline", DISCONNECT); `close(clean=False)`
  drops the link (MQTT: the broker sends the last will). Never raises; safe when not connected.

`Codec` (agent.uplink.payload.MqttCodec, agent.uplink.platforms.forwarder.PlatformCodec)

- `encode(batch)` turns one leased batch into the messages that carry it: no I/O, and a pure
  function of the batch and the codec's committed state. An empty list means the uplink
  has nothing to send for it (e.g. gateway events on a platform): the batch is acked at once.
- `acked(batch)` is called once every message of the batch was acknowledged by the upstream,
  just before the batch is acked in the outbox, so a codec may commit state that depends on
  delivery (a platform's sampling windows and point status): a crash in between sends the
  batch again, encoded against that state, instead of forgetting what was delivered.

The loop's guarantees, given these:

- a batch is acked in the outbox only after every message of it was acknowledged; on any
  failure every unacknowledged batch is kept and sent again whole (at-least-once; duplicates
  are bounded by max_inflight messages per failure);
- alarms go first, then gateway events, then telemetry; with `ordered` False, telemetry
  stored after the current connection came up goes before the backlog;
- with `ordered` True (and max_inflight 1) the records of each stream are acknowledged in
  seq order, even across failures.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agent.core.backoff import ReconnectPolicy
from agent.store.outbox import Batch


class UplinkError(Exception):
    """The upstream cannot be reached or did not acknowledge; the message says why."""


class UplinkRefused(UplinkError):
    """The upstream answered and refused us (bad credentials, TLS): retrying soon cannot help."""


@dataclass(frozen=True, slots=True)
class Message:
    """One unit the transport acknowledges: an MQTT message or one HTTP request."""

    topic: str  # MQTT topic or platform endpoint
    payload: bytes
    items: int  # records (MQTT) or platform items it carries


@dataclass(frozen=True, slots=True)
class Policy:
    """How the loop drives one uplink."""

    max_records: int  # records per batch leased from the outbox
    max_bytes: int = 1 << 40  # estimated message bytes per batch
    max_inflight: int = 1  # messages awaiting their acknowledgement at once
    ordered: bool = False  # True: no live-before-backlog split (strict seq order per stream)
    backlog_rate: float = 0.0  # backlog telemetry records per second (0 = unlimited)
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    stable_after: float = 30.0  # seconds a session must last before the backoff starts over
    # True: a successful connect() proves the link (MQTT CONNACK); False: only an
    # acknowledged message does (HTTP: connect() merely makes a client)
    connect_confirms: bool = True
    # set (and the uplink `Probing`): probe while down, then connect after a random spread
    reconnect: ReconnectPolicy | None = None
    # > 0: while alarms are pending, retry a failed upstream at least this often (seconds),
    # whatever the backoff; 0: the backoff alone
    alarm_probe: float = 0.0


class Uplink(Protocol):
    """The transport; see the module docstring for the call contract."""

    @property
    def target(self) -> str:
        """Where it sends to, for logs (e.g. "mqtt://127.0.0.1:1883")."""
        ...

    async def connect(self) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...

    async def close(self, *, clean: bool) -> None: ...


@runtime_checkable
class Probing(Protocol):
    """An uplink that can check reachability without connecting; see the module docstring."""

    async def probe(self) -> None: ...


class Codec(Protocol):
    """Batches to messages; see the module docstring for the call contract."""

    def encode(self, batch: Batch) -> Sequence[Message]: ...

    def acked(self, batch: Batch) -> None: ...
