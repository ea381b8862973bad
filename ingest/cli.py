"""`dust-ingest`: run one ingest instance (or only migrate the schema)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from types import FrameType

import psycopg

from ingest.schema import migrate
from ingest.service import Ingest, Settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="dust-ingest",
        description="Consume dust-agent streams (MQTT shared subscription) into PostgreSQL.",
    )
    p.add_argument("--dsn", default=os.environ.get("DUST_INGEST_DSN", ""),
                   help="PostgreSQL conninfo (env DUST_INGEST_DSN)")  # fmt: skip
    p.add_argument("--host", default="127.0.0.1", help="MQTT broker host")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="dust", help="topic prefix of the agents")
    p.add_argument("--group", default="ingest", help="shared subscription group")
    p.add_argument("--client-id", default=f"dust-ingest-{socket.gethostname()}",
                   help="fixed per instance: a restarted instance resumes its session")  # fmt: skip
    p.add_argument("--batch-records", type=int, default=50_000)
    p.add_argument("--receive-maximum", type=int, default=200)
    p.add_argument("--gap-interval", type=float, default=1.0)
    p.add_argument("--stats-interval", type=float, default=10.0)
    p.add_argument("--migrate-only", action="store_true", help="apply the schema and exit")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not args.dsn:
        print("dust-ingest: --dsn (or DUST_INGEST_DSN) is required", file=sys.stderr)
        return 78  # EX_CONFIG
    try:
        return _run(args)
    except psycopg.OperationalError as exc:
        # Nothing unacknowledged is lost: the broker keeps it for this client id's next start.
        logging.getLogger("ingest").error("PostgreSQL: %s", str(exc).strip())
        return 1


def _run(args: argparse.Namespace) -> int:
    if args.migrate_only:
        with psycopg.connect(args.dsn, autocommit=True) as conn:
            migrate(conn)
        return 0
    ingest = Ingest(
        Settings(
            dsn=args.dsn, host=args.host, port=args.port, client_id=args.client_id,
            prefix=args.prefix, group=args.group, batch_records=args.batch_records,
            receive_maximum=args.receive_maximum, gap_interval=args.gap_interval,
            stats_interval=args.stats_interval,
        )
    )  # fmt: skip

    def _stop(_sig: int, _frame: FrameType | None) -> None:
        ingest.stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    ingest.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
