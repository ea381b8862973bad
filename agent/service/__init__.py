"""Service: the only layer that wires the stages together and talks to the operating system.

Contract: `supervisor.Agent` owns every task in one TaskGroup (pollers -> rules -> outbox ->
uplinks) with bounded queues between them; `reload` swaps the config on SIGHUP; `systemd`
(sd_notify, watchdog), `clock` (NTP sync, jumps), `health` and the status file report the
running agent; `comm` turns quarantine and link changes into alarms and events; `ack`
applies operator requests. Stages never import the service.
"""
