"""The one settings object. Nothing else in Touchstream reads the environment."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from touchstream.producers.health import DiskSpace
from touchstream.schemas.touchpoint import Channel
from touchstream.streams.metrics.config import SLA_METRICS, MetricsConfig, SlaPolicy
from touchstream.streams.metrics.schedule import Schedule


class Settings(BaseSettings):
    """Configuration from `TOUCHSTREAM_*` variables (plus the two well-known ones).

    `KAFKA_BOOTSTRAP` and `CLICKHOUSE_URL` are read without the prefix because
    they are how operators point Touchstream at real services; when unset, the
    embedded broker and chDB are used.
    """

    model_config = SettingsConfigDict(env_prefix="TOUCHSTREAM_", extra="ignore", populate_by_name=True)

    kafka_bootstrap: str | None = Field(
        default=None,
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP", "TOUCHSTREAM_KAFKA_BOOTSTRAP"),
        description="host:port[,host:port] of an external Kafka; unset = embedded broker",
    )
    clickhouse_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("CLICKHOUSE_URL", "TOUCHSTREAM_CLICKHOUSE_URL"),
        description="http(s)://user:password@host:port[/database]; unset = embedded chDB",
    )
    clickhouse_database: str = Field(default="touchstream", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    #: Bounds of every read (dashboards, the Customer 360, `touchstream sql`): in embedded
    #: mode chDB runs one query at a time, so a read holds the sink's next insert back for at
    #: most this long (default 1.5 s embedded, 60 s against a server); 0 for none.
    read_seconds: float | None = Field(default=None, ge=0)
    read_memory_mb: int = Field(default=2048, ge=1)
    data_dir: Path = Path(".touchstream")
    broker: Literal["noida", "tansu"] = "noida"
    partitions: int = Field(default=4, ge=1, le=256)
    replication_factor: int = Field(default=1, ge=1)
    topic_prefix: str = Field(default="touchpoints", pattern=r"^[A-Za-z0-9._-]+$")
    app_id: str = Field(default="touchstream", pattern=r"^[A-Za-z0-9._-]+$")

    worker_host: str = "127.0.0.1"
    worker_port: int = Field(default=6066, ge=0, le=65535)
    #: The token the worker's `POST /sql` wants; unset, a new one is written to
    #: `<data dir>/control.token` (0600) at each start. Required beyond loopback.
    worker_token: SecretStr | None = None
    #: Let `POST /sql` run statements that reach files, hosts or processes (file(), url(),
    #: INTO OUTFILE, ...): off, they are refused (`sinks.sqlguard`).
    worker_sql_external: bool = False
    #: ClickHouse's HTTP interface on the embedded chDB, for analysts' tools (Grafana, dbt,
    #: DBeaver...): read-only, served by the process that owns the data dir, on loopback by
    #: default. User and password: these, or those kept in `<data dir>/clickhouse.credentials`.
    clickhouse_http: bool = True
    clickhouse_http_host: str = "127.0.0.1"
    clickhouse_http_port: int = Field(default=8123, ge=0, le=65535)
    clickhouse_http_user: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.@-]+$")
    clickhouse_http_password: SecretStr | None = None
    #: Connections each HTTP port of a process takes at once (collector, dashboard, worker
    #: control, ClickHouse endpoint), at most; fewer when the process's descriptor limit
    #: is low (`touchstream.listeners`).
    listener_max_connections: int = Field(default=1024, ge=1)
    #: A connection that sends no complete request for this long is closed.
    listener_idle_seconds: float = Field(default=15.0, gt=0)
    collector_host: str = "127.0.0.1"
    collector_port: int = Field(default=8080, ge=0, le=65535)
    #: API keys accepted on `POST /v1/events`, comma-separated. Unset: the collector
    #: uses (and on first start creates) the key in `<data dir>/collector.key`.
    collector_api_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    collector_max_body_bytes: int = Field(default=1_048_576, ge=1024)
    collector_max_batch: int = Field(default=500, ge=1)
    #: How long an accepted request waits for Kafka's acknowledgement before a 503.
    collector_publish_timeout_seconds: float = Field(default=10.0, gt=0)
    #: Publishable keys for the website snippet: they may send only web page_view and
    #: click events, so they can sit in a page's HTML. Comma-separated.
    collector_web_keys: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    #: Origins allowed to call /v1/events from a browser, comma-separated; "*" for any.
    collector_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["*"])
    #: Webhooks carry whole emails with attachments: their own, larger body limit.
    collector_webhook_max_body_bytes: int = Field(default=33_554_432, ge=1024)

    #: Webhook secrets as JSON, by provider name or route:
    #: {"intercom": "...", "chat/generic": "...", "mailgun": "..."}. A provider without
    #: a secret is not enabled (its webhook answers 403).
    webhook_secrets: Annotated[dict[str, SecretStr], NoDecode] = Field(default_factory=dict)
    #: How far a signed webhook timestamp may be from the collector's clock.
    webhook_tolerance_seconds: int = Field(default=300, ge=1)
    #: The token Meta's dashboard sends in Messenger's subscription check.
    webhook_verify_token: SecretStr | None = None
    #: Messenger app ids (and other platform ids) whose messages are a bot's, comma-separated.
    webhook_bot_ids: Annotated[list[str], NoDecode] = Field(default_factory=list)

    #: The brand's email domains (comma-separated): mail from them is outbound.
    email_brand_domains: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: Customer ids from email addresses: "sha256" (pseudonymous) or the plain "address".
    email_customer_ids: Literal["sha256", "address"] = "sha256"

    #: The ops dashboard (part of `touchstream up`, or `touchstream dashboard`).
    dashboard_host: str = "127.0.0.1"
    dashboard_port: int = Field(default=8081, ge=0, le=65535)
    #: Required when the dashboard binds beyond loopback: ?token=... or a bearer header.
    dashboard_token: SecretStr | None = None
    dashboard_refresh_seconds: float = Field(default=1.0, ge=0.2)
    #: Waiting-time SLA per channel in seconds, JSON; "*" for every other channel.
    dashboard_sla_seconds: Annotated[dict[str, float], NoDecode] = Field(
        default_factory=lambda: {
            "*": 300.0,
            "messaging": 3_600.0,
            "social": 3_600.0,
            "forum": 86_400.0,
            "email": 86_400.0,
            "helpdesk": 86_400.0,
        }
    )

    #: How far an event's occurred_at may lie after its received_at, and after the worker's
    #: wall clock when it is read: beyond it the collector answers 422 for the item and the
    #: worker sends it to the dead-letter topic, so no event can move event time ahead.
    max_clock_skew_seconds: float = Field(default=3600.0, gt=0)
    #: Event time an out-of-order event may trail the newest one and still count; results
    #: trail the newest event by as much. Unset: 600 s, or 30 s for `up --demo`.
    metrics_grace_seconds: float | None = Field(default=None, ge=0)
    #: A partition that is caught up and reads nothing for this long (wall clock) moves its
    #: horizon to min(newest event + 1 µs, wall clock - grace): its results become final.
    metrics_idle_seconds: float = Field(default=30.0, gt=0)
    #: Level hysteresis h: a held engagement level falls below threshold * (1 - h) only.
    metrics_level_hysteresis: float = Field(default=0.1, ge=0, lt=1)
    #: Provisional rows within seconds of each event; off, rows appear once final (benchmarks).
    metrics_live_rows: bool = True
    #: Late events (SPEC §5 "Time"): `restate` recomputes their customers from all their
    #: stored events, so a backfill counts as if it had arrived in order; `report` stores
    #: and reports them without counting them.
    metrics_late: Literal["restate", "report"] = "restate"
    #: Opening hours as JSON, by channel ("*" for every channel without its own):
    #: {"*": {"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"},
    #: "holidays": ["2026-12-25"]}}. Responses on a channel with a schedule also get
    #: response_business_seconds (docs/metrics.md).
    business_hours: Annotated[dict[str, Schedule], NoDecode] = Field(default_factory=dict)
    #: Opening hours per team, JSON by team_id (schedules as above): a policy in business
    #: hours counts a team's own hours before its channel's.
    team_hours: Annotated[dict[str, Schedule], NoDecode] = Field(default_factory=dict)
    #: SLA policies as a JSON list, the first that matches a conversation applies:
    #: [{"name": "billing urgent", "team": "billing", "priority": "urgent", "channel": "*",
    #: "first_response_seconds": 600, "next_response_seconds": 1800,
    #: "resolution_seconds": 86400, "business": true}]. Unset: per channel, its
    #: dashboard SLA for first and next response (docs/metrics.md).
    sla_policies: Annotated[tuple[SlaPolicy, ...] | None, NoDecode] = None

    #: Free space kept under the data dir while the embedded broker or chDB writes there:
    #: below it the collector answers 503, replay and ingest-email stop, the worker pauses
    #: and health reports it (0 switches the check off).
    min_free_disk_mb: int = Field(default=100, ge=0)

    sink_batch_size: int = Field(default=20_000, ge=1)
    #: Customers without buffered events a worker keeps in memory (the most recently
    #: used); the rest of the metric state stays in RocksDB under the data dir.
    state_cache: int = Field(default=20_000, ge=0)
    sink_flush_seconds: float = Field(default=1.0, gt=0)
    #: A batch is also written once the input has been quiet this long (light traffic).
    sink_quiet_seconds: float = Field(default=0.05, gt=0)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    #: How long a group rebalance waits for members to rejoin.
    rebalance_timeout_ms: int = Field(default=60_000, ge=1000)
    #: Static consumer-group membership (KIP-345): a restarted worker with the same
    #: instance id takes over its predecessor's partitions at once, even when the
    #: predecessor was killed without leaving the group. Give each concurrently
    #: running worker its own value; the default is stable per app and host.
    worker_instance: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._-]+$")

    #: Wait after a fetch that brought nothing before fetching again. Unset: 100 ms on
    #: the embedded noida broker (it answers empty fetches at once, so an idle worker
    #: would spin a core), 0 elsewhere (real brokers wait fetch.max.wait.ms themselves).
    empty_fetch_wait_ms: int | None = Field(default=None, ge=0, le=5000)

    #: Live events/s of `up --demo` among 50,000 customers instead of the demo business's own
    #: pace (about 1,450 events a day among the history's 3,000 customers): for load tests.
    demo_rate: float | None = Field(default=None, gt=0, description="events/s the demo simulator sends")
    demo_seed: int = 7
    #: Days of simulated history `up --demo` writes first into an empty database (0: none).
    demo_history_days: float = Field(default=90.0, ge=0, le=366)
    log_level: Literal["debug", "info", "warning", "error"] = "warning"

    @field_validator(
        "collector_api_keys",
        "collector_web_keys",
        "collector_allowed_origins",
        "webhook_bot_ids",
        "email_brand_domains",
        mode="before",
    )
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("webhook_secrets", "dashboard_sla_seconds", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return {}
            try:
                return json.loads(value)
            except ValueError as error:
                raise ValueError(f'must be a JSON object such as {{"intercom": "secret"}}: {error}') from None
        return value

    @field_validator("sla_policies", mode="before")
    @classmethod
    def _policies(cls, value: object) -> object:
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                value = json.loads(value)
            except ValueError as error:
                raise ValueError(f"must be a JSON list of policies: {error}") from None
        if value is None or (isinstance(value, tuple) and all(isinstance(p, SlaPolicy) for p in value)):
            return value
        if not isinstance(value, list):
            raise ValueError('must be a JSON list such as [{"name": "all", "first_response_seconds": 300}]')
        return tuple(_policy(number, spec) for number, spec in enumerate(value, 1))

    @field_validator("business_hours", "team_hours", mode="before")
    @classmethod
    def _schedules(cls, value: object, info: ValidationInfo) -> object:
        value = cls._json_object(value)
        if not isinstance(value, dict):
            raise ValueError('must be a JSON object such as {"*": {"hours": {"mon-fri": "09:00-17:00"}}}')
        schedules = {}
        for channel, spec in value.items():
            if (
                info.field_name == "business_hours"
                and channel != "*"
                and channel not in {c.value for c in Channel}
            ):
                raise ValueError(f"unknown channel {channel!r}")
            if isinstance(spec, Schedule):
                schedules[channel] = spec
            elif isinstance(spec, dict):
                try:
                    schedules[channel] = Schedule.parse(spec)
                except ValueError as error:
                    raise ValueError(f"{channel}: {error}") from None
            else:
                raise ValueError(f"{channel}: a schedule is a JSON object")
        return schedules

    @field_validator("email_brand_domains")
    @classmethod
    def _domains(cls, value: list[str]) -> list[str]:
        return [domain.lower().lstrip("@").rstrip(".") for domain in value]

    def grace(self, *, demo: bool = False) -> float:
        if self.metrics_grace_seconds is not None:
            return self.metrics_grace_seconds
        return 30.0 if demo else 600.0

    def disk_checks(self, *, kafka: bool = True, clickhouse: bool = True) -> list[DiskSpace]:
        """The free-space check of the data dir, where the embedded broker (`kafka`) or chDB
        (`clickhouse`) in use writes; none against a real Kafka and ClickHouse."""
        writes = (kafka and self.embedded_kafka) or (clickhouse and self.embedded_clickhouse)
        if not writes or not self.min_free_disk_mb:
            return []
        return [DiskSpace(self.data_dir, self.min_free_disk_mb * 2**20)]

    @property
    def max_clock_skew(self) -> timedelta:
        return timedelta(seconds=self.max_clock_skew_seconds)

    def sla_seconds(self, channel: str) -> float | None:
        return self.dashboard_sla_seconds.get(channel, self.dashboard_sla_seconds.get("*"))

    def metrics_config(self, *, demo: bool = False) -> MetricsConfig:
        default = self.business_hours.get("*")
        schedules = {
            channel: schedule
            for channel in Channel
            if (schedule := self.business_hours.get(channel.value, default)) is not None
        }
        return MetricsConfig(
            grace=timedelta(seconds=self.grace(demo=demo)),
            business_hours=schedules,
            team_hours=self.team_hours,
            sla_policies=self.sla_policies,
            level_hysteresis=self.metrics_level_hysteresis,
            live_rows=self.metrics_live_rows,
            sla={
                channel: timedelta(seconds=seconds)
                for channel in Channel
                if (seconds := self.sla_seconds(channel.value)) is not None
            },
        )

    @property
    def collector_key_file(self) -> Path:
        return self.data_dir / "collector.key"

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_url is None

    @property
    def read_bound_seconds(self) -> float | None:
        """How long a read may run (None: unbounded)."""
        if self.read_seconds is not None:
            return self.read_seconds or None
        return 1.5 if self.embedded_clickhouse else 60.0

    @property
    def empty_fetch_wait_seconds(self) -> float:
        if self.empty_fetch_wait_ms is not None:
            return self.empty_fetch_wait_ms / 1000
        return 0.1 if self.embedded_kafka and self.broker == "noida" else 0.0

    @property
    def group_instance_id(self) -> str:
        return self.worker_instance or f"{self.app_id}-{socket.gethostname()}"

    @property
    def chdb_path(self) -> Path:
        return self.data_dir / "clickhouse"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / f"kafka-{self.broker}"

    @property
    def state_dir(self) -> Path:
        return self.data_dir / "faust"


_POLICY_FIELDS = {"name", "team", "priority", "channel", "first_response_seconds", "next_response_seconds",
                  "resolution_seconds", "business"}  # fmt: skip


def _policy(number: int, spec: object) -> SlaPolicy:
    """One SLA policy of `TOUCHSTREAM_SLA_POLICIES` (the `number`th)."""
    if not isinstance(spec, dict):
        raise ValueError(f"policy {number}: a policy is a JSON object")
    name = str(spec.get("name") or f"policy {number}")
    if unknown := set(spec) - _POLICY_FIELDS:
        raise ValueError(f"policy {name!r}: unknown fields {', '.join(sorted(unknown))}")
    channel = str(spec.get("channel", "*"))
    if channel != "*" and channel not in {c.value for c in Channel}:
        raise ValueError(f"policy {name!r}: unknown channel {channel!r}")
    targets: dict[str, timedelta | None] = {}
    for metric in SLA_METRICS:
        seconds = spec.get(f"{metric}_seconds")
        if seconds is not None and (
            not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0
        ):
            raise ValueError(f"policy {name!r}: {metric}_seconds must be a positive number of seconds")
        targets[metric] = None if seconds is None else timedelta(seconds=seconds)
    if not any(targets.values()):
        raise ValueError(f"policy {name!r}: sets no target (first_response_seconds, next_response_seconds, "
                         "resolution_seconds)")  # fmt: skip
    business = spec.get("business", False)
    if not isinstance(business, bool):
        raise ValueError(f"policy {name!r}: business must be true or false")
    return SlaPolicy(
        name, str(spec.get("team", "*")), str(spec.get("priority", "*")), channel,
        targets["first_response"], targets["next_response"], targets["resolution"], business,
    )  # fmt: skip
