"""Versioned schema: numbered migrations, applied at start in order, each once.

`schema_version` lists what is applied. Instances starting together serialise on an advisory
lock, so each migration runs exactly once; running `migrate` again changes nothing.
A new migration is appended to MIGRATIONS (never edit an applied one).
"""

from __future__ import annotations

import logging

import psycopg

log = logging.getLogger("ingest.schema")

MIGRATION_LOCK = 0x64757374  # "dust": pg_advisory_xact_lock key for migrations

V1 = """
CREATE TABLE gateways (
    id serial PRIMARY KEY,
    enterprise text NOT NULL,
    gateway text NOT NULL,
    first_seen timestamptz NOT NULL DEFAULT now(),
    UNIQUE (enterprise, gateway)
);
-- Point metadata, as last sent (device, key and unit repeat in every telemetry message).
CREATE TABLE points (
    gateway_id int NOT NULL REFERENCES gateways,
    point text NOT NULL,
    device text NOT NULL,
    key text NOT NULL,
    unit text NOT NULL,
    PRIMARY KEY (gateway_id, point)
);
CREATE TABLE telemetry (
    gateway_id int NOT NULL,
    seq bigint NOT NULL,
    ts timestamptz NOT NULL,
    point text NOT NULL,
    value double precision,
    quality smallint NOT NULL,
    backfill boolean NOT NULL,
    PRIMARY KEY (gateway_id, seq)
);
CREATE INDEX telemetry_ts ON telemetry USING brin (ts);
CREATE TABLE alarms (
    gateway_id int NOT NULL,
    seq bigint NOT NULL,
    alarm_id text NOT NULL,
    point text NOT NULL,
    device text,
    key text,
    kind text NOT NULL,
    direction text,
    transition text NOT NULL,
    level text,
    prev_level text,
    value double precision,
    threshold double precision,
    unit text,
    ts timestamptz NOT NULL,
    text_zh text,
    text_en text,
    extra jsonb NOT NULL DEFAULT '{}',
    backfill boolean NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, seq)
);
CREATE INDEX alarms_alarm ON alarms (gateway_id, alarm_id, seq);
CREATE INDEX alarms_ts ON alarms (ts);
CREATE TABLE events (
    gateway_id int NOT NULL,
    seq bigint NOT NULL,
    kind text NOT NULL,
    ts timestamptz NOT NULL,
    data jsonb NOT NULL,
    backfill boolean NOT NULL,
    ingested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, seq)
);
CREATE INDEX events_kind ON events (kind, gateway_id);
-- Per gateway and stream: every seq <= low is stored or listed in gaps; high is the highest
-- stored seq; horizon is `high` at the previous gap pass (what is older than one pass).
CREATE TABLE stream_state (
    gateway_id int NOT NULL REFERENCES gateways,
    stream text NOT NULL CHECK (stream IN ('telemetry', 'alarm', 'event')),
    low bigint NOT NULL DEFAULT 0,
    high bigint NOT NULL DEFAULT 0,
    horizon bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, stream)
);
-- Seq ranges missing now; a range is removed or split when late records fill it, and is
-- explained by a data_dropped or outbox_replaced event when one covers it.
CREATE TABLE gaps (
    gateway_id int NOT NULL REFERENCES gateways,
    stream text NOT NULL,
    seq_first bigint NOT NULL,
    seq_last bigint NOT NULL,
    detected_at timestamptz NOT NULL DEFAULT now(),
    explained_kind text,
    explained_seq bigint,
    PRIMARY KEY (gateway_id, stream, seq_first)
);
-- Messages that did not follow the payload format, kept for inspection (acknowledged).
CREATE TABLE rejects (
    id bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    topic text NOT NULL,
    reason text NOT NULL,
    payload bytea NOT NULL
);
-- The current state of every alarm: its latest transition by seq.
CREATE VIEW alarm_state AS
SELECT DISTINCT ON (a.gateway_id, a.alarm_id)
    g.enterprise, g.gateway, a.alarm_id, a.point, a.kind, a.direction, a.transition,
    a.level, a.value, a.threshold, a.unit, a.ts, a.text_zh, a.text_en, a.seq
FROM alarms a JOIN gateways g ON g.id = a.gateway_id
ORDER BY a.gateway_id, a.alarm_id, a.seq DESC;
"""

MIGRATIONS: list[tuple[int, str, str]] = [
    (1, "gateways, points, telemetry, alarms, events, stream_state, gaps, rejects", V1),
]


def migrate(conn: psycopg.Connection[object]) -> list[int]:
    """Apply the missing migrations in order, in one transaction; returns the versions applied."""
    applied: list[int] = []
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version int PRIMARY KEY,"
            " description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        current = int(row[0]) if row else 0  # type: ignore[index]
        for version, description, sql in MIGRATIONS:
            if version <= current:
                continue
            conn.execute(sql.encode())
            conn.execute(
                "INSERT INTO schema_version (version, description) VALUES (%s, %s)",
                (version, description),
            )
            applied.append(version)
    if applied:
        log.info("schema migrated to version %d (applied %s)", applied[-1], applied)
    return applied
