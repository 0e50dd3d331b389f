"""The Faust baselines of the streams benchmark, each run as its own worker process.

* `bare`: an agent iterating the ten input topics and doing nothing with the events:
  the ceiling of any Faust agent on this machine.
* `batched`: the same do-nothing consumer taking the topics a fetch at a time through
  `streams.batches.Inbox` (what the worker uses) and acknowledging each batch: the
  ceiling Faust's per-record delivery is replaced by. Its clock starts when its
  partitions are assigned, not at its first batch, which may hold the whole workload.
* `naive`: the per-event table pattern: for every event, decode it, read the
  customer's state from a changelog-backed Faust table, update a compact version of
  the same metrics (decayed engagement score with the SPEC weights, interaction
  count, waiting time and the last response time) and write it back.

The process records when its agent saw the first and the `--events`-th event and
writes them as JSON to `--out`; the benchmark reads that and stops the process.

Run: `python -m bench.faust_baselines bare|batched|naive --bootstrap HOST:PORT --prefix P
--events N --out FILE [--setting name=value ...]` (settings are passed to `faust.App`;
`--setting 'broker="confluent://{bootstrap}"'` picks Faust's confluent-kafka transport).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import faust
from faust import Worker

from touchstream.schemas.topics import input_topics
from touchstream.schemas.touchpoint import Direction, TouchpointEvent
from touchstream.streams import flowcontrol
from touchstream.streams.batches import Inbox
from touchstream.streams.fetchpace import pace_empty_fetches
from touchstream.streams.metrics.config import DEFAULT_WEIGHTS
from touchstream.streams.metrics.responses import is_customer_message

HALF_LIFE_SECONDS = 7 * 86400.0


def naive_update(state: dict[str, Any], event: TouchpointEvent) -> dict[str, Any]:
    """One event folded into the customer's compact state, as a per-event agent would."""
    at = event.occurred_at.timestamp()
    if event.direction is Direction.INBOUND or event.kind.value == "purchase":
        decayed = state.get("score", 0.0) * 0.5 ** ((at - state.get("at", at)) / HALF_LIFE_SECONDS)
        state["score"] = decayed + DEFAULT_WEIGHTS.get(event.kind, 0.0)
        state["at"] = at
        state["interactions"] = state.get("interactions", 0) + 1
    if is_customer_message(event):
        state.setdefault("waiting_since", at)
    elif event.direction is Direction.OUTBOUND and state.get("waiting_since") is not None:
        state["last_response_seconds"] = at - state.pop("waiting_since")
    return state


def setting(text: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    return name, json.loads(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("variant", choices=["bare", "batched", "naive"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--empty-fetch-wait-ms", type=int, default=100)
    parser.add_argument("--setting", type=setting, action="append", default=[])
    args = parser.parse_args(argv)

    if args.empty_fetch_wait_ms:
        pace_empty_fetches(args.empty_fetch_wait_ms / 1000)
    options: dict[str, Any] = {
        "broker": "kafka://{bootstrap}",
        "store": "memory://",
        "datadir": tempfile.mkdtemp(prefix="touchstream-faust-"),  # not the working directory
        "topic_partitions": args.partitions,
        "consumer_auto_offset_reset": "earliest",
        "web_enabled": False,
        "loghandlers": [],
    }
    for name, value in args.setting:  # e.g. broker="confluent://{bootstrap}" for Faust's other transport
        options[name] = value
    options["broker"] = options["broker"].format(bootstrap=args.bootstrap)
    app = faust.App(f"bench-{args.variant}-{time.time_ns()}", **options)
    if args.variant == "batched":
        flowcontrol.install(app)  # as the worker has it, before any stream or table
    raw: dict[str, Any] = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    topics = app.topic(*input_topics(args.prefix), **raw)
    table = app.Table(
        "naive-state", default=None, key_type=bytes, value_type=bytes, partitions=args.partitions
    )
    seen = 0
    first = 0.0

    def count(n: int = 1) -> None:
        nonlocal seen, first
        if not first:
            first = time.time()
        before, seen = seen, seen + n
        if before < args.events <= seen:
            args.out.write_text(
                json.dumps({"first_event_at": first, "last_event_at": time.time(), "events": seen})
            )

    if args.variant == "bare":

        @app.agent(topics, name="bare")
        async def bare(stream: faust.StreamT[bytes]) -> None:
            async for _ in stream:
                count()

    elif args.variant == "batched":
        inbox = Inbox(app, topics)
        inbox.install()

        def assigned(sender: Any, /, *args: Any, **kwargs: Any) -> None:
            # One batch may hold the whole workload: the clock starts before its fetch.
            nonlocal first
            first = first or time.time()

        app.on_partitions_assigned.connect(assigned)

        @app.task
        async def batched() -> None:
            while True:
                messages = await inbox.take(20_000, within=1.0)
                count(len(messages))
                inbox.ack(messages)

    else:

        @app.agent(topics, name="naive")
        async def naive(stream: faust.StreamT[bytes]) -> None:
            async for value in stream:
                event = TouchpointEvent.model_validate_json(value)
                key = event.customer_id.encode()
                stored = table.get(key)
                state = naive_update(json.loads(stored) if stored else {}, event)
                table[key] = json.dumps(state).encode()
                count()

    Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
