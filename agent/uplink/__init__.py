"""Uplink stage: outbox batches -> the broker or a platform, acknowledged, in order per stream.

Contract: `contract.Uplink` is what every transport implements (send returns only after the
far end's acknowledgement, or raises); `forwarder` drives an uplink from its own outbox
cursor (batching, in-flight window, backoff, acknowledgement); `payload` encodes the
versioned JSON messages (docs/payloads.md); `mqtt` is the only module that imports aiomqtt;
`platforms/` holds the provincial and ministry HTTP profiles. Uplinks import core types, the
store's public API and their own modules; never the source, the rules or the service.
"""
