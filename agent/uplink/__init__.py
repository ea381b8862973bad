"""Uplink stage: outbox batches -> the broker or a platform, acknowledged, in order per stream.

Contract: `contract` states what an uplink supplies (an Uplink transport whose send returns
only after the far end's acknowledgement, a Codec from batches to messages, a Policy) and
what the one loop guarantees; `forwarder.Forwarder` is that loop, driving every uplink (MQTT
and each platform alike) from its own outbox consumer (batching, in-flight window, backoff,
acknowledgement, live-vs-backlog, alarms first); `reconnect` is its probe-then-spread
wait for an uplink that can probe (MQTT) and its one-line-per-outage log; `payload` encodes
the versioned JSON messages (docs/payloads.md) and the MQTT codec; `mqtt` is the only module
that imports aiomqtt; `platforms/` holds the provincial and ministry HTTP profiles and their codec.
Uplinks import core types, the store's public API and their own modules; never the source,
the rules or the service.
"""
