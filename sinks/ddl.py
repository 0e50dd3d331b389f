"""ClickHouse schema (SPEC §6). Every statement is idempotent, so migrating is safe at any start.

Every metric table is `ReplacingMergeTree(version, is_deleted)` ordered by the row's key
(`streams.metrics.records.KEY_COLUMNS`), with `final` (0/1): a row is an upsert, a
retraction is a row with `is_deleted = 1`, `SELECT ... FROM t FINAL` is the live view
and `... FINAL WHERE final` the settled one (docs/clickhouse.md). A batch written twice
(a retry, a worker restarted before its offsets were committed) collapses under FINAL.
`touchpoints` is a ReplacingMergeTree by event and its inserts carry a deduplication
token, so an identical retried insert is dropped at once.
"""

from __future__ import annotations

import re

from schemas.touchpoint import DETRACTOR_MAX, PROMOTER_MIN, SATISFIED_MIN

_DEDUP = "SETTINGS non_replicated_deduplication_window = 1000"
_TS = "DateTime64(3, 'UTC')"
#: The columns and engine of every metric table: upserts by key, live and final rows.
_UPSERT = """final UInt8,
        version UInt64,
        is_deleted UInt8 DEFAULT 0
    ) ENGINE = ReplacingMergeTree(version, is_deleted)"""

TABLES: dict[str, str] = {
    "touchpoints": f"""
        event_id String,
        schema_version UInt8,
        customer_id String,
        channel LowCardinality(String),
        kind LowCardinality(String),
        direction LowCardinality(String),
        actor LowCardinality(String),
        conversation_id Nullable(String),
        agent_id Nullable(String),
        occurred_at {_TS},
        received_at {_TS},
        survey_type LowCardinality(Nullable(String)),
        survey_score Nullable(Int8),
        consent_analytics Nullable(Bool),
        attributes Map(String, String),
        source_topic LowCardinality(String),
        source_partition UInt16,
        source_offset UInt64,
        ingested_at {_TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(ingested_at)
    PARTITION BY toYYYYMM(occurred_at)
    ORDER BY (customer_id, event_id)""",
    "responses": f"""
        reply_event_id String,
        conversation_id String,
        customer_id String,
        channel LowCardinality(String),
        agent_id Nullable(String),
        response_seconds Float64,
        response_business_seconds Nullable(Float64),
        is_first_response Bool,
        customer_message_at {_TS},
        replied_at {_TS},
        {_UPSERT}
    PARTITION BY toYYYYMM(replied_at)
    ORDER BY (customer_id, reply_event_id)""",
    "engagement": f"""
        customer_id String,
        score Float64,
        level LowCardinality(String),
        interactions_24h UInt32,
        interactions_7d UInt32,
        interactions_30d UInt32,
        active_channels_30d UInt8,
        last_interaction_at Nullable({_TS}),
        updated_at {_TS},
        {_UPSERT}
    ORDER BY customer_id""",
    "engagement_changes": f"""
        customer_id String,
        previous_level LowCardinality(String),
        level LowCardinality(String),
        score Float64,
        changed_at {_TS},
        {_UPSERT}
    PARTITION BY toYYYYMM(changed_at)
    ORDER BY (customer_id, changed_at, previous_level, level)""",
    "surveys": f"""
        event_id String,
        customer_id String,
        channel LowCardinality(String),
        survey_type LowCardinality(String),
        score Int8,
        conversation_id Nullable(String),
        occurred_at {_TS},
        {_UPSERT}
    PARTITION BY toYYYYMM(occurred_at)
    ORDER BY (customer_id, event_id)""",
    "waiting": f"""
        conversation_id String,
        customer_id String,
        channel LowCardinality(String),
        waiting_since Nullable({_TS}),
        answered Bool,
        updated_at {_TS},
        {_UPSERT}
    ORDER BY (customer_id, conversation_id)""",
    "late_events": f"""
        event_id String,
        customer_id String,
        channel LowCardinality(String),
        occurred_at {_TS},
        horizon {_TS},
        lateness_seconds Float64,
        final UInt8 DEFAULT 1,
        detected_at {_TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(detected_at)
    ORDER BY (customer_id, event_id)""",
    "erasures": f"""
        request_event_id String,
        requested_at {_TS},
        erased_at {_TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(erased_at)
    ORDER BY request_event_id""",
    # Per input partition, how far the stream's results are final and the newest event
    # time its live rows are evaluated at (written with each step's rows; `touchstream
    # verify` recomputes both views from them). Neither moves back.
    "stream_horizons": f"""
        partition UInt32,
        horizon DateTime64(6, 'UTC'),
        newest DateTime64(6, 'UTC'),
        written_at {_TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(horizon)
    ORDER BY partition""",
}

#: Per channel and hour, for dashboards: plain views over the live rows (`FINAL`), computed
#: when queried, so they equal the aggregates over the rows as they are now: a correction
#: or retraction replaces its row before anything is counted (an insert-time materialized
#: view would count a corrected row twice). `final` is 1 when every row of the group is
#: settled; each view also has a `_settled` twin over the final rows alone.
_ROLLING_PART = """
        SELECT '{scope}' AS scope, w.1 AS window, {channel} AS channel, {customer} AS customer_id,
               count() AS responses, avg(response_seconds) AS mean_seconds,
               quantileExact(0.5)(response_seconds) AS p50_seconds,
               quantileExact(0.9)(response_seconds) AS p90_seconds,
               toUInt8(min(final)) AS final
        FROM {{db}}.responses FINAL
        ARRAY JOIN [('1h', 3600), ('24h', 86400), ('7d', 604800)] AS w
        WHERE replied_at > (SELECT max(occurred_at) FROM {{db}}.touchpoints) - toIntervalSecond(w.2)
          AND replied_at <= (SELECT max(occurred_at) FROM {{db}}.touchpoints)
        GROUP BY window{by}"""
#: Rolling response times (SPEC §5): count, mean, p50, p90 over the last 1 h, 24 h and 7 d
#: of event time (ending at the newest event), overall, per channel and per customer, from
#: the live rows; `final` = 1 when every response in the group is settled.
ROLLING = " UNION ALL ".join([
    _ROLLING_PART.format(scope="overall", channel="''", customer="''", by=""),
    _ROLLING_PART.format(scope="channel", channel="channel", customer="''", by=", channel"),
    _ROLLING_PART.format(scope="customer", channel="''", customer="customer_id", by=", customer_id"),
])  # fmt: skip

_HOURLY: dict[str, str] = {
    "response_times_hourly": """
        SELECT channel, toStartOfHour(replied_at) AS hour,
               count() AS responses,
               avg(response_seconds) AS mean_seconds,
               quantileExact(0.5)(response_seconds) AS p50_seconds,
               quantileExact(0.9)(response_seconds) AS p90_seconds,
               countIf(is_first_response) AS first_responses,
               avgIf(response_seconds, is_first_response) AS first_response_mean_seconds,
               toUInt8(min(final)) AS final
        FROM (SELECT * FROM {db}.responses FINAL {where})
        GROUP BY channel, hour""",
    "experience_hourly": """
        SELECT channel, toStartOfHour(occurred_at) AS hour, survey_type,
               count() AS responses,
               countIf(score >= {promoter}) AS promoters,
               countIf(score <= {detractor}) AS detractors,
               countIf(score >= {satisfied}) AS satisfied,
               toUInt8(min(final)) AS final
        FROM (SELECT * FROM {db}.surveys FINAL {where})
        GROUP BY channel, hour, survey_type""",
}
VIEWS: dict[str, str] = {
    **{name: query.replace("{where}", "") for name, query in _HOURLY.items()},
    **{f"{name}_settled": query.replace("{where}", "WHERE final") for name, query in _HOURLY.items()},
    "response_times_rolling": ROLLING,
    # Touchpoints are stored as they arrive and never provisional.
    "volumes_hourly": """
        SELECT channel, toStartOfHour(occurred_at) AS hour, kind, direction, count() AS events,
               uniqExact(customer_id) AS customers
        FROM {db}.touchpoints FINAL
        GROUP BY channel, hour, kind, direction""",
}


#: The column whose month partitions each partitioned table (`PARTITION BY toYYYYMM(column)`).
#: ClickHouse refuses an insert block spanning more months than `max_partitions_per_insert_block`
#: (100 by default), so a backfill's batch is split by it (`sinks.clickhouse.ClickHouse.insert`).
PARTITIONED_BY: dict[str, str] = {
    table: match.group(1)
    for table, body in TABLES.items()
    if (match := re.search(r"PARTITION BY toYYYYMM\((\w+)\)", body))
}


def expected_columns() -> dict[str, list[str]]:
    """Per table, the column names its DDL declares (to check an existing database)."""
    found = {}
    for table, body in TABLES.items():
        declared = body.split(") ENGINE")[0]
        found[table] = [line.split()[0] for line in declared.splitlines() if line.strip()]
    return found


def migrations(database: str) -> list[str]:
    statements = [f"CREATE DATABASE IF NOT EXISTS {database}"]
    for table, body in TABLES.items():
        statements.append(f"CREATE TABLE IF NOT EXISTS {database}.{table} ({body}\n    {_DEDUP}")
    for view, query in VIEWS.items():
        sql = query.format(
            db=database, promoter=PROMOTER_MIN, detractor=DETRACTOR_MAX, satisfied=SATISFIED_MIN
        )
        statements.append(f"CREATE OR REPLACE VIEW {database}.{view} AS {sql}")
    return statements
