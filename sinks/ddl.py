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
from datetime import timedelta

from schemas.touchpoint import DETRACTOR_MAX, DISSATISFIED_MAX, PROMOTER_MIN, SATISFIED_MIN
from streams.metrics.config import MetricsConfig
from streams.metrics.engagement import CUSTOMER_INITIATED_KINDS

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
#: The events the behaviour views count (SPEC §5b), per customer in (occurred_at, event_id)
#: order: stored and not late, while analytics consent holds (the latest consent_updated at
#: or before each event; none means consent), consent and erasure requests themselves
#: left out. An erasure has already removed the events up to its request.
_COUNTED = """
        SELECT * FROM (
            SELECT customer_id, event_id, channel, kind, direction, actor, survey_type, survey_score,
                   consent_analytics, occurred_at, source_partition,
                   last_value(consent_analytics) OVER (
                       PARTITION BY customer_id ORDER BY occurred_at, event_id
                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS analytics
            FROM {db}.touchpoints FINAL
            WHERE (customer_id, event_id) NOT IN (SELECT customer_id, event_id FROM {db}.late_events FINAL)
        )
        WHERE ifNull(analytics, true) AND kind NOT IN ('consent_updated', 'erasure_requested')"""
_PARTITIONS = """(
            SELECT partition, max(horizon) AS horizon, max(newest) AS newest
            FROM {db}.stream_horizons GROUP BY partition)"""
_SURVEY_CLASS = """multiIf(
            {type} = 'nps' AND {score} >= {promoter}, 'promoter',
            {type} = 'nps' AND {score} <= {detractor}, 'detractor',
            {type} = 'nps', 'passive',
            {score} >= {satisfied}, 'satisfied',
            {score} <= {dissatisfied}, 'dissatisfied',
            'neutral')"""
#: Journeys (SPEC §5b): a customer's run of counted events with gaps of at most the journey
#: gap; final once its end plus the gap is before its partition's horizon (no event that
#: could extend it can still arrive). Computed when queried, from the rows as they are.
JOURNEYS = f"""
        SELECT concat(customer_id, ':', argMin(event_id, (occurred_at, event_id))) AS journey_id,
               customer_id,
               min(occurred_at) AS started_at,
               max(occurred_at) AS ended_at,
               arrayCompact(arrayMap(x -> x.3, arraySort(groupArray((occurred_at, event_id, channel)))))
                   AS channel_path,
               count() AS touchpoints,
               multiIf(countIf(kind = 'purchase') > 0, 'purchase',
                       countIf(survey_type IS NOT NULL) > 0, {
    _SURVEY_CLASS.format(
        type="argMaxIf(survey_type, (occurred_at, event_id), survey_type IS NOT NULL)",
        score="argMaxIf(survey_score, (occurred_at, event_id), survey_type IS NOT NULL)",
        promoter="{promoter}",
        detractor="{detractor}",
        satisfied="{satisfied}",
        dissatisfied="{dissatisfied}",
    )
},
                       countIf(kind = 'ticket_opened') > 0, 'ticket',
                       'none') AS outcome,
               toUInt8(ifNull(max(occurred_at) + toIntervalMillisecond({{journey_gap_ms}}) < any(horizon), 0))
                   AS final
        FROM (
            SELECT *, sum(opens) OVER (PARTITION BY customer_id ORDER BY occurred_at, event_id
                                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS journey
            FROM (
                SELECT *, toUInt64(row_number() OVER w = 1
                                   OR dateDiff('millisecond', lagInFrame(occurred_at) OVER w, occurred_at)
                                      > {{journey_gap_ms}}) AS opens
                FROM ({_COUNTED})
                WINDOW w AS (PARTITION BY customer_id ORDER BY occurred_at, event_id
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            )
        ) AS counted
        LEFT JOIN {_PARTITIONS} AS p ON p.partition = counted.source_partition
        GROUP BY customer_id, journey"""

#: Customer profiles (SPEC §5b), evaluated at the partition's newest event time: first and
#: last seen, the channels and the UTC hours and weekdays (Monday first) of the customer's
#: own (customer-initiated) events over the profile window, the preferred channel (the most
#: such events; ties: the one used last), purchases, the engagement row's level and score,
#: the latest NPS and CSAT answers, the consent state, and churned (no customer-initiated
#: event for `churn_after` before the newest event time). Final once the horizon has passed
#: the newest event time (the idle rule), since any later event changes the profile.
#: The counted events with their partition's horizon and newest event time (recorded by the
#: stream; the newest stored event if that is later, as between a step's two writes), and
#: whether each is a customer-initiated event within the profile window ending there.
_AT_NEWEST = f"""
                SELECT counted.*, p.horizon AS partition_horizon,
                       greatest(p.newest, max(occurred_at) OVER (PARTITION BY source_partition))
                           AS partition_newest,
                       {{initiated}} AS initiated,
                       initiated
                           AND occurred_at > partition_newest - toIntervalMillisecond({{profile_window_ms}})
                           AND occurred_at <= partition_newest AS recent
                FROM ({_COUNTED}) AS counted
                LEFT JOIN {_PARTITIONS} AS p ON p.partition = counted.source_partition"""
PROFILES = f"""
        SELECT c.customer_id AS customer_id, first_seen_at, last_seen_at,
               if(ch.preferred_channel = '', NULL, ch.preferred_channel) AS preferred_channel,
               ch.active_channels AS active_channels,
               arrayMap(h -> countEqual(recent_hours, h), range(24)) AS active_hours,
               arrayMap(d -> countEqual(recent_weekdays, d), range(1, 8)) AS active_weekdays,
               purchases,
               if(e.customer_id = '', '{{lowest_level}}', e.level) AS level,
               if(e.customer_id = '', 0, e.score) AS score,
               latest_nps, latest_csat,
               ifNull(cs.consent, true) AS consent,
               toUInt8(last_interaction_at IS NOT NULL
                       AND last_interaction_at + toIntervalMillisecond({{churn_after_ms}}) < as_of)
                   AS churned,
               toUInt8(ifNull(settled_before > as_of, 0)) AS final,
               as_of
        FROM (
            SELECT customer_id, min(occurred_at) AS first_seen_at, max(occurred_at) AS last_seen_at,
                   countIf(kind = 'purchase') AS purchases,
                   argMaxIf(survey_score, (occurred_at, event_id), survey_type = 'nps') AS latest_nps,
                   argMaxIf(survey_score, (occurred_at, event_id), survey_type = 'csat') AS latest_csat,
                   if(countIf(initiated) > 0, maxIf(occurred_at, initiated), NULL) AS last_interaction_at,
                   groupArrayIf(toHour(occurred_at), recent) AS recent_hours,
                   groupArrayIf(toDayOfWeek(occurred_at), recent) AS recent_weekdays,
                   any(partition_horizon) AS settled_before, any(partition_newest) AS as_of
            FROM ({_AT_NEWEST})
            GROUP BY customer_id
        ) AS c
        LEFT JOIN (
            SELECT customer_id, argMax(channel, (events, latest_at, latest_id)) AS preferred_channel,
                   arraySort(groupArray(channel)) AS active_channels
            FROM (
                SELECT customer_id, channel, count() AS events, max((occurred_at, event_id)).1 AS latest_at,
                       max((occurred_at, event_id)).2 AS latest_id
                FROM ({_AT_NEWEST})
                WHERE recent
                GROUP BY customer_id, channel
            )
            GROUP BY customer_id
        ) AS ch ON ch.customer_id = c.customer_id
        LEFT JOIN (SELECT customer_id, level, score FROM {{db}}.engagement FINAL) AS e
            ON e.customer_id = c.customer_id
        LEFT JOIN (
            SELECT customer_id, argMax(consent_analytics, (occurred_at, event_id)) AS consent
            FROM {{db}}.touchpoints FINAL WHERE kind = 'consent_updated' GROUP BY customer_id
        ) AS cs ON cs.customer_id = c.customer_id
        SETTINGS join_use_nulls = 0"""

VIEWS: dict[str, str] = {
    **{name: query.replace("{where}", "") for name, query in _HOURLY.items()},
    **{f"{name}_settled": query.replace("{where}", "WHERE final") for name, query in _HOURLY.items()},
    "response_times_rolling": ROLLING,
    "journeys": JOURNEYS,
    "customer_profiles": PROFILES,
    # The events the behaviour views count, with whether each is the customer's own action.
    "counted_touchpoints": f"SELECT *, {{initiated}} AS initiated FROM ({_COUNTED})",
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


def migrations(database: str, config: MetricsConfig | None = None) -> list[str]:
    """The statements that bring `database` to this version; the views take their windows
    and thresholds from `config` (the defaults without one)."""
    config = config or MetricsConfig()
    initiated = "', '".join(sorted(kind.value for kind in CUSTOMER_INITIATED_KINDS))
    values = {
        "db": database,
        "promoter": PROMOTER_MIN,
        "detractor": DETRACTOR_MAX,
        "satisfied": SATISFIED_MIN,
        "dissatisfied": DISSATISFIED_MAX,
        "journey_gap_ms": _millis(config.journey_gap),
        "profile_window_ms": _millis(config.profile_window),
        "churn_after_ms": _millis(config.churn_after),
        "lowest_level": config.levels[0][0],
        "initiated": f"(actor = 'customer' AND kind IN ('{initiated}') "
        "AND (kind NOT IN ('message', 'call') OR direction = 'inbound'))",
    }
    statements = [f"CREATE DATABASE IF NOT EXISTS {database}"]
    for table, body in TABLES.items():
        statements.append(f"CREATE TABLE IF NOT EXISTS {database}.{table} ({body}\n    {_DEDUP}")
    for view, query in VIEWS.items():
        statements.append(f"CREATE OR REPLACE VIEW {database}.{view} AS {query.format(**values)}")
    return statements


def _millis(span: timedelta) -> int:
    return round(span.total_seconds() * 1000)
