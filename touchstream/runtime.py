"""Starting the pieces: Kafka (embedded or external), ClickHouse, the worker, demo traffic."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import faust
from faust.worker import Worker
from mode import ServiceT
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from touchstream import clickhouse_http, control, listeners
from touchstream import collector as collecting
from touchstream.broker import EmbeddedBroker, free_port, is_loopback, refuse_busy_port, wait_for_metadata
from touchstream.dashboard import web
from touchstream.datadir import DataDirLock
from touchstream.kafka import ensure_topics
from touchstream.producers.health import Check, KafkaProbe, problems
from touchstream.producers.publisher import Delivery, Publisher, destination
from touchstream.producers.simulator import Simulator, SimulatorConfig
from touchstream.retention import InputRetention
from touchstream.schemas.errors import BrokerError, ConfigError
from touchstream.schemas.topics import all_topics, input_topics
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.settings import Settings
from touchstream.sinks.clickhouse import ClickHouse, connect
from touchstream.streams.fetchpace import pace_empty_fetches
from touchstream.worker import Pipeline, PipelineStats, faust_app, tune_garbage_collector

log = logging.getLogger(__name__)
#: Events per second per session started per second, once journeys are under way; turns
#: an events/s rate into sessions/s. Journeys last minutes to hours (email replies), so
#: the rate ramps up: measured with the default journeys, about 1.4 in the first
#: minute, 3.5 at 10 minutes, 4.5 at 30 minutes and 5 after an hour.
EVENTS_PER_SESSION = 4.5
#: How long a stop (Ctrl-C, SIGTERM) may take before the process ends without finishing it.
SHUTDOWN_TIMEOUT_SECONDS = 30.0


def kafka(settings: Settings, stack: ExitStack, *, say: bool = True) -> tuple[str, bool]:
    """Bootstrap servers of the Kafka in use, with every Touchstream topic created.

    The flag tells whether that Kafka started empty just now: a memory-only embedded
    broker forgets every topic, offset and group when it stops.
    """
    forgetful = False
    if settings.kafka_bootstrap:
        bootstrap = settings.kafka_bootstrap
        wait_for_metadata(bootstrap, timeout=30)
    else:
        broker = EmbeddedBroker(settings.broker, settings.broker_dir)
        forgetful = not broker.persistent
        stack.enter_context(broker)
        bootstrap = broker.bootstrap
        if say:
            kept = "kept in" if broker.persistent else "in memory only, not kept; see"
            print(f"kafka      {bootstrap}  ({settings.broker}, data {kept} {broker.data_dir})")
    created = ensure_topics(
        bootstrap,
        all_topics(settings.topic_prefix),
        partitions=settings.partitions,
        replication_factor=settings.replication_factor,
    )
    if created:
        log.info("created topics %s", ", ".join(created))
    return bootstrap, forgetful


def refuse_stale_results(settings: Settings, clickhouse: ClickHouse) -> None:
    """Stop a memory-only broker from silently restarting the stream beside old results.

    A restarted Tansu has no topics, offsets or groups, so the worker would begin again
    from nothing while ClickHouse still holds what the previous run wrote.
    """
    held = clickhouse.scalar("SELECT count() FROM touchpoints")
    if held:
        where = settings.chdb_path if clickhouse.embedded else "ClickHouse"
        raise ConfigError(
            f"the {settings.broker} broker keeps no data across restarts, but {where} "
            f"already holds {held} touchpoints from an earlier run; use the default noida broker "
            "(TOUCHSTREAM_BROKER=noida), or start with an empty --data-dir"
        )


#: The demo's business: this many sessions per day on average among this many customers,
#: busier in working hours and on weekdays (`SimulatorConfig.rhythm`); a session averages
#: about 7.7 events (its conversations run to their end), so 90 days of history are about
#: 130,000 events: a customer acts every few days, and those who stop churn. Live traffic
#: goes on with the same customers at the same pace, so the history's panels stay true.
BUSINESS_SESSIONS_PER_DAY = 190
BUSINESS_EVENTS_PER_SESSION = 7.7
BUSINESS_CUSTOMERS = 3_000
#: Share of the demo's records broken on purpose (the dead letters the dashboard counts).
DEMO_INVALID_SHARE = 0.002
#: The history's incident (a surge of login tickets) begins this long before now.
HISTORY_INCIDENT_AGO = timedelta(days=24)

Records = Iterator[tuple[TouchpointEvent, bytes]]


class DemoTraffic(threading.Thread):
    """Publishes simulated journeys until stopped: the demo's business (`BUSINESS_*`) in
    real time (occurred_at = now), and first, on an empty database, its history
    (`demo_history_days` of event time ending now, as fast as the worker takes it, with a
    progress bar), which the live traffic continues. `TOUCHSTREAM_DEMO_RATE` replaces the
    live pace with that many events/s among 50,000 customers (for load, not for a story)."""

    def __init__(
        self, settings: Settings, bootstrap: str, *, processed: Callable[[], int] | None = None
    ) -> None:
        super().__init__(name="demo-traffic", daemon=True)
        self.settings = settings
        self.run_label = f"{datetime.now(UTC):%Y%m%dT%H%M%S}"  # each start publishes ids of its own
        self.publisher = Publisher(bootstrap, prefix=settings.topic_prefix)
        self.prefix = settings.topic_prefix
        self.delivery = Delivery()
        #: Records the worker has taken so far (written or dead-lettered); None: no history.
        self.processed = processed
        self._stop_event = threading.Event()

    def business(self) -> SimulatorConfig:
        return SimulatorConfig(
            seed=self.settings.demo_seed + 1,  # ids of their own: sim-<seed+1>-<run>-<n>
            customers=BUSINESS_CUSTOMERS,
            sessions_per_second=BUSINESS_SESSIONS_PER_DAY / 86_400,
            invalid_share=DEMO_INVALID_SHARE,
            run=self.run_label,
            incident_at=(
                datetime.now(UTC) - min(HISTORY_INCIDENT_AGO, timedelta(days=self._days() / 2))
                if self._days() > 0
                else None
            ),
            rhythm=True,
        )

    def _days(self) -> float:
        return self.settings.demo_history_days if self.processed is not None else 0.0

    def run(self) -> None:
        now = datetime.now(UTC)
        live: Records = Simulator(self.business(), start=now - timedelta(days=self._days())).records()
        if self._days() > 0 and self.processed is not None:
            live = self._history(live, now, self.processed)
        if self.settings.demo_rate is not None:
            config = SimulatorConfig(
                seed=self.settings.demo_seed,
                customers=50_000,  # sparse enough that journeys are a few sessions, as in life
                sessions_per_second=self.settings.demo_rate / EVENTS_PER_SESSION,
                invalid_share=DEMO_INVALID_SHARE,
                run=self.run_label,
            )
            live = Simulator(config, start=datetime.now(UTC)).records()
        for event, value in live:
            wait = (event.occurred_at - datetime.now(UTC)).total_seconds()
            if wait > 0 and self._stop_event.wait(wait):
                break
            if self._stop_event.is_set():
                break
            self.publisher.send_raw(*destination(event, self.prefix), value, self.delivery)
        self.publisher.close()

    def _history(self, records: Records, now: datetime, processed: Callable[[], int]) -> Records:
        """Publish `records` up to `now`, then show the worker's progress through them until
        it has taken them all; return the records from `now` on."""
        started, before = time.monotonic(), processed()
        published = 0
        rest: Records = iter(())
        for event, value in records:
            if event.occurred_at >= now or self._stop_event.is_set():
                rest = itertools.chain([(event, value)], records)
                break
            self.publisher.send_raw(*destination(event, self.prefix), value, self.delivery)
            published += 1
        try:
            self.publisher.wait(self.delivery, published, timeout=60)
        except BrokerError as error:
            print(f"demo       history not published: {error}", flush=True)
            return rest
        with Progress(
            TextColumn(f"demo       history of {self._days():g} days"),
            BarColumn(),
            TextColumn("{task.completed:,.0f}/{task.total:,.0f} events"),
            TimeElapsedColumn(),
            transient=False,
        ) as bar:
            task = bar.add_task("history", total=published)  # counted before it is shown: it stays
            while not self._stop_event.is_set():
                done = min(processed() - before, published)
                bar.update(task, completed=done)
                if done >= published:
                    break
                self._stop_event.wait(0.2)
        if not self._stop_event.is_set():
            print(f"demo       history written in {time.monotonic() - started:.1f} s; now live", flush=True)
        return rest

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=15)


def run_worker(
    settings: Settings,
    *,
    demo: bool = False,
    collector: bool = False,
    dashboard: bool = False,
    owner: bool = True,
) -> None:
    """Run the worker in this process until Ctrl-C / SIGTERM; everything started is stopped.

    `owner` marks the process that holds an embedded chDB directory: it writes the
    control file so `touchstream sql` elsewhere can ask it.
    """
    started = time.monotonic()
    settings = settings.model_copy(update={"data_dir": settings.data_dir.absolute()})
    with ExitStack() as stack:
        WorkerBuilder(settings, stack, demo=demo, owner=owner).run(
            started, collector=collector, dashboard=dashboard
        )


class WorkerBuilder:
    """`touchstream worker`'s services, one method each, started in `run` in order: the
    ports checked, Kafka, ClickHouse, the pipeline on a Faust app (`worker.Pipeline`),
    then the control port, the dashboard, the collector, the ClickHouse endpoint and the
    demo traffic as asked. What is started is stopped by `stack`, in reverse."""

    def __init__(self, settings: Settings, stack: ExitStack, *, demo: bool, owner: bool) -> None:
        self.settings = settings
        self.stack = stack
        self.demo = demo
        self.owner = owner
        self.services: list[ServiceT] = []
        self.stopping = asyncio.Event()  # set when the worker begins to stop

    def run(self, started: float, *, collector: bool, dashboard: bool) -> None:
        settings, stack = self.settings, self.stack
        stack.enter_context(DataDirLock(settings.data_dir))
        refuse_busy_port(settings.worker_host, settings.worker_port, "TOUCHSTREAM_WORKER_PORT")
        if collector:
            collecting.check_port(settings)
        serve_clickhouse = self.owner and settings.clickhouse_http and not settings.clickhouse_url
        if serve_clickhouse:
            clickhouse_http.check_port(settings)
        self.bootstrap = self.kafka()
        self.clickhouse = self.clickhouse_connection()
        if not settings.worker_port:
            self.settings = settings = settings.model_copy(
                update={"worker_port": free_port(settings.worker_host)}
            )
        pace_empty_fetches(settings.empty_fetch_wait_seconds)
        app = faust_app(settings, self.bootstrap)
        disk = settings.disk_checks()
        pipeline = Pipeline(app, settings, self.clickhouse, demo=self.demo, pause_while=disk)
        self.stats = pipeline.stats
        self.kafka_probe = KafkaProbe(self.bootstrap)  # one for the worker's and the collector's health
        self.readiness: list[Check] = [self.kafka_probe, *disk, self.stats.sink_problem]
        self.bounds = listeners.Bounds.of(settings, 1 + dashboard + collector + serve_clickhouse)
        url = self.control()
        dashboard_url = self.dashboard() if dashboard else None
        if collector:
            self.collector()
        if serve_clickhouse:
            self.clickhouse_endpoint()
        if self.demo:
            self.demo_traffic()
        info = None
        if self.owner:
            info = control.ControlInfo(
                url=url, pid=os.getpid(), bootstrap=self.bootstrap, dashboard=dashboard_url
            )
            stack.callback((settings.data_dir / control.CONTROL_FILE).unlink, missing_ok=True)
            stack.callback(control.forget_running, settings.data_dir)
        worker = _Worker(
            app,
            *self.services,
            control_info=info,
            stopping=self.stopping,
            stop_sink=pipeline.stop_sink,
            data_dir=settings.data_dir,
            started=started,
            loglevel=settings.log_level.upper(),
            quiet=True,
            redirect_stdouts=False,
        )
        tune_garbage_collector()
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (0, None) and self.stats.stopped_by is None:
                raise
        if self.stats.stopped_by is not None:
            raise self.stats.stopped_by  # one line from the CLI: the table, ClickHouse's code and name

    def kafka(self) -> str:
        """The Kafka in use (embedded or `KAFKA_BOOTSTRAP`) with its topics; on the embedded
        broker, the retention that keeps only what ClickHouse lacks."""
        settings = self.settings
        bootstrap, self.forgetful = kafka(settings, self.stack)
        if not settings.kafka_bootstrap:
            retention = InputRetention(
                bootstrap, settings.app_id, input_topics(settings.topic_prefix), settings.partitions
            )
            retention.start()
            self.stack.callback(retention.stop)
        return bootstrap

    def clickhouse_connection(self) -> ClickHouse:
        settings = self.settings
        clickhouse = connect(settings, say=lambda line: print(f"clickhouse {line}", flush=True))
        self.stack.callback(clickhouse.close)
        if self.forgetful:
            refuse_stale_results(settings, clickhouse)
            shutil.rmtree(settings.state_dir, ignore_errors=True)  # mirrors a changelog now gone
        where = "chDB at " + str(settings.chdb_path) if clickhouse.embedded else "ClickHouse server"
        print(f"clickhouse {where}, database {clickhouse.database}")
        return clickhouse

    def control(self) -> str:
        """The worker's own port (/status, /metrics, /sql, readiness); returns its URL."""
        settings, clickhouse = self.settings, self.clickhouse
        token = control.control_token(settings) if self.owner and clickhouse.embedded else None
        self.services.append(
            listeners.Listener(
                lambda: control.application(
                    clickhouse,
                    self.stats,
                    port=settings.worker_port,
                    loopback=is_loopback(settings.worker_host),
                    token=token,
                    external=settings.worker_sql_external,
                    stopping=self.stopping,
                    readiness=self.readiness,
                ),
                settings.worker_host,
                settings.worker_port,
                bounds=self.bounds,
            )
        )
        url = f"http://{settings.worker_host}:{settings.worker_port}"
        print(f"worker     {url}/status  (group {settings.app_id}, {settings.partitions} partitions)")
        return url

    def dashboard(self) -> str:
        """The dashboard; returns its URL."""
        settings, clickhouse = self.settings, self.clickhouse
        web.check_binding(settings)
        port = settings.dashboard_port or free_port(settings.dashboard_host)
        read = web.reader(
            settings, clickhouse, health=worker_health(self.stats, self.readiness, demo=self.demo)
        )
        self.services.append(
            web.DashboardService(
                settings,
                read,
                port,
                web.customer_reader(settings, clickhouse),
                web.experience_reader(clickhouse),
                web.teams_reader(clickhouse),
                bounds=self.bounds,
            )
        )
        print(f"dashboard  {web.url(settings, port)}")
        return f"http://{settings.dashboard_host}:{port}/"

    def collector(self) -> None:
        settings = self.settings
        port = settings.collector_port or free_port(settings.collector_host)
        self.services.append(
            collecting.CollectorService(
                settings,
                self.bootstrap,
                port,
                bounds=self.bounds,
                kafka_probe=self.kafka_probe,
                readiness=[self.stats.sink_problem],
                more_metrics=self.stats.prometheus,
            )
        )
        print(f"collector  {collecting.describe(settings, port)}")

    def clickhouse_endpoint(self) -> None:
        """ClickHouse's HTTP interface over the embedded chDB, for other clients."""
        endpoint = clickhouse_http.ClickHouseHttpService.configured(
            self.settings, self.clickhouse, bounds=self.bounds
        )
        self.services.append(endpoint)
        print(f"clickhouse  {endpoint.describe()}")

    def demo_traffic(self) -> None:
        settings, stats = self.settings, self.stats
        empty = self.clickhouse.scalar("SELECT count() FROM touchpoints") == 0
        taken = lambda: stats.events_written + stats.dead_letters  # noqa: E731
        traffic = DemoTraffic(settings, self.bootstrap, processed=taken if empty else None)
        traffic.start()
        self.stack.callback(traffic.stop)
        if settings.demo_rate is None:
            print(
                f"demo       a business of {BUSINESS_CUSTOMERS:,} customers, about "
                f"{BUSINESS_SESSIONS_PER_DAY * BUSINESS_EVENTS_PER_SESSION:,.0f} events a day, busiest "
                f"in working hours; {DEMO_INVALID_SHARE:.1%} of records broken on purpose (dead letters)"
            )
        else:
            print(
                f"demo       simulated journeys, ramping up to ~{settings.demo_rate:.0f} events/s "
                "as conversations get under way"
            )


def worker_health(
    stats: PipelineStats, readiness: Sequence[Check] = (), *, demo: bool = False
) -> Callable[[], dict[str, Any]]:
    """The dashboard's pipeline-health figures, from the worker's own counters and checks;
    with `demo`, the dead letters say that the demo breaks some records on purpose."""
    dead = f"dead letters (the demo breaks {DEMO_INVALID_SHARE:.1%} on purpose)" if demo else "dead letters"
    previous: list[tuple[float, int]] = []

    def health() -> dict[str, Any]:
        now = time.monotonic()
        previous.append((now, stats.events_in))
        while len(previous) > 2 and now - previous[0][0] > 60:
            previous.pop(0)
        then, before = previous[0]
        rate = (stats.events_in - before) / (now - then) if now > then else 0.0
        flushed = stats.last_flush_at
        return {
            "status": "; ".join(problems(readiness)) or "ok",
            "events/s in": round(rate, 1),
            "events in (since start)": stats.events_in,
            dead: stats.dead_letters,
            "late events": stats.late_events,
            "consumer lag": stats.consumer_lag,
            "last sink flush": datetime.fromtimestamp(flushed, UTC) if flushed else None,
        }

    return health


class _Worker(Worker):
    """Faust's worker, announcing itself once it serves requests and consumes."""

    def __init__(
        self,
        app: faust.App,
        *services: ServiceT,
        control_info: control.ControlInfo | None,
        stopping: asyncio.Event,
        stop_sink: Callable[[], None],
        data_dir: Path,
        started: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, *services, **kwargs)
        self.spinner = None  # the banner above says what started; no cursor tricks in logs
        self._control_info = control_info
        self._stopping = stopping
        self._stop_sink = stop_sink
        self._data_dir = data_dir
        self._began = started

    def install_signal_handlers(self) -> None:
        super().install_signal_handlers()
        # Closing the terminal (SIGHUP to the process group) stops `up` like SIGTERM does:
        # the batch in hand finished or left unacknowledged, the control file removed.
        self.loop.add_signal_handler(signal.SIGHUP, os.kill, os.getpid(), signal.SIGTERM)

    async def on_stop(self) -> None:
        # A stop that cannot finish (Kafka gone: Faust's consumer retries its last commit
        # and its group exit for good) ends the process anyway; nothing unacknowledged is
        # lost, it is read again at the next start.
        watchdog = threading.Timer(SHUTDOWN_TIMEOUT_SECONDS, self._give_up)
        watchdog.daemon = True
        watchdog.start()
        # First: the app's stop waits for every record handed out and every open request.
        self._stopping.set()  # a `POST /sql` still running answers 503
        self._stop_sink()
        await super().on_stop()

    def _give_up(self) -> None:
        print(
            f"touchstream: did not stop within {SHUTDOWN_TIMEOUT_SECONDS:.0f}s (is Kafka gone?); "
            "stopped without finishing (what was not committed is read again at the next start)",
            file=sys.stderr,
            flush=True,
        )
        if self._control_info is not None:
            (self._data_dir / control.CONTROL_FILE).unlink(missing_ok=True)
        os._exit(1)  # the embedded broker, if alive, gets SIGTERM with us (PR_SET_PDEATHSIG)

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        if self._control_info is not None:
            control.write_info(self._data_dir, self._control_info)
            control.note_running(self._data_dir, self._control_info.pid)
        print(f"ready in {time.monotonic() - self._began:.1f}s; Ctrl-C stops everything", flush=True)
