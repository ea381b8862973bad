"""The uplink contract: what the forwarder needs from MQTT today and HTTP platforms later.

- `connect()` opens a fresh connection and announces the gateway online, or raises
  UplinkError. It is called again after any failure; never concurrently.
- `publish(topic, payload)` returns only after the upstream acknowledged the message, or
  raises UplinkError (and the connection is then considered broken).
- `close(clean=True)` announces the gateway offline and disconnects; `close(clean=False)`
  drops the link without a goodbye (the broker then sends the last will). Never raises,
  safe to call when not connected.
"""

from __future__ import annotations

from typing import Protocol


class UplinkError(Exception):
    """The upstream cannot be reached or did not acknowledge; the message says why."""


class Uplink(Protocol):
    @property
    def target(self) -> str:
        """Where it sends to, for logs (e.g. "mqtt://127.0.0.1:1883")."""
        ...

    async def connect(self) -> None: ...

    async def publish(self, topic: str, payload: bytes) -> None: ...

    async def close(self, *, clean: bool) -> None: ...
