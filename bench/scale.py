"""Scale benchmark: a seeded history replayed into a fresh `touchstream up`, as a user would.

For each size (default 1,000,000 events; about 10 events per customer over 84 days of
event time), on a fresh data dir with default settings:

* ingest: the history published to the embedded broker as it is generated (at most
  `BACKLOG` events ahead of the worker), the worker's events/s over the run, and worker
  and broker RSS sampled every 2 s (JSON and a chart of rate and RSS against events
  stored);
* catch-up: how long after the last event the maintained tables (SPEC §5b) are computed;
* disk: the broker's and chDB's directories;
* reads: every dashboard API (first read, uncached) and the Customer 360 of a few
  customers, and every query in docs/clickhouse.md through `touchstream sql`;
* live: events posted one by one while three readers read the dashboard's APIs without
  pause; per event, from the post to its row in `touchpoints` (p50, p99);
* restart: Ctrl-C to stopped, and a second `up` to ready;
* verify: `touchstream verify` after the stop, its time and peak RSS (optional).

Run: `touchstream bench scale [--events N[,N...]] [--out DIR] [--no-verify]`. These
machines are shared and noisy: the report gives the core count, and the figures of one
run are comparable with each other, not across runs.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from touchstream.control import read_info, remote_sql
from touchstream.producers.publisher import Publisher
from touchstream.producers.simulator import Simulator, SimulatorConfig
from touchstream.schemas.errors import TouchstreamError
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.sinks.maintained import PENDING

#: Event time the history spans, and events per customer.
HISTORY_DAYS = 84
EVENTS_PER_CUSTOMER = 10
#: Events per simulated session at these rates (measured: 1M events spanned 55 days at 5).
EVENTS_PER_SESSION = 7.6
PUBLISH_CHUNK = 20_000
#: Events published and not yet stored, at most: history is replayed as a source feeds a
#: pipeline, not dumped whole into the broker's memory first (noida holds every unread
#: record in memory and rewrites its snapshot with them; a 3M-event backlog slowed its
#: answers to the worker's commits to 10 s).
BACKLOG = 500_000
LIVE_EVENTS = 60
LIVE_SPACING_SECONDS = 0.5


@dataclass
class Sample:
    seconds: float
    events: int
    worker_rss_mb: float
    broker_rss_mb: float


@dataclass
class Figures:
    events: int
    customers: int
    cores: int | None
    ingest_events_per_s: float = 0.0
    publish_events_per_s: float = 0.0
    catch_up_seconds: float = 0.0
    worker_peak_rss_mb: float = 0.0
    broker_peak_rss_mb: float = 0.0
    broker_disk_mb: float = 0.0
    chdb_disk_mb: float = 0.0
    state_disk_mb: float = 0.0
    api_seconds: dict[str, float] = field(default_factory=dict)
    query_seconds: dict[str, float] = field(default_factory=dict)
    live_p50_seconds: float | None = None
    live_p99_seconds: float | None = None
    stop_seconds: float = 0.0
    restart_ready_seconds: float = 0.0
    verify_seconds: float | None = None
    verify_peak_rss_mb: float | None = None
    verify_ok: bool | None = None
    samples: list[Sample] = field(default_factory=list)


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def disk_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


class Up:
    """`touchstream up` on a data dir, with every port chosen free."""

    def __init__(self, data_dir: Path, log: Path) -> None:
        self.data_dir = data_dir
        self.log = log
        env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP", "CLICKHOUSE_URL")}
        env.update(
            TOUCHSTREAM_DATA_DIR=str(data_dir),
            TOUCHSTREAM_WORKER_PORT="0",
            TOUCHSTREAM_CLICKHOUSE_HTTP_PORT="0",
            TOUCHSTREAM_COLLECTOR_PORT="0",
            TOUCHSTREAM_DASHBOARD_PORT="0",
        )
        self.env = env
        self.began = time.monotonic()
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "touchstream.cli", "up"],
                env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )  # fmt: skip

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_ready(self, timeout: float = 600) -> float:
        deadline = time.monotonic() + timeout
        while "ready in" not in self.output():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"up did not become ready:\n{self.output()[-2000:]}")
            time.sleep(0.1)
        return time.monotonic() - self.began

    def address(self, service: str) -> str:
        found = re.findall(rf"^{service}\s+(\S+)", self.output(), flags=re.MULTILINE)
        if not found:
            raise RuntimeError(f"up printed no {service} address")
        return found[-1].rstrip("/")

    def broker_pid(self) -> int:
        return int((self.data_dir / "kafka-noida" / "broker.pid").read_text())

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(
            f"{self.address('worker').removesuffix('/status')}/status", timeout=30
        ) as r:
            return dict(json.loads(r.read()))

    def sql(self, query: str, fmt: str = "TSV") -> str:
        """`query` through the running worker's `/sql`, as `touchstream sql` sends it."""
        info = read_info(self.data_dir)
        if info is None:
            raise RuntimeError("up is not running")
        try:
            return remote_sql(info, query, fmt, timeout=600).decode()
        except TouchstreamError as error:
            raise RuntimeError(str(error)) from None

    def stop(self) -> float:
        began = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=120)
        return time.monotonic() - began


def history(events: int, customers: int) -> Iterator[TouchpointEvent]:
    """The seeded history, generated as it is published (10M events would not fit in memory),
    ending in the past."""
    start = datetime.now(UTC) - timedelta(days=HISTORY_DAYS + 2)
    rate = events / EVENTS_PER_SESSION / (HISTORY_DAYS * 86400)
    config = SimulatorConfig(seed=11, customers=customers, sessions_per_second=rate, run="scale")
    return Simulator(config, start).events(events)


def get(url: str, timeout: float = 120) -> float:
    """Seconds to answer; -1 for an answer other than 200 (a read past its bound)."""
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as error:
        print(f"{url}: {error.code} {error.read()[:300]!r}", file=sys.stderr, flush=True)
        return -1.0
    return time.perf_counter() - began


def documented_queries() -> list[str]:
    text = (Path(__file__).parents[1] / "docs" / "clickhouse.md").read_text()
    return re.findall(r"```sql\n(.*?)```", text, flags=re.DOTALL)


def run(events: int, work: Path, verify: bool) -> Figures:
    customers = max(1, events // EVENTS_PER_CUSTOMER)
    figures = Figures(events=events, customers=customers, cores=os.cpu_count())
    data = work / f"data-{events}"
    up = Up(data, work / f"up-{events}.log")
    up.wait_ready()
    bootstrap = up.address("kafka")
    dashboard = up.address("dashboard")
    samples: list[Sample] = []
    sampling = threading.Event()
    began = time.monotonic()

    def sample() -> None:
        while not sampling.wait(2.0):
            with contextlib.suppress(Exception):
                written = int(up.status()["events_written"])
                worker, broker = rss_mb(up.process.pid), rss_mb(up.broker_pid())
                samples.append(
                    Sample(round(time.monotonic() - began, 1), written, round(worker), round(broker))
                )

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    print(f"scale {events:,}: publishing {customers:,} customers' history ...", file=sys.stderr, flush=True)
    simulated = history(events, customers)
    last_at = datetime.min.replace(tzinfo=UTC)
    published = 0
    with Publisher(bootstrap) as publisher:
        while chunk := list(itertools.islice(simulated, PUBLISH_CHUNK)):
            if not publisher.publish(chunk).ok:
                raise RuntimeError("the broker refused events")
            published += len(chunk)
            last_at = max(last_at, *(event.occurred_at for event in chunk))
            while published - int(up.status()["events_written"]) > BACKLOG:
                time.sleep(0.5)
    figures.publish_events_per_s = round(events / (time.monotonic() - began))
    while int(up.status()["events_written"]) < events:
        time.sleep(1)
    ingested = time.monotonic()
    figures.ingest_events_per_s = round(events / (ingested - began))
    print(
        f"scale {events:,}: ingested at {figures.ingest_events_per_s:,}/s; catching up ...", file=sys.stderr
    )
    while int(up.sql(PENDING.format(db="touchstream")).strip() or 0):
        time.sleep(2)
    figures.catch_up_seconds = round(time.monotonic() - ingested, 1)
    sampling.set()
    sampler.join()
    figures.samples = samples
    figures.worker_peak_rss_mb = max((s.worker_rss_mb for s in samples), default=0.0)
    figures.broker_peak_rss_mb = max((s.broker_rss_mb for s in samples), default=0.0)
    figures.broker_disk_mb = round(disk_mb(data / "kafka-noida"))
    figures.state_disk_mb = round(disk_mb(data / "faust"))
    figures.chdb_disk_mb = round(disk_mb(data / "clickhouse"))

    time.sleep(35)  # past every cached snapshot: the reads below are first reads
    ids = up.sql("SELECT customer_id FROM customer_profiles FINAL ORDER BY cityHash64(customer_id) LIMIT 5")
    figures.api_seconds = {
        "/api/snapshot": round(get(f"{dashboard}/api/snapshot"), 3),
        "/api/experience": round(get(f"{dashboard}/api/experience"), 3),
    }
    for customer in ids.split():
        figures.api_seconds[f"/api/customers/{customer}"] = round(
            get(f"{dashboard}/api/customers/{customer}"), 3
        )
    for number, query in enumerate(documented_queries(), 1):
        started = time.perf_counter()
        try:
            up.sql(query)
            figures.query_seconds[f"docs query {number}"] = round(time.perf_counter() - started, 3)
        except RuntimeError as error:
            figures.query_seconds[f"docs query {number}: {str(error)[:80]}"] = -1.0

    print(f"scale {events:,}: live latency while the pages are read ...", file=sys.stderr, flush=True)
    figures.live_p50_seconds, figures.live_p99_seconds = live_latency(
        up, bootstrap, dashboard, ids.split(), continuing=last_at
    )
    figures.stop_seconds = round(up.stop(), 1)
    again = Up(data, work / f"up-{events}-again.log")
    figures.restart_ready_seconds = round(again.wait_ready(), 1)
    again.stop()
    if verify:
        figures.verify_seconds, figures.verify_peak_rss_mb, figures.verify_ok = run_verify(up.env)
    return figures


def live_latency(
    up: Up, bootstrap: str, dashboard: str, customers: list[str], *, continuing: datetime
) -> tuple[float, float]:
    """Events posted one by one while three readers read the pages: seconds from the post
    to the event's row in `touchpoints` (p50, p99). Their event time continues the history
    from its last event in real time, as live traffic continues a business's history (a
    jump of weeks would fold weeks of rows into the first live batch)."""
    offset = datetime.now(UTC) - continuing
    stop = threading.Event()
    pages = ["/api/snapshot", "/api/experience", *(f"/api/customers/{c}" for c in customers)]

    def reader(offset: int) -> None:
        n = offset
        while not stop.is_set():
            with contextlib.suppress(Exception):
                get(f"{dashboard}{pages[n % len(pages)]}")
            n += 1

    readers = [threading.Thread(target=reader, args=(n,), daemon=True) for n in range(3)]
    for thread in readers:
        thread.start()
    sent: dict[str, float] = {}
    with Publisher(bootstrap) as publisher:
        for number in range(LIVE_EVENTS):
            now = datetime.now(UTC)
            event = TouchpointEvent.model_validate({
                "event_id": f"live-{number}-{now.timestamp()}", "schema_version": 1,
                "occurred_at": now - offset, "received_at": now - offset, "customer_id": f"live-{number % 7}",
                "channel": "chat", "kind": "message", "direction": "inbound", "actor": "customer",
                "conversation_id": f"live-{number}",
            })  # fmt: skip
            sent[event.event_id] = now.timestamp()
            publisher.publish([event])
            time.sleep(LIVE_SPACING_SECONDS)
    time.sleep(5)
    stop.set()
    for thread in readers:
        thread.join(timeout=180)
    rows = up.sql(
        "SELECT event_id, toUnixTimestamp64Milli(ingested_at) FROM touchpoints "
        "WHERE startsWith(event_id, 'live-')"
    )
    waits = sorted(
        int(ingested) / 1000 - sent[event_id]
        for event_id, ingested in (line.split("\t") for line in rows.splitlines())
        if event_id in sent
    )
    if not waits:
        return float("nan"), float("nan")
    p99 = waits[min(len(waits) - 1, round(0.99 * (len(waits) - 1)))]
    return round(statistics.median(waits), 3), round(p99, 3)


def run_verify(env: dict[str, str]) -> tuple[float, float, bool]:
    began = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "touchstream.cli", "verify"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return round(time.monotonic() - began, 1), round(usage.ru_maxrss / 1024), process.returncode == 0


def report(all_figures: list[Figures], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d")
    (out / "scale.json").write_text(
        json.dumps({"date": stamp, "runs": [asdict(f) for f in all_figures]}, indent=2) + "\n"
    )
    sizes = [f"{f.events:,}" for f in all_figures]
    rows: list[tuple[str, list[Any]]] = [
        ("customers", [f"{f.customers:,}" for f in all_figures]),
        ("publish, events/s", [f"{f.publish_events_per_s:,.0f}" for f in all_figures]),
        ("ingest, events/s (publish to last stored)", [f"{f.ingest_events_per_s:,.0f}" for f in all_figures]),
        ("maintained tables caught up, s after the last event", [f.catch_up_seconds for f in all_figures]),
        ("worker / broker peak RSS, MB",
         [f"{f.worker_peak_rss_mb:.0f} / {f.broker_peak_rss_mb:.0f}" for f in all_figures]),
        ("broker / chDB / worker state disk, MB",
         [f"{f.broker_disk_mb:.0f} / {f.chdb_disk_mb:.0f} / {f.state_disk_mb:.0f}" for f in all_figures]),
        ("live: post to stored while pages are read, p50 / p99 s",
         [f"{f.live_p50_seconds} / {f.live_p99_seconds}" for f in all_figures]),
        ("Ctrl-C to stopped, s", [f.stop_seconds for f in all_figures]),
        ("restart to ready, s", [f.restart_ready_seconds for f in all_figures]),
        ("verify, s / peak RSS MB / ok",
         [f"{f.verify_seconds} / {f.verify_peak_rss_mb} / {f.verify_ok}" for f in all_figures]),
    ]  # fmt: skip
    names = list(dict.fromkeys(name for f in all_figures for name in f.api_seconds))
    rows += [(f"`{name}`, s", [f.api_seconds.get(name, "-") for f in all_figures]) for name in names]
    queries = list(dict.fromkeys(name for f in all_figures for name in f.query_seconds))
    rows += [(f"{name}, s", [f.query_seconds.get(name, "-") for f in all_figures]) for name in queries]
    lines = [
        f"# Scale benchmark, {stamp}",
        "",
        f"{all_figures[0].cores} cores; a seeded history of {HISTORY_DAYS} days, about "
        f"{EVENTS_PER_CUSTOMER} events per customer, replayed into a fresh `touchstream up` "
        "at default settings (bench/scale.py).",
        "",
        "| figure | " + " | ".join(sizes) + " |",
        "|---|" + "---:|" * len(sizes),
        *(f"| {name} | " + " | ".join(str(v) for v in values) + " |" for name, values in rows),
        "",
    ]
    (out / "scale.md").write_text("\n".join(lines))
    chart(all_figures, out / "scale.png")


def chart(all_figures: list[Figures], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (rate_ax, rss_ax) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for figures in all_figures:
        samples = figures.samples
        label = f"{figures.events:,} events"
        stored = [s.events for s in samples]
        # Over 5 samples (10 s): a batch of 20,000 events can take longer than one sample.
        rates = [
            (b.events - a.events) / (b.seconds - a.seconds) if b.seconds > a.seconds else 0.0
            for a, b in zip(samples, samples[5:], strict=False)
        ]
        rate_ax.plot(stored[5:], rates, label=label)
        rss_ax.plot(stored, [s.worker_rss_mb for s in samples], label=f"worker, {label}")
        rss_ax.plot(stored, [s.broker_rss_mb for s in samples], linestyle="--", label=f"broker, {label}")
    rate_ax.set_ylabel("events/s stored")
    rate_ax.legend()
    rss_ax.set_ylabel("RSS, MB")
    rss_ax.set_xlabel("events stored")
    rss_ax.legend()
    fig.suptitle(f"Touchstream scale benchmark, {all_figures[0].cores} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--events", default="1000000", help="sizes, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--no-verify", action="store_true")
    parser.add_argument("--keep", type=Path, help="keep the data dirs here")
    args = parser.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="touchstream-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    all_figures: list[Figures] = []
    try:
        for size in args.events.split(","):
            all_figures.append(run(int(size), work, not args.no_verify))
            report(all_figures, args.out)  # each size's figures kept as soon as they are measured
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    print((args.out / "scale.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
