"""Starting the pieces: Kafka (embedded or external), ClickHouse, the worker, demo traffic."""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from faust.worker import Worker

from producers.publisher import Delivery, Publisher
from producers.simulator import Simulator, SimulatorConfig
from schemas.topics import all_topics, input_topic
from sinks.clickhouse import connect
from streams.app import build, faust_app
from touchstream import control
from touchstream.broker import EmbeddedBroker, free_port, wait_for_metadata
from touchstream.kafka import ensure_topics
from touchstream.settings import Settings

log = logging.getLogger(__name__)
#: Mean events per simulated session, used to turn an events/s rate into sessions/s.
EVENTS_PER_SESSION = 3.0


def kafka(settings: Settings, stack: ExitStack, *, say: bool = True) -> str:
    """Bootstrap servers of the Kafka in use, with every Touchstream topic created."""
    if settings.kafka_bootstrap:
        bootstrap = settings.kafka_bootstrap
        wait_for_metadata(bootstrap, timeout=30)
    else:
        broker = EmbeddedBroker(settings.broker, settings.broker_dir)
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
    return bootstrap


class DemoTraffic(threading.Thread):
    """Publishes simulated journeys in real time (occurred_at = now) until stopped."""

    def __init__(self, settings: Settings, bootstrap: str) -> None:
        super().__init__(name="demo-traffic", daemon=True)
        config = SimulatorConfig(
            seed=settings.demo_seed,
            customers=2000,
            sessions_per_second=settings.demo_rate / EVENTS_PER_SESSION,
            invalid_share=0.002,
        )
        self.simulator = Simulator(config, start=datetime.now(UTC))
        self.publisher = Publisher(bootstrap, prefix=settings.topic_prefix)
        self.prefix = settings.topic_prefix
        self.delivery = Delivery()
        self._stop_event = threading.Event()

    def run(self) -> None:
        for event, value in self.simulator.records():
            wait = (event.occurred_at - datetime.now(UTC)).total_seconds()
            if wait > 0 and self._stop_event.wait(wait):
                break
            if self._stop_event.is_set():
                break
            topic = input_topic(event.channel, self.prefix)
            self.publisher.send_raw(topic, event.customer_id.encode(), value, self.delivery)
        self.publisher.close()

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=15)


def run_worker(settings: Settings, *, demo: bool = False, owner: bool = True) -> None:
    """Run the worker in this process until Ctrl-C / SIGTERM; everything started is stopped.

    `owner` marks the process that holds an embedded chDB directory: it writes the
    control file so `touchstream sql` elsewhere can ask it.
    """
    started = time.monotonic()
    with ExitStack() as stack:
        bootstrap = kafka(settings, stack)
        clickhouse = connect(settings)
        stack.callback(clickhouse.close)
        where = "chDB at " + str(settings.chdb_path) if clickhouse.embedded else "ClickHouse server"
        print(f"clickhouse {where}, database {settings.clickhouse_database}")
        if not settings.worker_port:
            settings = settings.model_copy(update={"worker_port": free_port(settings.worker_host)})
        app = faust_app(settings, bootstrap)
        stats = build(app, settings, clickhouse)
        control.register(app, clickhouse, stats)
        url = f"http://{settings.worker_host}:{settings.worker_port}"
        info = control.ControlInfo(url=url, pid=os.getpid(), bootstrap=bootstrap) if owner else None
        if info is not None:
            stack.callback((settings.data_dir / control.CONTROL_FILE).unlink, missing_ok=True)
        print(f"worker     {url}/status  (group {settings.app_id}, {settings.partitions} partitions)")
        if demo:
            traffic = DemoTraffic(settings, bootstrap)
            traffic.start()
            stack.callback(traffic.stop)
            print(f"demo       simulated journeys at ~{settings.demo_rate:.0f} events/s")
        worker = _Worker(
            app,
            control_info=info,
            data_dir=settings.data_dir,
            started=started,
            loglevel=settings.log_level.upper(),
            quiet=True,
            redirect_stdouts=False,
            workdir=str(settings.data_dir),
        )
        try:
            worker.execute_from_commandline()
        except SystemExit as exit_:
            if exit_.code not in (0, None):
                raise


class _Worker(Worker):
    """Faust's worker, announcing itself once it serves requests and consumes."""

    def __init__(
        self,
        app: faust.App,
        *,
        control_info: control.ControlInfo | None,
        data_dir: Path,
        started: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(app, **kwargs)
        self._control_info = control_info
        self._data_dir = data_dir
        self._began = started

    async def on_startup_finished(self) -> None:
        await super().on_startup_finished()
        if self._control_info is not None:
            control.write_info(self._data_dir, self._control_info)
        print(f"ready in {time.monotonic() - self._began:.1f}s; Ctrl-C stops everything", flush=True)
