"""Streams benchmark: the full analytics worker against its baselines, in one run.

On one seeded workload (default 200,000 events of 20,000 simulated customers on every
channel, published once to the embedded noida broker), each variant reads the same
input topics from the start with its own consumer group:

* raw: a confluent-kafka consumer decoding every event into `TouchpointEvent` (the
  ceiling: no Faust, no state, no sink);
* bare Faust: an agent iterating the topics and doing nothing (`bench.faust_baselines`);
* bare Faust, batch inbox: the same, a fetch at a time through `streams.batches`, the
  delivery the full worker uses;
* naive Faust: the per-event table pattern, a compact version of the same metrics
  updated in a changelog-backed table for every event;
* full analytics: `touchstream worker` (touchpoints, metric engines, changelog state
  and metric rows in chDB, live and final), batch by batch; and the same with live rows
  off (`TOUCHSTREAM_METRICS_LIVE_ROWS=false`: final rows only), to show their cost;
* scale-out: two full workers in one consumer group, started together, sharing the
  partitions (each with its own embedded chDB), their combined rate.

Rates count from each variant's first event to its last (startup and group join
excluded). CPU is split between the worker process and the broker over that interval
(cores: 1.0 = one core busy); peak RSS is the worker process's high-water mark.
Writes JSON, Markdown and a PNG chart. These machines are shared and noisy: compare
the ratios, which are measured in the same run.

Run: `touchstream bench streams [--events N] [--customers N] [--sessions-per-second R]
[--out DIR]`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from rocksdict import AccessType, Options, Rdict

from bench.pipeline import PARTITIONS, START, cpu_seconds, publish, worker_env
from touchstream.broker import EmbeddedBroker
from touchstream.kafka import ensure_topics
from touchstream.process import WorkerProcess, wait_until
from touchstream.producers.simulator import Simulator, SimulatorConfig
from touchstream.schemas.topics import all_topics, input_topic, input_topics
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.streams import faustcompat
from touchstream.streams.metrics.state import SIDE
from touchstream.streams.partitions import STATE_TABLE, RocksState, customer_records

PREFIX = "streams"


@dataclass
class Run:
    name: str
    events: int
    seconds: float
    events_per_s: float
    worker_cores: float
    broker_cores: float
    peak_rss_mb: float | None
    settings: dict[str, Any]
    #: The worker's batches: seconds per step (GET /status), the rest is Faust's iteration.
    step_seconds: dict[str, float] | None = None
    #: The worker's batches (steps) over the run.
    batches: int | None = None
    #: Why the run did not finish, if it did not (its figures then cover what it read).
    stalled: str | None = None
    #: The state table (`customer-state`) the worker wrote: bytes of records written per
    #: event, and at the end, per customer (its record and its retired conversations').
    state: dict[str, float] | None = None


class CpuSampler:
    """Samples processes' CPU seconds over time, to read them off at any instant."""

    def __init__(self, pids: dict[str, int], every: float = 0.2) -> None:
        self.pids = pids
        self.samples: list[tuple[float, dict[str, float]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)

    def _run(self, every: float) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(
                    (time.time(), {name: cpu_seconds(pid) for name, pid in self.pids.items()})
                )
            except FileNotFoundError:
                return
            self._stop.wait(every)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, name: str, when: float) -> float:
        before = [(t, cpu[name]) for t, cpu in self.samples if t <= when]
        after = [(t, cpu[name]) for t, cpu in self.samples if t >= when]
        (t0, c0), (t1, c1) = (before or after)[-1], (after or before)[0]
        return c0 if t1 == t0 else c0 + (c1 - c0) * (when - t0) / (t1 - t0)

    def cores(self, name: str, start: float, end: float) -> float:
        return (self.at(name, end) - self.at(name, start)) / (end - start)


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmHWM for pid {pid}")


def run_raw(broker: EmbeddedBroker, total: int) -> Run:
    assert broker.process is not None
    consumer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "bench-streams-raw",
                         "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(topic, partition, OFFSET_BEGINNING)
                     for topic in input_topics(PREFIX) for partition in range(PARTITIONS)])  # fmt: skip
    seen, first, deadline = 0, 0.0, time.monotonic() + 600
    with CpuSampler({"broker": broker.process.pid, "self": os.getpid()}) as cpu:
        while seen < total and time.monotonic() < deadline:
            for message in consumer.consume(10_000, 1.0):
                if message.error() is None:
                    TouchpointEvent.model_validate_json(message.value() or b"")
                    if not seen:
                        first = time.time()
                    seen += 1
        last = time.time()
    consumer.close()
    if seen < total:
        raise RuntimeError(f"the raw consumer read {seen} of {total} events")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cores = cpu.cores("self", first, last), cpu.cores("broker", first, last)
    return Run("raw consume + decode", total, last - first, total / (last - first), *cores, round(rss, 1), {})


def run_faust(variant: str, broker: EmbeddedBroker, total: int, work: Path, settings: dict[str, Any]) -> Run:
    assert broker.process is not None
    out = work / f"{variant}-{len(list(work.iterdir()))}.json"
    command = [
        sys.executable,
        "-m",
        "bench.faust_baselines",
        variant,
        "--bootstrap",
        broker.bootstrap,
        "--prefix",
        PREFIX,
        "--events",
        str(total),
        "--partitions",
        str(PARTITIONS),
        "--out",
        str(out),
    ]
    command += [f"--setting={name}={json.dumps(value)}" for name, value in settings.items()]  # fmt: skip
    with (work / f"{variant}.log").open("ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        with CpuSampler({"broker": broker.process.pid, "worker": process.pid}) as cpu:
            wait_until(
                lambda: out.exists() or process.poll() is not None, timeout=900, what=variant, every=0.2
            )
            if not out.exists():
                raise RuntimeError(f"{variant} exited early; see {work / f'{variant}.log'}")
            rss = peak_rss_mb(process.pid)
            time.sleep(0.5)  # a sample after the last event
        done = json.loads(out.read_text())
    finally:
        process.terminate()
        process.wait(timeout=60)
    first, last = done["first_event_at"], done["last_event_at"]
    name = {"bare": "bare Faust agent", "batched": "bare Faust, batch inbox (streams.batches)",
            "naive": "naive Faust (per-event table)"}[variant]  # fmt: skip
    if settings:
        name += " + " + ", ".join(f"{key}={value}" for key, value in settings.items())
    return Run(name, total, last - first, total / (last - first), cpu.cores("worker", first, last),
               cpu.cores("broker", first, last), rss, settings)  # fmt: skip


#: How long the scale-out variant may take: on noida, two members joining at once can
#: leave the group rebalancing (commits refused with IllegalGeneration) with no progress.
SCALE_OUT_TIMEOUT_SECONDS = 300


def run_workers(broker: EmbeddedBroker, total: int, work: Path, *, count: int = 1, live: bool = True) -> Run:
    """The full worker, or `count` of them in one consumer group, started together,
    sharing the partitions (scale-out): each writes its own embedded chDB, as on separate
    machines; the rate is every event over the span from the first worker's first batch
    to the last one's last flush, rebalances included. CPU is the workers' sum. A
    scale-out run that stalls is reported as such (`SCALE_OUT_TIMEOUT_SECONDS`)."""
    assert broker.process is not None
    if count > 1:
        name, names, suffix = (
            f"full analytics worker x{count} (scale-out, one group)",
            "scale-out-{}",
            "-scale-out",
        )
    elif live:
        name, names, suffix = "full analytics worker", "worker", ""
    else:
        name, names, suffix = "full analytics worker, live rows off", "worker-final-only", "-final-only"
    workers = []
    for number in range(count):
        data = work / names.format(number)
        env = worker_env(broker.bootstrap, PREFIX, data, fetch_wait_ms=100)
        env["TOUCHSTREAM_APP_ID"] += suffix
        env["TOUCHSTREAM_METRICS_LIVE_ROWS"] = "true" if live else "false"
        if count > 1:
            env["TOUCHSTREAM_WORKER_INSTANCE"] = data.name
        workers.append(WorkerProcess(env, data, work / f"{data.name}.log"))
    starting = [threading.Thread(target=worker.start) for worker in workers]
    for thread in starting:
        thread.start()
    for thread in starting:
        thread.join()
    pids = {"broker": broker.process.pid} | {f"worker-{n}": worker.pid for n, worker in enumerate(workers)}
    timeout = SCALE_OUT_TIMEOUT_SECONDS if count > 1 else 1200
    stalled = None
    try:
        with CpuSampler(pids) as cpu:
            try:
                wait_until(
                    lambda: sum(worker.status()["events_written"] for worker in workers) >= total,
                    timeout=timeout, what="the workers", every=0.2,
                )  # fmt: skip
            except AssertionError:  # `wait_until` timed out
                if count == 1:
                    raise
                written = sum(worker.status()["events_written"] for worker in workers)
                stalled = f"{written:,} of {total:,} events written after {timeout} s"
            rss = max(peak_rss_mb(worker.pid) for worker in workers)
            time.sleep(0.5)
        figures = [worker.status() for worker in workers]
    finally:
        for worker in workers:
            worker.stop()
    state = None
    if count == 1:
        state = {"written_bytes_per_event": round(figures[0]["state_bytes"] / total)}
        state |= state_table(work / names.format(0))
    if stalled is not None:
        total = sum(f["events_written"] for f in figures)
    first = min(f["first_batch_at"] for f in figures if f["first_batch_at"] is not None)
    last = max(f["last_flush_at"] for f in figures if f["last_flush_at"] is not None)
    cores = sum(cpu.cores(f"worker-{n}", first, last) for n in range(count))
    steps: dict[str, float] = {}
    for f in figures:
        for step, seconds in f["step_seconds"].items():
            steps[step] = round(steps.get(step, 0.0) + seconds, 3)
    return Run(name, total, last - first, total / (last - first), cores, cpu.cores("broker", first, last),
               rss, {}, steps, sum(f["batches"] for f in figures), stalled, state)  # fmt: skip


def state_table(data_dir: Path) -> dict[str, float]:
    """A stopped worker's `customer-state` databases: per customer, the bytes of its record
    and of its retired conversations' (keys and values), and its record's alone."""
    databases = {
        int(path.stem.rsplit("-", 1)[1]): Rdict(
            str(path), options=Options(raw_mode=True), access_type=AccessType.read_only()
        )
        for path in data_dir.rglob(f"{STATE_TABLE}-*.db")
    }
    state = RocksState(STATE_TABLE, len(databases), databases.__getitem__, faustcompat.offset_key())
    customers = record_bytes = retired = 0
    try:
        for partition in databases:
            for key, value in customer_records(state, partition):
                if SIDE in key:
                    retired += len(key) + len(value)
                else:
                    customers += 1
                    record_bytes += len(key) + len(value)
    finally:
        for db in databases.values():
            db.close()
    return {
        "customers": customers,
        "bytes_per_customer": round((record_bytes + retired) / max(customers, 1)),
        "record_bytes": round(record_bytes / max(customers, 1)),
    }


#: Faust settings tried on the bare agent, to see what raises its ceiling.
TUNINGS: list[dict[str, Any]] = [
    {"stream_buffer_maxsize": 16384, "broker_max_poll_records": 5000},
]


def report(figures: dict[str, Any], out: Path) -> None:
    runs = figures["runs"]
    by = {run["name"]: run for run in runs}
    full, bare = by["full analytics worker"], by["bare Faust agent"]
    naive, raw = by["naive Faust (per-event table)"], by["raw consume + decode"]
    figures["ratios"] = {
        "full_vs_bare": round(full["events_per_s"] / bare["events_per_s"], 3),
        "full_vs_naive": round(full["events_per_s"] / naive["events_per_s"], 3),
        "full_vs_raw": round(full["events_per_s"] / raw["events_per_s"], 4),
        "bare_vs_raw": round(bare["events_per_s"] / raw["events_per_s"], 4),
    }
    if (final_only := by.get("full analytics worker, live rows off")) is not None:
        figures["ratios"]["live_vs_final_only"] = round(full["events_per_s"] / final_only["events_per_s"], 3)
    scaled = next((run for run in runs if run["name"].startswith("full analytics worker x")), None)
    if scaled is not None and not scaled.get("stalled"):
        figures["ratios"]["scale_out_vs_one"] = round(scaled["events_per_s"] / full["events_per_s"], 3)
    (out / "streams.json").write_text(json.dumps(figures, indent=2) + "\n")
    lines = [
        f"# Streams benchmark, {figures['date']}",
        "",
        f"{figures['events']:,} events of {figures['customers']:,} customers over "
        f"{figures['event_time_minutes']:,} minutes of event time, on {figures['cores']} cores "
        f"(broker {figures['broker']}, {PARTITIONS} partitions). Rates from each variant's first event "
        "to its last (the batch inbox's from its partition assignment: one of its batches may hold "
        "the whole workload); CPU in cores over that interval.",
        "",
        "| variant | events/s | vs bare Faust | worker cores | broker cores | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for run in runs:
        stalled = f" (stalled: {run['stalled']})" if run.get("stalled") else ""
        lines.append(
            f"| {run['name']}{stalled} | {run['events_per_s']:,.0f} "
            f"| {run['events_per_s'] / bare['events_per_s']:.2f} "
            f"| {run['worker_cores']:.2f} | {run['broker_cores']:.2f} | {run['peak_rss_mb'] or '-'} |"
        )
    ratios = figures["ratios"]
    lines += [
        "",
        f"Full analytics = {ratios['full_vs_bare']:.0%} of bare Faust iteration and "
        f"{ratios['full_vs_naive']:.1f}x the naive per-event pattern; bare Faust = "
        f"{ratios['bare_vs_raw']:.1%} of a raw consumer."
        + (
            f" Live rows on = {ratios['live_vs_final_only']:.0%} of the same worker writing final rows only."
            if "live_vs_final_only" in ratios
            else ""
        ),
        "",
    ]
    state = full.get("state")
    if state:
        lines += [
            f"State table at the end of the full worker's run: {state['bytes_per_customer']:,} bytes per "
            f"customer ({state['customers']:,} customers; their records alone {state['record_bytes']:,} "
            f"bytes on average); {state['written_bytes_per_event']:,} bytes of records written per event.",
            "",
        ]
    (out / "streams.md").write_text("\n".join(lines))
    chart(runs, out / "streams.png", figures)


def chart(runs: list[dict[str, Any]], path: Path, figures: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [run["name"].replace(" + ", "\n+ ").replace(", ", ",\n") for run in runs]
    rates = [run["events_per_s"] for run in runs]
    fig, ax = plt.subplots(figsize=(9, 0.9 * len(runs) + 1.5))
    bars = ax.barh(names[::-1], rates[::-1], color="#3b7dd8")
    ax.set_xscale("log")
    ax.set_xlabel("events/s (log scale), first event to last")
    ax.set_title(f"Touchstream streams benchmark: {figures['events']:,} events, {figures['cores']} cores")
    for bar, rate in zip(bars, rates[::-1], strict=True):
        ax.text(bar.get_width() * 1.03, bar.get_y() + bar.get_height() / 2, f"{rate:,.0f}", va="center")
    ax.set_xlim(right=max(rates) * 4)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="touchstream bench streams", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--no-tuning", action="store_true", help="skip the Faust settings trials")
    parser.add_argument(
        "--sessions-per-second",
        type=float,
        default=SimulatorConfig.sessions_per_second,
        help="simulated sessions per second of event time: how long the workload spans (the default, "
        "40, puts 200,000 events in about 19 minutes, twice the grace period)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="touchstream-bench-"))
    config = SimulatorConfig(seed=11, customers=args.customers, sessions_per_second=args.sessions_per_second)
    events = list(Simulator(config, START).events(args.events))
    span_minutes = (events[-1].occurred_at - events[0].occurred_at).total_seconds() / 60
    records = [
        (input_topic(e.channel, PREFIX), e.customer_id.encode(), e.model_dump_json().encode()) for e in events
    ]
    runs: list[Run] = []
    with EmbeddedBroker("noida", work / "broker") as broker:
        ensure_topics(broker.bootstrap, all_topics(PREFIX), partitions=PARTITIONS)
        produced = publish(broker.bootstrap, PREFIX, records)
        print(f"published {len(records):,} events at {produced:,.0f}/s", flush=True)
        steps = [
            lambda: run_raw(broker, len(records)),
            lambda: run_faust("bare", broker, len(records), work, {}),
            *[lambda tuning=tuning: run_faust("bare", broker, len(records), work, tuning)
              for tuning in ([] if args.no_tuning else TUNINGS)],
            lambda: run_faust("batched", broker, len(records), work, {}),
            lambda: run_faust("naive", broker, len(records), work, {}),
            lambda: run_workers(broker, len(records), work),
            lambda: run_workers(broker, len(records), work, live=False),
            lambda: run_workers(broker, len(records), work, count=2),
        ]  # fmt: skip
        for step in steps:
            run = step()
            runs.append(run)
            print(f"{run.name:<60} {run.events_per_s:>10,.0f} events/s  worker {run.worker_cores:.2f} cores, "
                  f"broker {run.broker_cores:.2f}, peak RSS {run.peak_rss_mb} MB", flush=True)  # fmt: skip
            if run.step_seconds:
                print("    batch steps (s):", run.step_seconds, flush=True)
    channels = sorted({event.channel.value for event in events})
    figures = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "broker": "noida",
        "events": len(records),
        "customers": args.customers,
        "event_time_minutes": round(span_minutes, 1),
        "channels": channels,
        "produce_per_s": round(produced),
        "runs": [asdict(run) | {"events_per_s": round(run.events_per_s), "seconds": round(run.seconds, 2),
                                "worker_cores": round(run.worker_cores, 2),
                                "broker_cores": round(run.broker_cores, 2)} for run in runs],
    }  # fmt: skip
    report(figures, args.out)
    print(f"report: {args.out / 'streams.md'}, {args.out / 'streams.json'}, {args.out / 'streams.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
