"""The one module that talks MQTT: a paho client with manual acknowledgement.

Why paho and not aiomqtt: aiomqtt 2.5 acknowledges every QoS 1 message as soon as it is
queued for the application (its paho client is created without `manual_ack` and the client
object is private), so a killed instance would lose what it had received but not yet
committed. Paho 2 has `manual_ack=True` and `Client.ack(mid, qos)`: the PUBACK goes out only
when `Receiver.ack()` is called, after the rows are committed.

Paho's network thread (`loop_start`) receives; the ingest loop takes messages with `take()`
and acknowledges them with `ack()` in the order received (MQTT requires PUBACKs in order).
The session is persistent (MQTT 5, clean start off, a session expiry, a fixed client id
per instance), so the broker keeps unacknowledged messages for a restarted instance and
redelivers them. A delivery
received on an older connection is never acknowledged: after a reconnect the broker resends
it (same seqs, so the write is idempotent) and its packet id may belong to another message.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

log = logging.getLogger("ingest.mqtt")

STREAMS = ("telemetry", "alarm", "event")


@dataclass(slots=True, frozen=True)
class Delivery:
    """One received message: its topic and payload, and what is needed to acknowledge it."""

    topic: str
    payload: bytes
    mid: int
    qos: int
    generation: int  # connection number it arrived on
    received: float  # time.time() at reception


class Receiver:
    """Subscribes `$share/<group>/<prefix>/+/+/<stream>` for the data streams; thread-safe."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        *,
        prefix: str = "dust",
        group: str = "ingest",
        receive_maximum: int = 100,
        keepalive: int = 30,
        session_expiry: int = 7 * 86400,
    ) -> None:
        self.topics = [f"$share/{group}/{prefix}/+/+/{s}" for s in STREAMS]
        self._host, self._port, self._keepalive = host, port, keepalive
        self._queue: queue.SimpleQueue[Delivery] = queue.SimpleQueue()
        self._generation = 0
        self._lock = threading.Lock()
        self.connected = threading.Event()
        self.connects = 0
        self._stopping = False
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        # MQTT 5 so that the client sets how many messages the broker keeps in flight to it
        # (Receive Maximum: the window an instance batches from; v3.1.1 gets the broker's 20),
        # and a session that outlives the connection (Session Expiry), for redelivery.
        self._props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        self._props.ReceiveMaximum = receive_maximum
        self._props.SessionExpiryInterval = session_expiry
        self._client.reconnect_delay_set(min_delay=1, max_delay=5)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    def start(self) -> None:
        """Connect (in the background, retried) and start the network thread."""
        self._client.connect_async(
            self._host, self._port, keepalive=self._keepalive, clean_start=False,
            properties=self._props,
        )  # fmt: skip
        self._client.loop_start()

    def stop(self) -> None:
        self._stopping = True
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        if rc.is_failure:
            log.warning("broker refused the connection: %s", rc)
            return
        with self._lock:
            self._generation += 1
            self.connects += 1
        client.subscribe([(t, 1) for t in self.topics])
        self.connected.set()
        log.info("connected to %s:%d, subscribed %s", self._host, self._port, self.topics)

    def _on_disconnect(self, _c: paho.Client, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        self.connected.clear()
        with self._lock:
            self._generation += 1  # what was received before is not acknowledged any more
        if not self._stopping:
            log.warning("disconnected from the broker (%s); reconnecting", rc)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self._queue.put(
            Delivery(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._generation, time.time())
        )

    def take(self, max_messages: int, max_records_hint: int, timeout: float) -> list[Delivery]:
        """Wait up to `timeout` for one message, then take what is already queued, without
        waiting again, up to `max_messages` (or about `max_records_hint` payload bytes / 100)."""
        try:
            first = self._queue.get(timeout=timeout)
        except queue.Empty:
            return []
        out = [first]
        size = len(first.payload)
        budget = max_records_hint * 100  # ~100 bytes a columnar record
        while len(out) < max_messages and size < budget:
            try:
                d = self._queue.get_nowait()
            except queue.Empty:
                break
            out.append(d)
            size += len(d.payload)
        return out

    def ack(self, deliveries: list[Delivery]) -> int:
        """PUBACK every delivery of the current connection, in order; returns how many."""
        with self._lock:
            current = self._generation
        n = 0
        for d in deliveries:
            if d.qos > 0 and d.generation == current:
                self._client.ack(d.mid, d.qos)
                n += 1
        return n
