"""The ingest loop: take a batch of messages, parse, write in one transaction, then PUBACK.

An instance owns one MQTT session (a member of the shared subscription group) and one
PostgreSQL connection. Expected faults stay inside: a malformed message is counted, logged
once per reason, stored in `rejects` and acknowledged; a deadlock between instances retries
the batch. A lost database connection is not expected: the process exits non-zero, nothing
it received was acknowledged, and the broker redelivers it to the restarted instance.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from ingest.gaps import gap_pass
from ingest.mqtt import Delivery, Receiver
from ingest.schema import migrate
from ingest.store import Reject, Writer, Written
from ingest.wire import Malformed, Message, parse

log = logging.getLogger("ingest")


@dataclass(frozen=True, slots=True)
class Settings:
    dsn: str
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "dust-ingest-1"
    prefix: str = "dust"
    group: str = "ingest"
    batch_records: int = 50_000  # about; a batch is what is queued, up to this
    batch_messages: int = 500
    receive_maximum: int = 200  # messages in flight from the broker to this instance
    gap_interval: float = 1.0
    stats_interval: float = 10.0


@dataclass(slots=True)
class Stats:
    messages: int = 0
    records: int = 0
    stored: int = 0
    batches: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    retries: int = 0

    def line(self) -> str:
        dup = self.records - self.stored
        return (
            f"messages={self.messages} records={self.records} stored={self.stored} "
            f"duplicates={dup} batches={self.batches} rejected={sum(self.rejected.values())} "
            f"retries={self.retries}"
        )


class Ingest:
    """One instance. `run()` until `stop` is set (SIGTERM); the caller handles signals."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.stop = threading.Event()
        self.stats = Stats()
        self.conn: psycopg.Connection[Any] = psycopg.connect(settings.dsn, autocommit=True)
        migrate(self.conn)
        self.writer = Writer(self.conn)
        self.receiver = Receiver(
            settings.host, settings.port, settings.client_id, prefix=settings.prefix,
            group=settings.group, receive_maximum=settings.receive_maximum,
        )  # fmt: skip

    def run(self) -> None:
        self.receiver.start()
        next_gaps = next_stats = time.monotonic()
        try:
            while not self.stop.is_set():
                batch = self.receiver.take(self.s.batch_messages, self.s.batch_records, 0.2)
                if batch:
                    self.handle(batch)
                now = time.monotonic()
                if now >= next_gaps:
                    gap_pass(self.conn)
                    next_gaps = now + self.s.gap_interval
                if now >= next_stats:
                    log.info("%s", self.stats.line())
                    next_stats = now + self.s.stats_interval
        finally:
            self.receiver.stop()
            log.info("stopped: %s", self.stats.line())
            self.conn.close()

    def handle(self, batch: list[Delivery]) -> Written:
        """Write the batch, then acknowledge it (only after the commit)."""
        msgs, rejects = self._parse(batch)
        written = self._write(msgs, rejects)
        self.receiver.ack(batch)
        st = self.stats
        st.messages += len(batch)
        st.batches += 1
        st.records += written.records
        st.stored += written.stored
        return written

    def _parse(self, batch: list[Delivery]) -> tuple[list[tuple[Message, Delivery]], list[Reject]]:
        msgs: list[tuple[Message, Delivery]] = []
        rejects: list[Reject] = []
        for d in batch:
            try:
                msgs.append((parse(d.topic, d.payload), d))
            except Malformed as exc:
                rejects.append(self._reject(d, exc.reason))
        return msgs, rejects

    def _reject(self, d: Delivery, reason: str) -> Reject:
        if not self.stats.rejected[reason]:
            log.warning("malformed message on %s (%s); counting further ones", d.topic, reason)
        self.stats.rejected[reason] += 1
        return Reject(d.topic, reason, d.payload)

    def _write(self, msgs: list[tuple[Message, Delivery]], rejects: list[Reject]) -> Written:
        for attempt in range(5):
            try:
                return self.writer.write([m for m, _ in msgs], rejects)
            except psycopg.errors.DeadlockDetected:
                self.stats.retries += 1
                log.info("deadlock with another instance; retrying the batch (%d)", attempt + 1)
            except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError):
                return self._write_one_by_one(msgs, rejects)
        return self.writer.write([m for m, _ in msgs], rejects)

    def _write_one_by_one(
        self, msgs: list[tuple[Message, Delivery]], rejects: list[Reject]
    ) -> Written:
        """A value PostgreSQL refused is in one of the messages: find it, reject only it."""
        total = Written()
        for m, d in msgs:
            try:
                w = self.writer.write([m], [])
            except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError):
                rejects.append(self._reject(d, "values"))
                continue
            total.records += w.records
            total.stored += w.stored
        if rejects:
            self.writer.write([], rejects)
        return total
