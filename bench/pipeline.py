"""Pipeline benchmark on the simulator's traffic, for each embedded broker.

For every broker it measures, in the same run:

* produce: confluent-kafka publishing the simulated events (events/s);
* raw consume: a bare confluent-kafka consumer reading them back (the baseline);
* worker: a `touchstream worker` process draining the backlog into chDB, from its
  start until `count() FROM touchpoints FINAL` reaches the total (events/s, and as
  a ratio of the raw consumer's rate);
* idle CPU: broker and worker CPU over a quiet interval once the backlog is drained
  (cores; 1.0 = one core busy);
* worker SIGKILLed mid-stream and restarted: rows missing or duplicated afterwards.

Run: `python -m bench.pipeline [--events N] [--brokers noida,noida:0,tansu] [--json FILE]`.
`NAME:MS` sets the worker's empty-fetch wait (TOUCHSTREAM_EMPTY_FETCH_WAIT_MS); without
it each broker runs as `touchstream up` would run it (100 ms for noida, 0 for tansu).
Machines here are shared and noisy: compare the ratios, not the absolute figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from touchstream.broker import EmbeddedBroker
from touchstream.kafka import ensure_topics
from touchstream.process import WorkerProcess, wait_until
from touchstream.producers.publisher import Delivery, Publisher
from touchstream.producers.simulator import Simulator, SimulatorConfig
from touchstream.schemas.topics import all_topics, input_topic, input_topics
from touchstream.settings import Settings

PARTITIONS = 4
START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
FINAL_COUNT = "SELECT count() FROM touchpoints FINAL"


@dataclass
class BrokerFigures:
    broker: str
    events: int
    produce_per_s: float
    raw_consume_per_s: float
    worker_per_s: float
    worker_vs_raw: float
    idle_broker_cores: float
    idle_worker_cores: float
    kill_restart_missing: int
    kill_restart_duplicates: int


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def publish(bootstrap: str, prefix: str, records: list[tuple[str, bytes, bytes]]) -> float:
    began = time.perf_counter()
    with Publisher(bootstrap, prefix=prefix) as publisher:
        delivery = Delivery()
        for topic, key, value in records:
            publisher.send_raw(topic, key, value, delivery)
        publisher.wait(delivery, len(records), timeout=300)
    return len(records) / (time.perf_counter() - began)


def raw_consume(bootstrap: str, prefix: str, total: int) -> float:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "bench-raw", "enable.auto.commit": False}
    )
    began = time.perf_counter()
    consumer.assign(
        [TopicPartition(topic, partition, OFFSET_BEGINNING) for topic in input_topics(prefix)
         for partition in range(PARTITIONS)]
    )  # fmt: skip
    seen = 0
    deadline = time.monotonic() + 300
    while seen < total and time.monotonic() < deadline:
        seen += sum(1 for message in consumer.consume(10_000, 1.0) if message.error() is None)
    elapsed = time.perf_counter() - began
    consumer.close()
    if seen < total:
        raise RuntimeError(f"raw consumer read {seen} of {total}")
    return total / elapsed


def worker_env(bootstrap: str, prefix: str, data_dir: Path, fetch_wait_ms: int) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "CLICKHOUSE_URL"}
    env.update(
        KAFKA_BOOTSTRAP=bootstrap,
        TOUCHSTREAM_DATA_DIR=str(data_dir),
        TOUCHSTREAM_TOPIC_PREFIX=prefix,
        TOUCHSTREAM_APP_ID=f"bench-{prefix}",
        TOUCHSTREAM_PARTITIONS=str(PARTITIONS),
        TOUCHSTREAM_WORKER_PORT="0",
        TOUCHSTREAM_CLICKHOUSE_HTTP_PORT="0",
        TOUCHSTREAM_SESSION_TIMEOUT_MS="6000",
        TOUCHSTREAM_EMPTY_FETCH_WAIT_MS=str(fetch_wait_ms),
    )
    return env


def run_broker(variant: str, events: int, work: Path) -> BrokerFigures:
    name, _, wait = variant.partition(":")
    as_up = Settings(broker=name, kafka_bootstrap=None).empty_fetch_wait_seconds
    fetch_wait_ms = int(wait) if wait else round(as_up * 1000)
    slug = f"{name}-{fetch_wait_ms}"
    simulated = list(Simulator(SimulatorConfig(seed=5, customers=5000), START).events(events))

    def records(prefix: str) -> list[tuple[str, bytes, bytes]]:
        return [
            (input_topic(event.channel, prefix), event.customer_id.encode(), event.model_dump_json().encode())
            for event in simulated
        ]

    with EmbeddedBroker(name, work / f"broker-{slug}") as broker:  # type: ignore[arg-type]
        # Throughput and idle cost: a backlog drained by one worker.
        prefix = "bench"
        ensure_topics(broker.bootstrap, all_topics(prefix), partitions=PARTITIONS)
        produce_rate = publish(broker.bootstrap, prefix, records(prefix))
        raw_rate = raw_consume(broker.bootstrap, prefix, events)
        data = work / f"{slug}-a"
        worker = WorkerProcess(
            worker_env(broker.bootstrap, prefix, data, fetch_wait_ms), data, work / f"{slug}-a.log"
        )
        worker.start()
        began = time.perf_counter()  # from "ready": the group is joined, the sink is up
        wait_until(lambda: worker.scalar(FINAL_COUNT) >= events, timeout=900, what="backlog", every=0.5)
        worker_rate = events / (time.perf_counter() - began)
        time.sleep(3)
        assert broker.process is not None
        cpu_before = cpu_seconds(broker.process.pid), cpu_seconds(worker.pid)
        quiet = 10.0
        time.sleep(quiet)
        idle_broker = (cpu_seconds(broker.process.pid) - cpu_before[0]) / quiet
        idle_worker = (cpu_seconds(worker.pid) - cpu_before[1]) / quiet
        worker.stop()

        # Crash safety: SIGKILL a worker mid-stream, start a new one, count rows.
        prefix = "crash"
        ensure_topics(broker.bootstrap, all_topics(prefix), partitions=PARTITIONS)
        publish(broker.bootstrap, prefix, records(prefix))
        data = work / f"{slug}-b"
        env = worker_env(broker.bootstrap, prefix, data, fetch_wait_ms)
        first = WorkerProcess(env, data, work / f"{slug}-b.log").start()
        wait_until(lambda: first.scalar("SELECT count() FROM touchpoints") > events // 5, timeout=300,
                   what="progress before the kill")  # fmt: skip
        first.kill()
        second = WorkerProcess(env, data, work / f"{slug}-b.log").start()
        with contextlib.suppress(AssertionError):  # a shortfall is what gets reported
            wait_until(lambda: second.scalar(FINAL_COUNT) >= events, timeout=300, what="rows after restart")
        stored = second.scalar(FINAL_COUNT)
        unique = second.scalar("SELECT uniqExact(event_id) FROM touchpoints")
        second.stop()
    return BrokerFigures(
        broker=f"{name}:{fetch_wait_ms}",
        events=events,
        produce_per_s=round(produce_rate),
        raw_consume_per_s=round(raw_rate),
        worker_per_s=round(worker_rate),
        worker_vs_raw=round(worker_rate / raw_rate, 4),
        idle_broker_cores=round(idle_broker, 2),
        idle_worker_cores=round(idle_worker, 2),
        kill_restart_missing=events - unique,
        kill_restart_duplicates=stored - unique,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--brokers", default="noida,noida:0,tansu")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    figures = []
    with tempfile.TemporaryDirectory(prefix="touchstream-bench-") as work:
        for variant in args.brokers.split(","):
            print(f"benchmarking {variant} with {args.events} events ...", file=sys.stderr, flush=True)
            figures.append(run_broker(variant, args.events, Path(work)))
    report = {"cores": os.cpu_count(), "brokers": [asdict(figure) for figure in figures]}
    header = f"{'':28}" + "".join(f"{figure.broker:>12}" for figure in figures)
    print(f"cores: {os.cpu_count()}, events: {args.events}\n{header}")
    for field in BrokerFigures.__dataclass_fields__:
        if field not in ("broker", "events"):
            print(f"{field:28}" + "".join(f"{getattr(figure, field):>12}" for figure in figures))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
