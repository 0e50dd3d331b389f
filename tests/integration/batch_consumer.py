"""A Faust app consuming topics through `streams.batches.Inbox`, for test_batches.py.

Writes one JSON line per batch taken ({"records": [[topic, partition, offset], ...],
"acked": bool}); acknowledges the first `--ack` batches and none after them. With
`--unread SECONDS` it waits that long after each batch (the fetcher runs ahead) and adds
what `Inbox.unread` says of every assigned partition then ("unread": [[topic, partition]]).

Run: `python -m tests.integration.batch_consumer --bootstrap H:P --group G --out FILE
--max-records N --ack K [--max-poll-records N] [--unread SECONDS] TOPIC...`
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import faust
from faust import Worker

from touchstream.streams import flowcontrol
from touchstream.streams.batches import Inbox


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("topics", nargs="+")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-records", type=int, required=True)
    parser.add_argument("--ack", type=int, required=True)
    parser.add_argument("--max-poll-records", type=int, default=None)
    parser.add_argument("--unread", type=float, default=None)
    args = parser.parse_args()

    app = faust.App(
        args.group,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=str(args.out.parent / "faust"),  # not the working directory
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=2.0,
        broker_commit_interval=0.2,
        web_enabled=False,
        loghandlers=[],
        broker_max_poll_records=args.max_poll_records,
    )
    flowcontrol.install(app)
    raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    inbox = Inbox(app, app.topic(*args.topics, **raw))  # type: ignore[arg-type]
    inbox.install()

    @app.task
    async def consume() -> None:
        taken = 0
        processed: dict[tuple[str, int], int] = {}
        while True:
            messages = await inbox.take(args.max_records, within=0.3)
            if not messages:
                continue
            ack = taken < args.ack
            records = [[m.topic, m.partition, m.offset] for m in messages]
            line: dict[str, object] = {"records": records, "acked": ack}
            if args.unread is not None:
                for m in messages:
                    processed[m.topic, m.partition] = m.offset
                await asyncio.sleep(args.unread)
                assigned = [(tp.topic, tp.partition) for tp in app.consumer.assignment()]
                line["unread"] = sorted(await inbox.unread(assigned, processed))
            with args.out.open("a") as out:
                out.write(json.dumps(line) + "\n")
            if ack:
                inbox.ack(messages)
            taken += 1

    Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
