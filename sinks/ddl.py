"""ClickHouse schema (SPEC §6). Every statement is idempotent, so migrating is safe at any start.

Deduplication: each table is a ReplacingMergeTree keyed by the record's identity, so a
batch written twice (a retry, a worker restarted before its offsets were committed)
collapses to one row in `FINAL` / `argMax` queries; inserts also carry a deduplication
token so an identical retried batch is dropped at once.
"""

from __future__ import annotations

_DEDUP = "SETTINGS non_replicated_deduplication_window = 1000"
_TS = "DateTime64(3, 'UTC')"

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
        written_at {_TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(written_at)
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
        updated_at {_TS}
    ) ENGINE = ReplacingMergeTree(updated_at)
    ORDER BY customer_id""",
    "engagement_changes": f"""
        customer_id String,
        previous_level LowCardinality(String),
        level LowCardinality(String),
        score Float64,
        changed_at {_TS}
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(changed_at)
    ORDER BY (customer_id, changed_at, level)""",
    "surveys": f"""
        event_id String,
        customer_id String,
        channel LowCardinality(String),
        survey_type LowCardinality(String),
        score Int8,
        conversation_id Nullable(String),
        occurred_at {_TS}
    ) ENGINE = ReplacingMergeTree
    PARTITION BY toYYYYMM(occurred_at)
    ORDER BY (customer_id, event_id)""",
    "waiting": f"""
        conversation_id String,
        customer_id String,
        channel LowCardinality(String),
        waiting_since Nullable({_TS}),
        answered Bool,
        updated_at {_TS}
    ) ENGINE = ReplacingMergeTree(updated_at)
    ORDER BY (customer_id, conversation_id)""",
    "late_events": f"""
        event_id String,
        customer_id String,
        channel LowCardinality(String),
        occurred_at {_TS},
        horizon {_TS},
        lateness_seconds Float64,
        detected_at {_TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(detected_at)
    ORDER BY (customer_id, event_id)""",
    "erasures": f"""
        request_event_id String,
        requested_at {_TS},
        erased_at {_TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(erased_at)
    ORDER BY request_event_id""",
    # Per input partition, how far the stream's results are final (written with each
    # step's rows; `touchstream verify` recomputes up to it). It never moves back.
    "stream_horizons": f"""
        partition UInt32,
        horizon DateTime64(6, 'UTC'),
        written_at {_TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(horizon)
    ORDER BY partition""",
}

#: Tables holding a customer's rows: an erasure deletes from each of them.
CUSTOMER_TABLES = (
    "touchpoints", "responses", "engagement", "engagement_changes", "surveys", "waiting", "late_events",
)  # fmt: skip

#: Per channel and hour, for dashboards: plain views over the deduplicated tables, so they
#: are exact whatever was retried or replayed (a materialized view would count twice).
VIEWS: dict[str, str] = {
    "response_times_hourly": """
        SELECT channel, toStartOfHour(replied_at) AS hour,
               count() AS responses,
               avg(response_seconds) AS mean_seconds,
               quantileExact(0.5)(response_seconds) AS p50_seconds,
               quantileExact(0.9)(response_seconds) AS p90_seconds,
               countIf(is_first_response) AS first_responses,
               avgIf(response_seconds, is_first_response) AS first_response_mean_seconds
        FROM {db}.responses FINAL
        GROUP BY channel, hour""",
    "volumes_hourly": """
        SELECT channel, toStartOfHour(occurred_at) AS hour, kind, direction, count() AS events,
               uniqExact(customer_id) AS customers
        FROM {db}.touchpoints FINAL
        GROUP BY channel, hour, kind, direction""",
    "experience_hourly": """
        SELECT channel, toStartOfHour(occurred_at) AS hour, survey_type,
               count() AS responses,
               countIf(score >= 9) AS promoters,
               countIf(score <= 6) AS detractors,
               countIf(score >= 4) AS satisfied
        FROM {db}.surveys FINAL
        GROUP BY channel, hour, survey_type""",
}


def migrations(database: str) -> list[str]:
    statements = [f"CREATE DATABASE IF NOT EXISTS {database}"]
    for table, body in TABLES.items():
        statements.append(f"CREATE TABLE IF NOT EXISTS {database}.{table} ({body}\n    {_DEDUP}")
    for view, query in VIEWS.items():
        statements.append(f"CREATE OR REPLACE VIEW {database}.{view} AS {query.format(db=database)}")
    return statements
