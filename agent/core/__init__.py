"""Core types and pure helpers shared by every stage; they import nothing else of the project.

Contract: `model` (AgentConfig, PointSpec, BusSpec, Frame, AlarmEvent, Quality), `rulespec`
(per-point rule settings), `platformspec` (a validated [[platforms]] entry) and `backoff` are
plain data and pure functions: no I/O, no asyncio, no imports of agent stages or drivers.
Everything else may import them; they may import only the standard library, numpy and
(backoff) tenacity's wait strategies.
"""
