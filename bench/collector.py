"""Collector throughput: requests/s and events/s through the collector into Kafka.

Starts the embedded noida broker and `touchstream collector`, then posts with
`--concurrency` aiohttp clients for `--seconds` per case: canonical events on
`POST /v1/events` in batches of 1 and of 100, the signed generic chat webhook with 1
and 100 messages, and Intercom's documented reply payload. Every answer must be a
2xx (Kafka has the events). Baseline in the same run:
confluent-kafka producing the same events directly (events/s), so the collector's
figure reads as a share of what the broker takes.

Run: `python -m bench.collector [--seconds 10] [--concurrency 16] [--json FILE]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.pipeline import START, publish
from tests.webhooks import fixture, signed_json
from touchstream.broker import EmbeddedBroker, free_port
from touchstream.kafka import ensure_topics
from touchstream.process import wait_until
from touchstream.producers.simulator import Simulator, SimulatorConfig
from touchstream.schemas.topics import all_topics, input_topic

KEY = "bench-key"
SECRET = "bench-webhook-secret"


async def load(
    url: str, requests: list[tuple[bytes, dict[str, str]]], seconds: float, concurrency: int
) -> int:
    done = 0
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        nonlocal done
        async with aiohttp.ClientSession() as session:
            index = offset
            while time.perf_counter() < deadline:
                body, headers = requests[index % len(requests)]
                async with session.post(url, data=body, headers=headers) as response:
                    await response.read()
                    if response.status not in (200, 202):
                        raise RuntimeError(f"collector answered {response.status}: {await response.text()}")
                done += 1
                index += concurrency

    await asyncio.gather(*(client(offset) for offset in range(concurrency)))
    return done


def cases(
    dumped: list[dict[str, Any]], now: int
) -> dict[str, tuple[str, int, list[tuple[bytes, dict[str, str]]]]]:
    """name -> (path, events per request, requests)."""
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

    def events(batch: int) -> list[tuple[bytes, dict[str, str]]]:
        return [(json.dumps(dumped[i : i + batch]).encode(), auth) for i in range(0, len(dumped), batch)]

    def chat(batch: int) -> list[tuple[bytes, dict[str, str]]]:
        messages = [
            {"id": event["event_id"], "conversation_id": event["conversation_id"] or "c",
             "customer_id": event["customer_id"], "sender": "customer", "sent_at": event["occurred_at"]}
            for event in dumped
        ]  # fmt: skip
        return [
            signed_json("chat/generic", {"messages": messages[i : i + batch]}, SECRET, now)
            for i in range(0, len(messages), batch)
        ]

    intercom = fixture("intercom-conversation.user.replied.json")
    parts = []
    for number in range(2000):
        payload = json.loads(json.dumps(intercom))
        payload["data"]["item"]["conversation_parts"]["conversation_parts"][0]["id"] = str(number)
        parts.append(signed_json("chat/intercom", payload, SECRET, now))
    return {
        "batch_1": ("/v1/events", 1, events(1)),
        "batch_100": ("/v1/events", 100, events(100)),
        "webhook_chat_generic_1": ("/v1/webhooks/chat/generic", 1, chat(1)),
        "webhook_chat_generic_100": ("/v1/webhooks/chat/generic", 100, chat(100)),
        "webhook_intercom": ("/v1/webhooks/chat/intercom", 1, parts),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    events = list(Simulator(SimulatorConfig(seed=9, customers=5000), START).events(20_000))
    dumped = [event.model_dump(mode="json") for event in events]
    report: dict[str, Any] = {"cores": os.cpu_count(), "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory(prefix="touchstream-bench-") as work, \
            EmbeddedBroker("noida", Path(work) / "broker") as broker:  # fmt: skip
        ensure_topics(broker.bootstrap, all_topics("bench"), partitions=4)
        direct = [(input_topic(e.channel, "bench"), e.customer_id.encode(), e.model_dump_json().encode())
                  for e in events]  # fmt: skip
        report["direct_produce_events_per_s"] = round(publish(broker.bootstrap, "bench", direct))
        port = free_port()
        env = {**os.environ, "KAFKA_BOOTSTRAP": broker.bootstrap, "TOUCHSTREAM_TOPIC_PREFIX": "bench",
               "TOUCHSTREAM_COLLECTOR_PORT": str(port), "TOUCHSTREAM_COLLECTOR_API_KEYS": KEY,
               "TOUCHSTREAM_DATA_DIR": str(Path(work) / "data"),
               "TOUCHSTREAM_WEBHOOK_SECRETS": json.dumps({"generic": SECRET, "intercom": SECRET}),
               }  # fmt: skip
        collector = subprocess.Popen([sys.executable, "-m", "touchstream.cli", "collector"], env=env,
                                     stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)  # fmt: skip
        try:
            wait_until(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), timeout=30, what="collector")
            for name, (path, batch, requests) in cases(dumped, int(time.time())).items():
                began = time.perf_counter()
                done = asyncio.run(
                    load(f"http://127.0.0.1:{port}{path}", requests, args.seconds, args.concurrency)
                )
                elapsed = time.perf_counter() - began
                report[name] = {
                    "requests_per_s": round(done / elapsed),
                    "events_per_s": round(done * batch / elapsed),
                }
        finally:
            collector.terminate()
            collector.wait(timeout=30)
    for name in [key for key in report if isinstance(report[key], dict)]:
        report[name]["vs_direct_produce"] = round(
            report[name]["events_per_s"] / report["direct_produce_events_per_s"], 4
        )
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    raise SystemExit(main())
