"""Latency benchmark: from publishing an event to its row being visible under `FINAL`.

A `touchstream worker` at default settings (1 s flush, 10 min grace, 30 s idle) on the
embedded noida broker reads a steady stream of events with `occurred_at` = now. Among
them, sampled conversations (up to 10 a second, within the rate): a customer message
(its row in `touchpoints`, its conversation in `waiting`) and, 0.5 s later, the agent's
reply (its record in `responses`). A poller asks the worker's chDB every 100 ms which sampled rows are
visible (`FROM t FINAL`); a row's latency is the first poll that sees it minus the
moment its event was handed to the producer, so figures include up to one poll
interval. The rest of the traffic is page views, messages and replies of 20,000 other
customers at the same rate.

Rates: 10 events/s, and half of the full worker's capacity as measured by the committed
streams benchmark (`bench/results/streams.json`, "full analytics worker"), unless
`--rates` says otherwise. The target is p99 <= 2 s (SPEC §5 "Live and final results").

Run: `python -m bench.latency [--rates 10,7000] [--seconds 30] [--json FILE] [--markdown FILE]`.
Machines here are shared and noisy: read the figures with the core count beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from touchstream.broker import EmbeddedBroker
from touchstream.kafka import ensure_topics
from touchstream.process import WorkerProcess, wait_until
from touchstream.producers.publisher import Delivery, Publisher
from touchstream.schemas.topics import all_topics, input_topic
from touchstream.schemas.touchpoint import Channel

PARTITIONS = 4
POLL_SECONDS = 0.1
REPLY_AFTER = 0.5
SAMPLES_PER_SECOND = 10
TABLES = ("touchpoints", "waiting", "responses")
STREAMS_REPORT = Path(__file__).parent / "results" / "streams.json"


@dataclass
class RateFigures:
    rate: int
    seconds: float
    events: int
    samples: dict[str, int] = field(default_factory=dict)
    p50_seconds: dict[str, float] = field(default_factory=dict)
    p99_seconds: dict[str, float] = field(default_factory=dict)
    max_seconds: dict[str, float] = field(default_factory=dict)
    unseen: dict[str, int] = field(default_factory=dict)
    #: The worker's batches and time per step over the run (its /status).
    worker: dict[str, object] = field(default_factory=dict)


def half_capacity() -> int:
    """Half the full worker's events/s in the committed streams benchmark."""
    report = json.loads(STREAMS_REPORT.read_text())
    full = next(run for run in report["runs"] if run["name"].startswith("full analytics worker"))
    return int(full["events_per_s"] // 2)


def event(event_id: str, customer: str, channel: Channel, kind: str, direction: str, actor: str,
          conversation: str | None) -> tuple[str, bytes, bytes]:  # fmt: skip
    now = datetime.now(UTC).isoformat()
    body = {
        "event_id": event_id, "occurred_at": now, "received_at": now, "customer_id": customer,
        "channel": channel.value, "kind": kind, "direction": direction, "actor": actor,
        "conversation_id": conversation, "agent_id": "agent-1" if actor == "agent" else None,
    }  # fmt: skip
    return input_topic(channel, "lat"), customer.encode(), json.dumps(body).encode()


class Probe:
    """Publishes the traffic and records, per table, when each sampled row was published and seen."""

    def __init__(self, publisher: Publisher, worker: WorkerProcess, rate: int) -> None:
        self.publisher, self.worker, self.rate = publisher, worker, rate
        self.published: dict[str, dict[str, float]] = {table: {} for table in TABLES}
        self.seen: dict[str, dict[str, float]] = {table: {} for table in TABLES}
        self.lock = threading.Lock()
        self.delivery = Delivery()
        self.sent = 0
        self.random = random.Random(11)

    def send(self, record: tuple[str, bytes, bytes], **samples: str) -> None:
        at = time.time()
        self.publisher.send_raw(*record, self.delivery)
        self.sent += 1
        with self.lock:
            for table, key in samples.items():
                self.published[table][key] = at

    def background(self, number: int) -> None:
        customer = f"load-{self.random.randrange(20_000)}"
        shape = self.random.random()
        if shape < 0.5:
            self.send(event(f"bg-{number}", customer, Channel.WEB, "page_view", "inbound", "customer", None))
        elif shape < 0.75:
            self.send(
                event(
                    f"bg-{number}", customer, Channel.CHAT, "message", "inbound", "customer", f"{customer}-c"
                )
            )
        else:
            self.send(
                event(f"bg-{number}", customer, Channel.CHAT, "message", "outbound", "agent", f"{customer}-c")
            )

    def run(self, seconds: float) -> None:
        """`rate` events/s for `seconds`: sampled conversations (a message, its reply
        REPLY_AFTER later) at up to SAMPLES_PER_SECOND, background traffic in between."""
        began = time.monotonic()
        replies: list[tuple[float, int]] = []
        per_second = min(SAMPLES_PER_SECOND, self.rate / 2)
        limit = int(seconds * per_second)
        next_sample, number, samples = began, 0, 0
        while (now := time.monotonic()) < began + seconds:
            due = int((now - began) * self.rate) - number
            for _ in range(max(due, 0)):
                if replies and replies[0][0] <= now:
                    self.sample_reply(replies.pop(0)[1])
                elif now >= next_sample and samples < limit:
                    self.sample_message(samples)
                    replies.append((now + REPLY_AFTER, samples))
                    samples += 1
                    next_sample += 1 / per_second
                else:
                    self.background(number)
                number += 1
            time.sleep(0.005)
        for when, sample in replies:  # the last replies, on time
            time.sleep(max(0.0, when - time.monotonic()))
            self.sample_reply(sample)
        self.publisher.wait(self.delivery, self.sent, timeout=120)

    def sample_message(self, n: int) -> None:
        record = event(f"m-{n}", f"sample-{n}", Channel.CHAT, "message", "inbound", "customer", f"conv-{n}")
        self.send(record, touchpoints=f"m-{n}", waiting=f"conv-{n}")

    def sample_reply(self, n: int) -> None:
        record = event(f"r-{n}", f"sample-{n}", Channel.CHAT, "message", "outbound", "agent", f"conv-{n}")
        self.send(record, responses=f"r-{n}")

    def poll(self, stop: threading.Event) -> None:
        # One query for the three tables, by primary key (customer first), so a poll reads
        # a few granules and takes the worker's chDB as briefly as possible.
        shapes = {
            "touchpoints": "SELECT 'touchpoints', event_id FROM touchpoints FINAL WHERE customer_id IN ({c}) "
            "AND event_id IN ({k})",
            "waiting": "SELECT 'waiting', conversation_id FROM waiting FINAL WHERE customer_id IN ({c}) "
            "AND conversation_id IN ({k})",
            "responses": "SELECT 'responses', reply_event_id FROM responses FINAL WHERE customer_id IN ({c}) "
            "AND reply_event_id IN ({k})",
        }
        while not stop.is_set():
            with self.lock:
                pending = {t: [k for k in self.published[t] if k not in self.seen[t]] for t in TABLES}
            parts = []
            for table, keys in pending.items():
                if keys:  # the probe's own ids
                    customers = ",".join(f"'sample-{key.split('-', 1)[1]}'" for key in keys)
                    parts.append(shapes[table].format(c=customers, k=",".join(f"'{key}'" for key in keys)))
            if parts:
                rows = self.worker.sql(" UNION ALL ".join(parts))
                now = time.time()
                with self.lock:
                    for table, key in rows:
                        self.seen[table].setdefault(key, now)
            stop.wait(POLL_SECONDS)

    def figures(self, seconds: float) -> RateFigures:
        figures = RateFigures(rate=self.rate, seconds=seconds, events=self.sent)
        for table in TABLES:
            latencies = sorted(
                self.seen[table][k] - at for k, at in self.published[table].items() if k in self.seen[table]
            )
            figures.samples[table] = len(latencies)
            figures.unseen[table] = len(self.published[table]) - len(latencies)
            if latencies:
                figures.p50_seconds[table] = round(statistics.median(latencies), 3)
                figures.p99_seconds[table] = round(
                    latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3
                )
                figures.max_seconds[table] = round(latencies[-1], 3)
        return figures


def run_rate(rate: int, seconds: float, work: Path) -> RateFigures:
    with EmbeddedBroker("noida", work / f"broker-{rate}") as broker:
        ensure_topics(broker.bootstrap, all_topics("lat"), partitions=PARTITIONS)
        data = work / f"worker-{rate}"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("TOUCHSTREAM_", "CLICKHOUSE_"))
        }
        env.update(
            KAFKA_BOOTSTRAP=broker.bootstrap,
            TOUCHSTREAM_DATA_DIR=str(data),
            TOUCHSTREAM_TOPIC_PREFIX="lat",
            TOUCHSTREAM_APP_ID=f"latency-{rate}",
            TOUCHSTREAM_PARTITIONS=str(PARTITIONS),
            TOUCHSTREAM_WORKER_PORT="0",
            TOUCHSTREAM_CLICKHOUSE_HTTP_PORT="0",
        )
        worker = WorkerProcess(env, data, work / f"worker-{rate}.log").start()
        with Publisher(broker.bootstrap, prefix="lat") as publisher:
            # Warm up: the group has joined and a first batch is through before the clock starts.
            warm = Delivery()
            first = event("warm-up", "w", Channel.WEB, "page_view", "inbound", "customer", None)
            publisher.send_raw(*first, warm)
            publisher.wait(warm, 1, timeout=30)
            wait_until(lambda: worker.scalar("SELECT count() FROM touchpoints FINAL") > 0, timeout=60,
                       what="the worker's first batch")  # fmt: skip
            probe = Probe(publisher, worker, rate)
            stop = threading.Event()
            poller = threading.Thread(target=probe.poll, args=(stop,), daemon=True)
            poller.start()
            probe.run(seconds)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and any(
                len(probe.seen[t]) < len(probe.published[t]) for t in TABLES
            ):
                time.sleep(0.2)
            stop.set()
            poller.join()
        status = worker.status()
        worker.stop()
    figures = probe.figures(seconds)
    figures.worker = {key: status[key] for key in ("batches", "events_in", "step_seconds")}
    return figures


def markdown(report: Mapping[str, object], figures: list[RateFigures]) -> str:
    lines = [
        "# Latency benchmark",
        "",
        f"{report['date']}, {report['cores']} cores, noida broker, default settings (1 s flush).",
        "Publish to visible under `FINAL`, polled every 100 ms; target p99 <= 2 s.",
        "",
        "| rate (events/s) | table | samples | p50 s | p99 s | max s | never seen |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for figure in figures:
        for table in TABLES:
            lines.append(
                f"| {figure.rate:,} | {table} | {figure.samples.get(table, 0)} | "
                f"{figure.p50_seconds.get(table, '-')} | {figure.p99_seconds.get(table, '-')} | "
                f"{figure.max_seconds.get(table, '-')} | {figure.unseen.get(table, 0)} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--rates", help="events/s, comma-separated (default: 10 and half the worker's capacity)"
    )
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--markdown", type=Path, help="also write a Markdown table here")
    args = parser.parse_args(argv)
    rates = [int(r) for r in args.rates.split(",")] if args.rates else [10, half_capacity()]
    figures = []
    with tempfile.TemporaryDirectory(prefix="touchstream-latency-") as work:
        for rate in rates:
            print(f"latency at {rate} events/s for {args.seconds:.0f} s ...", file=sys.stderr, flush=True)
            figures.append(run_rate(rate, args.seconds, Path(work)))
    report = {"date": datetime.now(UTC).date().isoformat(), "cores": os.cpu_count(),
              "rates": [asdict(figure) for figure in figures]}  # fmt: skip
    text = markdown(report, figures)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
