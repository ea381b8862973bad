"""Store stage: everything kept on disk until every uplink has acknowledged it.

Contract: `outbox.Outbox` is the async API (put records, lease a batch per consumer, ack or
keep it); `records` its types and errors; `sqlite` the one SQLite worker, with `schema`
(the file), `leases` (each consumer's cursor), `progress` (acks) and `cap` (the byte cap);
`guard` keeps polling alive when the disk refuses writes; `journal` is the local
append-only alarm journal with its hash chain. Rows are committed before anyone may send
them and deleted only when every configured consumer acknowledged them. The store imports
core types only; it never imports its consumers (uplinks) or the service.
"""
