"""Reference consumer: what a platform must do with dust-agent messages (docs/consumer.md).

    python -m agent.uplink.consumer --host broker --port 1883 [--ca-file ca.pem] [--prefix dust]

prints one JSON line per new record and, every --report seconds, the gaps per stream.

`Tracker` is the part to copy. Per (enterprise, gateway, stream) it keeps a watermark
`low` (every seq <= low was received or reported dropped) and the set of seqs received
above it, so memory is bounded by how far out of order records arrive (a backlog draining
beside the live stream), not by the history. It:

- drops duplicates by (gateway, stream, seq) (at-least-once delivery resends a batch
  whose acknowledgement was lost);
- accepts `data_dropped` events (the gateway's storage cap or a disk failure) and
  `outbox_replaced` events (a corrupt database was replaced) as explanations of gaps;
- reports gaps: seqs above the watermark that have neither arrived nor been reported
  dropped. A gap is normal while a backlog drains; one that stays is data loss;
- survives any malformed message (`accept`): not JSON, a wrong shape, a bad seq or drop
  range. The whole message is refused before any state changes, counted per kind in
  `faults` and logged once per kind.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

Key = tuple[str, str, str]  # enterprise, gateway, stream
STREAMS = ("telemetry", "alarm", "event")
MAX_SEQ = 2**63 - 1

log = logging.getLogger("agent.uplink.consumer")


class Malformed(ValueError):
    """A message the consumer refuses; `kind` names the fault for the counters."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


def _seq(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEQ:
        raise Malformed("bad_seq", f"{what} is {str(value)[:40]!r}, not a seq (1..2^63-1)")
    return value


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise Malformed("bad_envelope", f"{key} is missing or not a string")
    return value


@dataclass(slots=True)
class StreamState:
    low: int = 0  # every seq <= low is accounted for
    seen: set[int] = field(default_factory=set)  # received seqs above low
    dropped: list[tuple[int, int]] = field(default_factory=list)  # reported ranges above low
    received: int = 0
    duplicates: int = 0

    def accounted(self, seq: int) -> bool:
        return seq <= self.low or seq in self.seen or any(a <= seq <= b for a, b in self.dropped)

    def advance(self) -> None:
        while True:
            nxt = self.low + 1
            if nxt in self.seen:
                self.seen.discard(nxt)
                self.low = nxt
                continue
            hit = next(((a, b) for a, b in self.dropped if a <= nxt <= b), None)
            if hit is None:
                break
            self.low = hit[1]
            self.seen = {s for s in self.seen if s > self.low}
        self.dropped = [(a, b) for a, b in self.dropped if b > self.low]

    def gaps(self) -> list[tuple[int, int]]:
        """Missing, unexplained seq ranges between the watermark and the highest known seq."""
        covered = sorted([(s, s) for s in self.seen] + self.dropped)
        out: list[tuple[int, int]] = []
        nxt = self.low + 1
        for a, b in covered:
            if a > nxt:
                out.append((nxt, a - 1))
            nxt = max(nxt, b + 1)
        return out


class Tracker:
    """Deduplicates records and tracks gaps across gateways and streams."""

    def __init__(self) -> None:
        self.streams: dict[Key, StreamState] = {}
        self.faults: dict[str, int] = {}  # malformed messages refused, by kind

    def state(self, enterprise: str, gateway: str, stream: str) -> StreamState:
        return self.streams.setdefault((enterprise, gateway, stream), StreamState())

    def accept(self, payload: bytes) -> list[dict[str, Any]]:
        """The new records of one message's payload; [] for a malformed one (counted in
        `faults` by kind, logged once per kind). Never raises for any payload."""
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return self._fault("not_json", "the payload is not JSON")
        try:
            return self.feed(doc)
        except Malformed as exc:
            return self._fault(exc.kind, str(exc))

    def _fault(self, kind: str, detail: str) -> list[dict[str, Any]]:
        self.faults[kind] = self.faults.get(kind, 0) + 1
        if self.faults[kind] == 1:
            log.warning("malformed message refused (%s); further ones are only counted", detail)
        return []

    def feed(self, doc: Any) -> list[dict[str, Any]]:
        """The new records of one telemetry/alarm/event message (duplicates removed);
        Malformed (before any state changes) for a message of the wrong shape."""
        if not isinstance(doc, dict):
            raise Malformed("bad_envelope", f"a JSON {type(doc).__name__}, not an object")
        ent, gw, stream = _text(doc, "enterprise"), _text(doc, "gateway"), _text(doc, "stream")
        if stream not in STREAMS:
            raise Malformed("bad_envelope", f"unknown stream {stream[:40]!r}")
        records = _records(doc)
        for rec in records:
            _seq(rec.get("seq"), "seq")
            if stream == "event":
                _check_event(rec)
        st = self.state(ent, gw, stream)
        out: list[dict[str, Any]] = []
        for rec in records:
            seq = int(rec["seq"])
            if st.accounted(seq) and not _in_dropped(st, seq):
                st.duplicates += 1
                continue
            st.seen.add(seq)
            st.received += 1
            out.append(rec)
            if stream == "event":
                self._explain(ent, gw, rec)
        st.advance()
        return out

    def _explain(self, ent: str, gw: str, rec: dict[str, Any]) -> None:
        data = rec.get("data") or {}
        if rec.get("kind") == "data_dropped" and "seq_first" in data:
            st = self.state(ent, gw, str(data.get("stream", "telemetry")))
            st.dropped.append((int(data["seq_first"]), int(data["seq_last"])))
            st.advance()
        elif rec.get("kind") == "outbox_replaced":
            for stream, nxt in (data.get("next_seq") or {}).items():
                st = self.state(ent, gw, stream)
                if int(nxt) - 1 > st.low:
                    st.dropped.append((st.low + 1, int(nxt) - 1))
                    st.advance()

    def gaps(self) -> dict[Key, list[tuple[int, int]]]:
        return {k: g for k, st in self.streams.items() if (g := st.gaps())}

    def report(self) -> dict[str, Any]:
        return {
            "/".join(k): {
                "received": st.received,
                "duplicates": st.duplicates,
                "complete_up_to": st.low,
                "gaps": st.gaps()[:20],
            }
            for k, st in self.streams.items()
        }


def _in_dropped(st: StreamState, seq: int) -> bool:
    """A seq reported dropped may still arrive (it was sent before the drop): keep it once."""
    return seq > st.low and seq not in st.seen and any(a <= seq <= b for a, b in st.dropped)


def _records(doc: dict[str, Any]) -> list[dict[str, Any]]:
    recs = doc.get("records")
    if isinstance(recs, dict):  # telemetry: columnar
        names = list(recs)
        columns = list(recs.values())
        if not all(isinstance(c, list) for c in columns) or len({len(c) for c in columns}) > 1:
            raise Malformed("bad_records", "columnar records whose columns differ in length")
        return [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
    if not isinstance(recs, list) or not all(isinstance(r, dict) for r in recs):
        raise Malformed("bad_records", "records is neither a list of objects nor columns")
    return recs


def _check_event(rec: dict[str, Any]) -> None:
    """The fields _explain reads, checked before any state changes."""
    data = rec.get("data")
    if data is None:
        return
    if not isinstance(data, dict):
        raise Malformed("bad_event", "an event whose data is not an object")
    if rec.get("kind") == "data_dropped" and "seq_first" in data:
        first = _seq(data.get("seq_first"), "data.seq_first")
        if _seq(data.get("seq_last"), "data.seq_last") < first:
            raise Malformed("bad_event", "data_dropped with seq_last below seq_first")
        if not isinstance(data.get("stream", "telemetry"), str):
            raise Malformed("bad_event", "data_dropped whose stream is not a string")
    if rec.get("kind") == "outbox_replaced":
        nxt = data.get("next_seq") or {}
        if not isinstance(nxt, dict):
            raise Malformed("bad_event", "outbox_replaced whose next_seq is not an object")
        for stream, value in nxt.items():
            _seq(value, f"next_seq.{stream}")


async def _main(args: argparse.Namespace) -> int:
    from agent.uplink.mqtt import subscribe  # the one module that imports aiomqtt

    tracker = Tracker()
    last = time.monotonic()
    async for topic, payload in subscribe(
        args.host, args.port, f"{args.prefix}/#", ca_file=args.ca_file
    ):
        stream = topic.rsplit("/", 1)[-1]
        if stream in STREAMS:
            for rec in tracker.accept(payload):
                sys.stdout.write(orjson.dumps({"topic": topic, **rec}).decode() + "\n")
        if time.monotonic() - last >= args.report:
            last = time.monotonic()
            report = {"report": tracker.report(), "malformed": tracker.faults}
            print(orjson.dumps(report).decode(), file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.uplink.consumer", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--prefix", default="dust")
    p.add_argument("--ca-file", help="CA file for a TLS broker")
    p.add_argument("--report", type=float, default=10.0, help="seconds between gap reports")
    args = p.parse_args(argv)
    try:
        return asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
