"""Running the HTTP collector: inside `touchstream up`, or alone (`touchstream collector`)."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from aiohttp import web

from touchstream.broker import refuse_busy_port
from touchstream.listeners import Bounds, Listener, bounded_body, raise_descriptor_limit
from touchstream.producers.collector import Collector, CollectorConfig
from touchstream.producers.health import Check, KafkaProbe
from touchstream.producers.publisher import AsyncPublisher
from touchstream.settings import Settings


def api_keys(settings: Settings) -> tuple[str, ...]:
    """The configured keys, else the data dir's own key (created on first use, mode 0600)."""
    if settings.collector_api_keys:
        return tuple(key.get_secret_value() for key in settings.collector_api_keys)
    return (_key_file(settings.collector_key_file),)


def _key_file(path: Path) -> str:
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    return key


def check_port(settings: Settings) -> None:
    refuse_busy_port(settings.collector_host, settings.collector_port, "TOUCHSTREAM_COLLECTOR_PORT")


def build(
    settings: Settings,
    bootstrap: str,
    *,
    kafka_probe: Check | None = None,
    readiness: Sequence[Check] = (),
    more_metrics: Callable[[], str] | None = None,
) -> tuple[web.Application, AsyncPublisher]:
    """The collector's app and its publisher. It acknowledges nothing while the disk under an
    embedded broker is low; `/healthz` also asks Kafka (through `kafka_probe`, else a probe
    of its own), and whatever `readiness` adds."""
    publisher = AsyncPublisher(
        bootstrap, prefix=settings.topic_prefix, timeout=settings.collector_publish_timeout_seconds
    )
    disk = settings.disk_checks(clickhouse=False)
    collector = Collector(
        collector_config(settings),
        publisher,
        guards=disk,
        readiness=[kafka_probe or KafkaProbe(bootstrap), *disk, *readiness],
        more_metrics=more_metrics,
    )
    return collector.application(), publisher


def collector_config(settings: Settings) -> CollectorConfig:
    verify_token = settings.webhook_verify_token
    return CollectorConfig(
        api_keys=api_keys(settings),
        web_keys=tuple(key.get_secret_value() for key in settings.collector_web_keys),
        allowed_origins=tuple(settings.collector_allowed_origins),
        max_body_bytes=settings.collector_max_body_bytes,
        webhook_max_body_bytes=settings.collector_webhook_max_body_bytes,
        max_batch=settings.collector_max_batch,
        webhook_secrets={name: value.get_secret_value() for name, value in settings.webhook_secrets.items()},
        webhook_tolerance_seconds=settings.webhook_tolerance_seconds,
        webhook_verify_token=verify_token.get_secret_value() if verify_token else None,
        brand_domains=frozenset(settings.email_brand_domains),
        hash_email_addresses=settings.email_customer_ids == "sha256",
        bot_ids=frozenset(settings.webhook_bot_ids),
        max_clock_skew=settings.max_clock_skew,
    )


def describe(settings: Settings, port: int) -> str:
    where = "keys from TOUCHSTREAM_COLLECTOR_API_KEYS"
    if not settings.collector_api_keys:
        where = f"API key in {settings.collector_key_file}"
    return f"http://{settings.collector_host}:{port}/v1/events  ({where})"


class CollectorService(Listener):
    """The collector as a service of the worker started by `touchstream up`."""

    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        port: int,
        *,
        bounds: Bounds,
        kafka_probe: Check | None = None,
        readiness: Sequence[Check] = (),
        more_metrics: Callable[[], str] | None = None,
    ) -> None:
        super().__init__(self._application, settings.collector_host, port, bounds=bounds)
        self.settings = settings
        self.bootstrap = bootstrap
        self.kafka_probe = kafka_probe
        self.readiness = readiness
        self.more_metrics = more_metrics
        self._publisher: AsyncPublisher | None = None

    def _application(self) -> web.Application:
        app, self._publisher = build(
            self.settings,
            self.bootstrap,
            kafka_probe=self.kafka_probe,
            readiness=self.readiness,
            more_metrics=self.more_metrics,
        )
        return app

    async def on_stop(self) -> None:
        await super().on_stop()
        if self._publisher is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._publisher.close)


def serve(settings: Settings, bootstrap: str) -> None:
    """`touchstream collector`: serve until SIGINT/SIGTERM, then close the producer."""
    check_port(settings)
    app, publisher = build(settings, bootstrap)

    async def close_publisher(_app: web.Application) -> None:
        await asyncio.get_running_loop().run_in_executor(None, publisher.close)

    app.on_cleanup.append(close_publisher)
    print(f"collector  {describe(settings, settings.collector_port)}  -> Kafka {bootstrap}", flush=True)
    raise_descriptor_limit()
    app.middlewares.append(bounded_body)
    web.run_app(
        app, host=settings.collector_host, port=settings.collector_port, print=None, access_log=None,
        keepalive_timeout=settings.listener_idle_seconds,
    )  # fmt: skip
