"""Store stage: everything kept on disk until every uplink has acknowledged it.

Contract: `outbox.Outbox` is the async API (put records, lease a batch per consumer, ack or
keep it); `sqlite` is the one SQLite worker (schema, queries, byte cap, per-consumer
progress); `guard` keeps polling alive when the disk refuses writes; `journal` is the local
append-only alarm journal with its hash chain. Rows are committed before anyone may send
them and deleted only when every configured consumer acknowledged them. The store imports
core types only; it never imports its consumers (uplinks) or the service.
"""
