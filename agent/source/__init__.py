"""Source stage: config -> read plan -> bus pollers -> decoded Frames.

Contract: `plan` compiles an AgentConfig's buses once into per-bus block reads and a decode
table; `poller.BusPoller` owns one bus (one task, one request in flight), reads every block
through a `drivers` Source, decodes with `decode` (numpy, vectorized) and hands one `Frame`
per cycle to its callback. A failed block yields points with a COMM_FAIL / PROTOCOL quality
and NaN values, never a cached value. `quarantine` decides when a dead unit is retried.
This stage imports core types and `drivers` only; it knows nothing of rules, store or uplinks.
"""
