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

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

from touchstream.schemas.touchpoint import (
    DETRACTOR_MAX,
    DISSATISFIED_MAX,
    PROMOTER_MIN,
    SATISFIED_MIN,
    Channel,
)
from touchstream.streams.metrics.config import STATUS_KINDS, MetricsConfig
from touchstream.streams.metrics.engagement import CUSTOMER_INITIATED_KINDS
from touchstream.streams.metrics.records import CHURN_SIGNALS

#: Granules of 256 rows: the stream's steps and the maintained tables' computations read a
#: few thousand customers scattered over the key space, one granule each at least, so the
#: rows read are bounded by customers x granule, not by history (8192, the default, made
#: every computation read all of `touchpoints` at 1M events).
_SETTINGS = "SETTINGS non_replicated_deduplication_window = 1000, index_granularity = 256"
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
        team_id Nullable(String),
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
        sla_met Nullable(Bool),
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
        team_id Nullable(String),
        status LowCardinality(String) DEFAULT 'open',
        closed_at Nullable({_TS}),
        {_UPSERT}
    ORDER BY (customer_id, conversation_id)""",
    "conversations": f"""
        conversation_id String,
        customer_id String,
        channel LowCardinality(String),
        team_id Nullable(String),
        status LowCardinality(String),
        opened_at {_TS},
        closed_at Nullable({_TS}),
        closed_without_reply Bool,
        abandoned Bool,
        last_agent_id Nullable(String),
        updated_at {_TS},
        resolution_business_seconds Nullable(Float64),
        {_UPSERT}
    ORDER BY (customer_id, conversation_id)""",
    "sla_events": f"""
        conversation_id String,
        customer_id String,
        metric LowCardinality(String),
        started_at {_TS},
        started_by String,
        channel LowCardinality(String),
        team_id Nullable(String),
        priority LowCardinality(String),
        policy LowCardinality(String),
        target_seconds Float64,
        business Bool,
        due_at Nullable({_TS}),
        status LowCardinality(String),
        met_at Nullable({_TS}),
        breached_at Nullable({_TS}),
        ended_at Nullable({_TS}),
        agent_id Nullable(String),
        updated_at {_TS},
        {_UPSERT}
    PARTITION BY toYYYYMM(started_at)
    ORDER BY (customer_id, conversation_id, metric, started_by)""",
    "late_events": f"""
        event_id String,
        customer_id String,
        channel LowCardinality(String),
        occurred_at {_TS},
        horizon {_TS},
        lateness_seconds Float64,
        final UInt8 DEFAULT 1,
        detected_at {_TS} DEFAULT now64(3),
        restated_at Nullable({_TS})
    ) ENGINE = ReplacingMergeTree(detected_at)
    ORDER BY (customer_id, event_id)""",
    "erasures": f"""
        request_event_id String,
        requested_at {_TS},
        erased_at {_TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(erased_at)
    ORDER BY request_event_id""",
    # Per maintained table (sinks.maintained), the fingerprint of the definition it was made by.
    "maintained_definitions": f"""
        name String,
        fingerprint String,
        written_at {_TS} DEFAULT now64(3)
    ) ENGINE = ReplacingMergeTree(written_at)
    ORDER BY name""",
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
        FROM {{db}}.responses_by_hour FINAL
        ARRAY JOIN [('1h', 3600), ('24h', 86400), ('7d', 604800)] AS w
        WHERE replied_at > (SELECT max(newest) FROM {{db}}.stream_horizons) - toIntervalSecond(w.2)
          AND replied_at <= (SELECT max(newest) FROM {{db}}.stream_horizons)
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
        FROM (SELECT * FROM {db}.responses_by_hour FINAL {where})
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
            SELECT customer_id, event_id, channel, kind, direction, actor, conversation_id, agent_id, team_id,
                   survey_type, survey_score, consent_analytics, attributes, occurred_at, source_partition,
                   last_value(consent_analytics) OVER (
                       PARTITION BY customer_id ORDER BY occurred_at, event_id
                       ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS analytics
            FROM {db}.touchpoints FINAL
            WHERE {scope}
              AND (customer_id, event_id) NOT IN (
                  SELECT customer_id, event_id FROM {db}.late_events FINAL
                  WHERE {scope} AND restated_at IS NULL)
        )
        WHERE ifNull(analytics, true) AND kind NOT IN ('consent_updated', 'erasure_requested')"""
PARTITION_CLOCKS = """(
            SELECT partition, max(horizon) AS horizon, max(newest) AS newest
            FROM {db}.stream_horizons GROUP BY partition)"""


def _survey_class(survey_type: str, score: str) -> str:
    """SQL for an answer's class (SPEC §5b), the thresholds left as `{promoter}`... to fill."""
    return f"""multiIf(
            {survey_type} = 'nps' AND {score} >= {{promoter}}, 'promoter',
            {survey_type} = 'nps' AND {score} <= {{detractor}}, 'detractor',
            {survey_type} = 'nps', 'passive',
            {score} >= {{satisfied}}, 'satisfied',
            {score} <= {{dissatisfied}}, 'dissatisfied',
            'neutral')"""


def _gap_runs(source: str, partition: str, gap_ms: str, column: str) -> str:
    """`source` with `column`: the number of the run each row is in, per `partition` in
    (occurred_at, event_id) order, a run ending where the next row is more than `gap_ms`
    (SQL) milliseconds later: journeys, and the stream's derived conversations."""
    return f"""
            SELECT * EXCEPT opens,
                   sum(opens) OVER (PARTITION BY {partition} ORDER BY occurred_at, event_id
                                    ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS {column}
            FROM (
                SELECT *, toUInt64(row_number() OVER w = 1
                                   OR dateDiff('millisecond', lagInFrame(occurred_at) OVER w, occurred_at)
                                      > {gap_ms}) AS opens
                FROM ({source})
                WINDOW w AS (PARTITION BY {partition} ORDER BY occurred_at, event_id
                             ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
            )"""


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
    _survey_class(
        "argMaxIf(survey_type, (occurred_at, event_id), survey_type IS NOT NULL)",
        "argMaxIf(survey_score, (occurred_at, event_id), survey_type IS NOT NULL)",
    )
},
                       countIf(kind = 'ticket_opened') > 0, 'ticket',
                       'none') AS outcome,
               toUInt8(ifNull(max(occurred_at) + toIntervalMillisecond({{journey_gap_ms}})
                              < any(partition_horizon), 0)) AS final
        FROM ({
    _gap_runs("SELECT * FROM {db}.counted_touchpoints", "customer_id", "{journey_gap_ms}", "journey")
})
        GROUP BY customer_id, journey"""

#: The counted events with their partition's horizon and newest event time (recorded by the
#: stream; the newest stored event if that is later, as between a step's two writes), and
#: whether each is a customer-initiated event within the profile window ending at the
#: customer's last counted event.
_AT_NEWEST = f"""
                SELECT counted.*, p.horizon AS partition_horizon,
                       greatest(p.newest, max(occurred_at) OVER (PARTITION BY source_partition))
                           AS partition_newest,
                       {{initiated}} AS initiated,
                       initiated
                           AND occurred_at > max(occurred_at) OVER (PARTITION BY customer_id)
                                             - toIntervalMillisecond({{profile_window_ms}}) AS recent
                FROM ({_COUNTED}) AS counted
                LEFT JOIN {PARTITION_CLOCKS} AS p ON p.partition = counted.source_partition"""
#: Customer profiles (SPEC §5b): first and last seen, the channels and the UTC hours and
#: weekdays (Monday first) of the customer's own (customer-initiated) events over the
#: profile window ending at their last counted event, the preferred channel (the most such
#: events; ties: the one used last), purchases, the engagement row's level and score, the
#: latest NPS and CSAT answers, the consent state, and churned (no customer-initiated event
#: for `churn_after` before the partition's newest event time). The windows end at the
#: customer's own last event, so a profile changes only with the customer's events, their
#: engagement row and their churn instant, never with other customers' traffic: it is
#: maintained, not recomputed. Final once the horizon has passed the last event, the
#: engagement row is final, and churned reads the same at the horizon as at the newest
#: event time.
PROFILES = """
        SELECT c.customer_id AS customer_id, first_seen_at, last_seen_at,
               if(ch.preferred_channel = '', NULL, ch.preferred_channel) AS preferred_channel,
               ch.active_channels AS active_channels,
               arrayMap(h -> countEqual(recent_hours, h), range(24)) AS active_hours,
               arrayMap(d -> countEqual(recent_weekdays, d), range(1, 8)) AS active_weekdays,
               purchases,
               if(e.customer_id = '', '{lowest_level}', e.level) AS level,
               if(e.customer_id = '', 0, e.score) AS score,
               latest_nps, latest_csat,
               ifNull(cs.consent, true) AS consent,
               last_interaction_at + toIntervalMillisecond({churn_after_ms}) AS churns_at,
               toUInt8(ifNull(churns_at < as_of, 0)) AS churned,
               toUInt8(ifNull(last_seen_at < settled_before
                              AND (churns_at IS NULL OR churns_at < settled_before OR churns_at >= as_of)
                              AND (e.customer_id = '' OR e.final = 1), 0)) AS final,
               recent_slots
        FROM (
            SELECT customer_id, min(occurred_at) AS first_seen_at, max(occurred_at) AS last_seen_at,
                   countIf(kind = 'purchase') AS purchases,
                   argMaxIf(survey_score, (occurred_at, event_id), survey_type = 'nps') AS latest_nps,
                   argMaxIf(survey_score, (occurred_at, event_id), survey_type = 'csat') AS latest_csat,
                   if(countIf(initiated) > 0, maxIf(occurred_at, initiated), NULL) AS last_interaction_at,
                   groupArrayIf(toHour(occurred_at), recent) AS recent_hours,
                   groupArrayIf(toDayOfWeek(occurred_at), recent) AS recent_weekdays,
                   arrayMap(h -> toUInt8(h), groupArrayIf(
                       (toDayOfWeek(occurred_at) - 1) * 24 + toHour(occurred_at), recent)) AS recent_slots,
                   any(partition_horizon) AS settled_before, any(partition_newest) AS as_of
            FROM {db}.counted_touchpoints
            GROUP BY customer_id
        ) AS c
        LEFT JOIN (
            SELECT customer_id, argMax(channel, (events, latest_at, latest_id)) AS preferred_channel,
                   arraySort(groupArray(channel)) AS active_channels
            FROM (
                SELECT customer_id, channel, count() AS events, max((occurred_at, event_id)).1 AS latest_at,
                       max((occurred_at, event_id)).2 AS latest_id
                FROM {db}.counted_touchpoints
                WHERE recent
                GROUP BY customer_id, channel
            )
            GROUP BY customer_id
        ) AS ch ON ch.customer_id = c.customer_id
        LEFT JOIN (SELECT customer_id, level, score, final FROM {db}.engagement FINAL WHERE {scope}) AS e
            ON e.customer_id = c.customer_id
        LEFT JOIN (
            SELECT customer_id, argMax(consent_analytics, (occurred_at, event_id)) AS consent
            FROM {db}.touchpoints FINAL WHERE {scope} AND kind = 'consent_updated' GROUP BY customer_id
        ) AS cs ON cs.customer_id = c.customer_id
        SETTINGS join_use_nulls = 0"""

#: The counted events (`_AT_NEWEST`) with their conversation as the stream derives it (SPEC
#: §5: the conversation_id, else the customer's run on one channel with gaps of at most the
#: channel's inactivity timeout, named `derived:<channel>:<first event_id>`), and whether each
#: is a customer message or a reply.
#: Derived conversations are runs per customer and channel among the events without an id.
_DERIVED = "customer_id, channel, conversation_id IS NULL"
_CONVERSATIONS = f"""
        SELECT * EXCEPT run,
               ifNull(conversation_id, concat('derived:', channel, ':', first_value(event_id) OVER (
                   PARTITION BY {_DERIVED}, run
                   ORDER BY occurred_at, event_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)))
                   AS conversation,
               direction = 'inbound' AND kind IN ('message', 'call', 'ticket_opened') AS customer_message,
               {{reply}} AS reply
        FROM ({_gap_runs(_AT_NEWEST, _DERIVED, "{inactivity_ms}", "run")})"""

#: Tickets (SPEC §5b): conversations with a `ticket_opened`, from the first one on. A
#: customer message or `ticket_opened` after a resolution reopens it; the status is the
#: latest of those moves. The first response is the conversation's first response record,
#: its seconds from the stored (millisecond) times. A latest-state row: final once every
#: event of the conversation is before the horizon.
TICKETS = """
        SELECT t.conversation_id AS conversation_id, t.customer_id AS customer_id, channel, category,
               priority, opened_at, r.replied_at AS first_response_at,
               r.response_seconds AS first_response_seconds, r.agent_id AS first_response_agent_id,
               first_resolved_at, resolved_at, reopened, status,
               dateDiff('millisecond', opened_at, first_resolved_at) / 1000 AS first_resolution_seconds,
               if(status = 'resolved', dateDiff('millisecond', opened_at, resolved_at) / 1000, NULL)
                   AS full_resolution_seconds,
               resolved_on_first_reply,
               r.response_seconds <= {sla_of_channel} AS within_sla,
               final
        FROM (
            SELECT customer_id, conversation AS conversation_id,
                   argMin(channel, key) AS channel,
                   argMin(attributes['category'], key) AS given_category,
                   if(given_category = '', 'uncategorized', given_category) AS category,
                   argMin(attributes['priority'], key) AS given_priority,
                   if(given_priority = '', 'normal', given_priority) AS priority,
                   min(occurred_at) AS opened_at,
                   countIf(kind = 'ticket_resolved') > 0 AS was_resolved,
                   if(was_resolved, minIf(occurred_at, kind = 'ticket_resolved'), NULL) AS first_resolved_at,
                   if(was_resolved, maxIf(occurred_at, kind = 'ticket_resolved'), NULL) AS resolved_at,
                   arrayMap(m -> m.3, arraySort(groupArrayIf(
                       (occurred_at, event_id, kind = 'ticket_resolved'),
                       kind = 'ticket_resolved' OR customer_message OR kind = 'ticket_opened'))) AS moves,
                   toUInt32(arrayCount((a, b) -> a AND NOT b, arrayPopBack(moves), arrayPopFront(moves)))
                       AS reopened,
                   if(moves[-1], 'resolved', 'open') AS status,
                   minIf(key, kind = 'ticket_resolved') AS first_resolution,
                   was_resolved AND arrayCount(k -> k < first_resolution, groupArrayIf(key, reply)) = 1
                       AS resolved_on_first_reply,
                   toUInt8(ifNull(max(ended_at) < any(partition_horizon), 0)) AS final
            FROM (
                SELECT *, (occurred_at, event_id) AS key,
                       minIf((occurred_at, event_id), kind = 'ticket_opened')
                           OVER (PARTITION BY customer_id, conversation) AS opening,
                       countIf(kind = 'ticket_opened')
                           OVER (PARTITION BY customer_id, conversation) AS openings,
                       max(occurred_at) OVER (PARTITION BY customer_id, conversation) AS ended_at
                FROM {db}.counted_touchpoints
            )
            WHERE openings > 0 AND key >= opening
            GROUP BY customer_id, conversation
        ) AS t
        LEFT JOIN (
            SELECT customer_id, conversation_id, replied_at, agent_id,
                   dateDiff('millisecond', customer_message_at, replied_at) / 1000 AS response_seconds
            FROM {db}.responses FINAL WHERE {scope} AND is_first_response
        ) AS r ON r.customer_id = t.customer_id AND r.conversation_id = t.conversation_id
        SETTINGS join_use_nulls = 1"""

#: Weekly ticket volume per category (SPEC §5b; ISO weeks, UTC, `week` their Monday), every
#: week from the first ticket's to the newest event's; `previous_mean` the mean of the
#: previous 4 weeks, known once 4 weeks precede it; a *recurring incident* is a week with at
#: least 5 tickets and at least twice that mean.
TICKET_WEEKS = """
        SELECT category, week, tickets, previous_mean,
               toUInt8(previous_mean IS NOT NULL AND tickets >= 5 AND tickets >= 2 * previous_mean)
                   AS recurring
        FROM (
            SELECT category, week, tickets,
                   if(count() OVER previous = 4, sum(tickets) OVER previous / 4, NULL) AS previous_mean
            FROM (
                SELECT category, first + toIntervalWeek(i) AS week,
                       toUInt64(if(indexOf(weeks, week) = 0, 0, counts[indexOf(weeks, week)])) AS tickets
                FROM (
                    SELECT category, groupArray(week) AS weeks, groupArray(tickets) AS counts,
                           any(first_week) AS first, any(last_week) AS last
                    FROM (
                        SELECT category, week, tickets, min(week) OVER () AS first_week,
                               greatest(max(week) OVER (), toMonday((SELECT max(newest)
                                                                     FROM {db}.stream_horizons))) AS last_week
                        FROM (
                            SELECT category, toMonday(opened_at) AS week, count() AS tickets
                            FROM {db}.tickets FINAL GROUP BY category, week
                        )
                    )
                    GROUP BY category
                )
                ARRAY JOIN range(toUInt32(dateDiff('week', first, last) + 1)) AS i
            )
            WINDOW previous AS (PARTITION BY category ORDER BY week ROWS BETWEEN 4 PRECEDING AND 1 PRECEDING)
        )"""

#: SPEC §5b's churn signals of each (customer_id, at, last_interaction_at) of `{points}`: a
#: conversation waiting at `at`, a response slower than its channel's SLA in the lookback
#: up to the last interaction, the latest NPS / CSAT answer at `at` a detractor's /
#: dissatisfied one, a ticket open at `at`. Signal names in SPEC order.
_SIGNALS = """
        SELECT c.customer_id AS customer_id, c.at AS at,
               arrayFilter(x -> x != '', [
                   if(unanswered, 'unanswered', ''), if(s.slow = 1, 'slow_response', ''),
                   if(ifNull(nps <= {detractor}, 0), 'detractor', ''),
                   if(ifNull(csat <= {dissatisfied}, 0), 'dissatisfied', ''),
                   if(open_ticket, 'open_ticket', '')]) AS signals
        FROM (
            SELECT customer_id, at, max(waiting) AS unanswered, max(open) AS open_ticket,
                   argMaxIf(nps, nps_key, has_nps) AS nps, argMaxIf(csat, csat_key, has_csat) AS csat
            FROM (
                SELECT pt.customer_id AS customer_id, pt.at AS at, e.conversation,
                       argMaxIf(e.customer_message, (e.occurred_at, e.event_id),
                                e.customer_message OR e.reply) AS waiting,
                       countIf(e.kind = 'ticket_opened') > 0
                           AND NOT argMaxIf(
                               e.kind = 'ticket_resolved', (e.occurred_at, e.event_id),
                               e.kind IN ('ticket_resolved', 'ticket_opened') OR e.customer_message) AS open,
                       countIf(e.survey_type = 'nps') > 0 AS has_nps,
                       maxIf((e.occurred_at, e.event_id), e.survey_type = 'nps') AS nps_key,
                       argMaxIf(e.survey_score, (e.occurred_at, e.event_id), e.survey_type = 'nps') AS nps,
                       countIf(e.survey_type = 'csat') > 0 AS has_csat,
                       maxIf((e.occurred_at, e.event_id), e.survey_type = 'csat') AS csat_key,
                       argMaxIf(e.survey_score, (e.occurred_at, e.event_id), e.survey_type = 'csat') AS csat
                FROM ({points}) AS pt
                INNER JOIN {db}.counted_touchpoints AS e ON e.customer_id = pt.customer_id
                WHERE e.occurred_at <= pt.at
                GROUP BY pt.customer_id, pt.at, e.conversation
            )
            GROUP BY customer_id, at
        ) AS c
        LEFT JOIN (
            SELECT pt.customer_id AS customer_id, pt.at AS at, 1 AS slow
            FROM ({points}) AS pt
            INNER JOIN (
                SELECT customer_id, channel, replied_at,
                       dateDiff('millisecond', customer_message_at, replied_at) / 1000 AS response_seconds
                FROM {db}.responses FINAL WHERE {scope}
            ) AS r ON r.customer_id = pt.customer_id
            WHERE r.replied_at >= pt.last_interaction_at - toIntervalMillisecond({lookback_ms})
              AND r.replied_at <= pt.last_interaction_at
              AND r.response_seconds > {sla_of_channel}
            GROUP BY pt.customer_id, pt.at
        ) AS s ON s.customer_id = c.customer_id AND s.at = c.at"""

#: Churns (SPEC §5b): a customer-initiated event followed by none for more than `churn_after`
#: churns at last + churn_after, up to the partition's newest event time; the next one is the
#: return. A latest-state row: final once the horizon has passed the churn and the return.
_CHURN_POINTS = """
            SELECT customer_id, occurred_at AS last_interaction_at,
                   occurred_at + toIntervalMillisecond({churn_after_ms}) AS churned_at,
                   next_at AS returned_at, partition_horizon, churned_at AS at
            FROM (
                SELECT customer_id, occurred_at, partition_horizon, partition_newest,
                       leadInFrame(toNullable(occurred_at)) OVER (
                           PARTITION BY customer_id ORDER BY occurred_at, event_id
                           ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS next_at
                FROM {db}.counted_touchpoints WHERE initiated
            )
            WHERE if(next_at IS NULL, churned_at < partition_newest, next_at > churned_at)"""
CHURNS = f"""
        SELECT p.customer_id AS customer_id, p.churned_at AS churned_at,
               p.last_interaction_at AS last_interaction_at, p.returned_at AS returned_at,
               if(l.customer_id = '', '{{lowest_level}}', l.level) AS level_at_churn,
               s.signals AS signals,
               toUInt8(ifNull(p.churned_at < p.partition_horizon
                              AND (p.returned_at IS NULL OR p.returned_at < p.partition_horizon), 0)) AS final
        FROM ({_CHURN_POINTS}) AS p
        LEFT JOIN ({_SIGNALS.replace("{points}", _CHURN_POINTS)}) AS s
            ON s.customer_id = p.customer_id AND s.at = p.churned_at
        LEFT JOIN (
            SELECT pt.customer_id AS customer_id, pt.churned_at AS churned_at,
                   argMax(c.level, (c.changed_at, indexOf({{levels}}, c.level))) AS level
            FROM ({_CHURN_POINTS}) AS pt
            INNER JOIN (
                SELECT customer_id, level, changed_at FROM {{db}}.engagement_changes FINAL WHERE {{scope}}
            ) AS c
                ON c.customer_id = pt.customer_id
            WHERE c.changed_at <= pt.churned_at
            GROUP BY pt.customer_id, pt.churned_at
        ) AS l ON l.customer_id = p.customer_id AND l.churned_at = p.churned_at
        SETTINGS join_use_nulls = 0"""

#: Per customer active at a calendar month's start (UTC): a customer-initiated event in the
#: `churn_after` before it; `at` is that instant, `last_interaction_at` their latest such event.
_MONTH_POINTS = """
            SELECT customer_id, at, max(occurred_at) AS last_interaction_at
            FROM (
                SELECT customer_id, occurred_at, partition_newest,
                       arrayJoin(arrayMap(
                           i -> toDateTime64(addMonths(toStartOfMonth(occurred_at), i), 3, 'UTC'),
                           range({churn_months}))) AS at
                FROM {db}.counted_touchpoints WHERE initiated
            )
            WHERE at >= occurred_at AND at < occurred_at + toIntervalMillisecond({churn_after_ms})
              AND at <= partition_newest
            GROUP BY customer_id, at"""
#: Per customer and calendar month (UTC): whether they were active at its start (with the
#: signals they had at that instant, evaluated like a churn's) and whether they churned in it;
#: months with neither have no row. `churn_rates` adds them up.
CUSTOMER_MONTHS = f"""
        SELECT if(s.customer_id = '', c.customer_id, s.customer_id) AS customer_id,
               if(s.customer_id = '', c.month, toDate(s.at)) AS month,
               toUInt8(s.customer_id != '') AS active, toUInt8(c.customer_id != '') AS churned,
               s.signals AS signals
        FROM ({_SIGNALS.replace("{points}", _MONTH_POINTS)}) AS s
        FULL OUTER JOIN (
            SELECT DISTINCT customer_id, toStartOfMonth(churned_at) AS month FROM ({_CHURN_POINTS})
        ) AS c ON c.customer_id = s.customer_id AND c.month = toDate(s.at)
        SETTINGS join_use_nulls = 0"""
#: Churn rates (SPEC §5b) per calendar month (UTC) from the first counted event's to the newest
#: event time's: overall (`signal` = ''), customers active at the month's start and customers who
#: churned in it; per signal, customers active at the start with the signal (evaluated at that
#: instant) and those of them who churned in the month. Final once the month has ended before
#: every partition's horizon. An aggregate of `customer_months`: one row per customer and month.
CHURN_RATES = f"""
        SELECT g.month AS month, g.signal AS signal, n.customers AS customers, n.churned AS churned,
               if(customers = 0, NULL, churned / customers) AS churn_rate,
               toUInt8(ifNull(toDateTime64(addMonths(g.month, 1), 3, 'UTC')
                              <= (SELECT min(horizon) FROM {PARTITION_CLOCKS}), 0)) AS final
        FROM (
            SELECT arrayJoin(arrayMap(i -> addMonths(first, i),
                                      range(toUInt32(dateDiff('month', first, last) + 1)))) AS month,
                   arrayJoin(['', {{signal_names}}]) AS signal
            FROM (
                SELECT toStartOfMonth(min(first_seen_at)) AS first,
                       toStartOfMonth(greatest(max(last_seen_at),
                                               (SELECT max(newest) FROM {{db}}.stream_horizons))) AS last
                FROM {{db}}.customer_profiles FINAL HAVING count() > 0
            )
        ) AS g
        LEFT JOIN (
            SELECT month, signal,
                   countIf(active AND (signal = '' OR has(signals, signal))) AS customers,
                   countIf(churned AND (signal = '' OR (active AND has(signals, signal)))) AS churned
            FROM {{db}}.customer_months FINAL
            ARRAY JOIN ['', {{signal_names}}] AS signal
            GROUP BY month, signal
        ) AS n ON n.month = g.month AND n.signal = g.signal
        SETTINGS join_use_nulls = 0"""

#: The counted events with what interaction quality (SPEC §5b) reads of each: its
#: conversation's team at it (the latest team_id seen in the conversation up to it), for a
#: reply whether its own response record met the SLA policy's response target it ended
#: (`sla_met`; no target: met), and for every event the first later reply of its
#: conversation that made a response record (instant, met, earliest message answered) and
#: the first later bot message.
_INTERACTIONS = """
        SELECT t.*,
               if(r.reply_event_id = '', NULL, r.met) AS reply_met,
               last_value(team_id) OVER upto AS team,
               first_value(if(r.reply_event_id = '', NULL, t.occurred_at)) OVER later AS answer_at,
               first_value(if(r.reply_event_id = '', NULL, r.met)) OVER later AS answer_met,
               first_value(if(r.reply_event_id = '', NULL, r.customer_message_at)) OVER later AS answer_from,
               first_value(if(t.direction = 'outbound' AND t.actor = 'bot' AND t.kind NOT IN {status_kinds},
                              t.occurred_at, NULL)) OVER later AS bot_at
        FROM {db}.counted_touchpoints AS t
        LEFT JOIN (
            SELECT customer_id, reply_event_id, customer_message_at, ifNull(sla_met, true) AS met
            FROM {db}.responses FINAL WHERE {scope}
        ) AS r ON r.customer_id = t.customer_id AND r.reply_event_id = t.event_id
        WINDOW upto AS (PARTITION BY t.customer_id, t.conversation ORDER BY t.occurred_at, t.event_id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW),
               later AS (PARTITION BY t.customer_id, t.conversation ORDER BY t.occurred_at, t.event_id
                         ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
        SETTINGS join_use_nulls = 0"""
#: A touchpoint's interaction quality at its outcome `o` (SPEC §5b).
_QUALITY = """multiIf(
                       e.customer_message,
                       multiIf(e.answer_from <= e.occurred_at AND e.answer_at <= o.outcome_at,
                               if(e.answer_met, 'answered_in_sla', 'answered_late'),
                               e.bot_at <= o.outcome_at, 'bot_only',
                               'unanswered'),
                       e.reply_met IS NOT NULL,
                       if(e.reply_met, 'in_sla', 'late'),
                       'none')"""
#: Outcome touchpoints (SPEC §5b): the counted events in the lookback before each survey
#: answer (not the answer itself) and up to each churn's last interaction (inclusive), in
#: (occurred_at, event_id) order, survey answers left out (measurements, not interactions),
#: with their team, interaction quality and weight under each model. Final once the horizon
#: has passed the answer / the churn. `first_in_<group>` marks the outcome's first touchpoint
#: in each grouping of `ATTRIBUTION_GROUPINGS`: summing it counts the outcomes a group was
#: part of (`attribution_totals`).
OUTCOME_TOUCHPOINTS = f"""
        SELECT outcome_id, outcome_type, outcome_class, outcome_at, customer_id, event_id, channel, kind,
               agent_id, team_id, quality, position, n,
               toFloat64(position = n) AS weight_last,
               toFloat64(position = 1) AS weight_first,
               1 / n AS weight_linear,
               decay / sum(decay) OVER outcome AS weight_time_decay,
               multiIf(n <= 2, 1 / n, position IN (1, n), 0.4, 0.2 / (n - 2)) AS weight_position,
               final,
               toUInt8(row_number() OVER (PARTITION BY customer_id, outcome_id, channel, kind, agent_id
                                          ORDER BY position) = 1) AS first_in_group,
               toUInt8(row_number() OVER (PARTITION BY customer_id, outcome_id, channel
                                          ORDER BY position) = 1) AS first_in_channel,
               toUInt8(row_number() OVER (PARTITION BY customer_id, outcome_id, kind
                                          ORDER BY position) = 1) AS first_in_kind,
               toUInt8(row_number() OVER (PARTITION BY customer_id, outcome_id, agent_id
                                          ORDER BY position) = 1) AS first_in_agent,
               toUInt8(row_number() OVER (PARTITION BY customer_id, outcome_id, team_id
                                          ORDER BY position) = 1) AS first_in_team,
               toUInt8(row_number() OVER (PARTITION BY customer_id, outcome_id, quality
                                          ORDER BY position) = 1) AS first_in_quality
        FROM (
            SELECT o.outcome_id AS outcome_id, o.outcome_type AS outcome_type,
                   o.outcome_class AS outcome_class,
                   o.outcome_at AS outcome_at, o.customer_id AS customer_id, e.event_id AS event_id,
                   e.channel AS channel, e.kind AS kind, e.agent_id AS agent_id, e.team AS team_id,
                   {_QUALITY} AS quality,
                   row_number() OVER outcome AS position,
                   count() OVER (PARTITION BY o.customer_id, o.outcome_id) AS n,
                   pow(2, -dateDiff('millisecond', e.occurred_at, o.outcome_at) / 86400000) AS decay,
                   o.final AS final
            FROM (
                SELECT event_id AS outcome_id, survey_type AS outcome_type,
                       {_survey_class("survey_type", "survey_score")} AS outcome_class,
                       occurred_at AS outcome_at, customer_id, 0 AS inclusive,
                       toUInt8(ifNull(occurred_at < partition_horizon, 0)) AS final
                FROM {{db}}.counted_touchpoints WHERE survey_type IS NOT NULL
                UNION ALL
                SELECT concat('churn:', customer_id, ':', replaceOne(toString(churned_at), ' ', 'T'), 'Z'),
                       'churn', 'churned', last_interaction_at, customer_id, 1,
                       toUInt8(ifNull(churned_at < partition_horizon, 0))
                FROM ({_CHURN_POINTS})
            ) AS o
            INNER JOIN ({_INTERACTIONS}) AS e ON e.customer_id = o.customer_id
            WHERE e.occurred_at >= o.outcome_at - toIntervalMillisecond({{lookback_ms}})
              AND (e.occurred_at < o.outcome_at OR (o.inclusive = 1 AND e.occurred_at = o.outcome_at))
              AND e.event_id != o.outcome_id AND e.kind != 'survey_response'
            WINDOW outcome AS (PARTITION BY o.customer_id, o.outcome_id ORDER BY e.occurred_at, e.event_id
                               ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
        )
        WINDOW outcome AS (PARTITION BY customer_id, outcome_id)"""


#: Outcome classes that count as bad in the attribution view (SPEC §5b).
BAD_OUTCOMES = ("detractor", "dissatisfied", "churned")
ATTRIBUTION_MODELS = ("last", "first", "linear", "time_decay", "position")
#: Weights are summed as integers in these units, so that a row added and later taken
#: away again cancels exactly.
WEIGHT_UNITS = 1_000_000_000
#: The groupings of the attribution view (SPEC §5b): per grouping, its channel, kind, agent,
#: team and interaction quality (blank where it does not group by them) and the flag that
#: counts an outcome once per group; `all` is every outcome.
ATTRIBUTION_GROUPINGS = {
    "channel, kind and agent": ("channel", "kind", "agent", "''", "''", "first_in_group"),
    "channel": ("channel", "''", "''", "''", "''", "first_in_channel"),
    "kind": ("''", "kind", "''", "''", "''", "first_in_kind"),
    "agent": ("''", "''", "agent", "''", "''", "first_in_agent"),
    "team": ("''", "''", "''", "team", "''", "first_in_team"),
    "quality": ("''", "''", "''", "''", "quality", "first_in_quality"),
    "all": ("''", "''", "''", "''", "''", "toUInt8(position = 1)"),
}
#: The columns that name a group in `attribution_totals`.
ATTRIBUTION_GROUP = ("grouping", "channel", "kind", "agent", "team", "quality")
_GROUPINGS = ", ".join(f"('{name}', {', '.join(g)})" for name, g in ATTRIBUTION_GROUPINGS.items())
_WEIGHTS = "".join(
    f""",
               sign * toInt64(round(weight_{model} * {WEIGHT_UNITS})) AS {model}_weight,
               sign * bad * toInt64(round(weight_{model} * {WEIGHT_UNITS})) AS {model}_bad_weight"""
    for model in ATTRIBUTION_MODELS
)
#: The attribution view's sums per grouping (SPEC §5b), kept as running totals: a
#: materialized view on `outcome_touchpoints` adds every row written there and takes away
#: every deletion (`is_deleted`), so the totals equal the sums over its live rows, read in
#: milliseconds whatever the history. That holds because every deletion written to
#: `outcome_touchpoints` carries the values of a live row, once: the maintained tables read
#: the rows they replace with `FINAL` (`Maintained.feeds`), and an erasure writes the
#: deletions before its DELETE (`sinks.erasure`). `{source}` is the table (or its `FINAL`
#: for a first fill), with `sign` the row's sign.
ATTRIBUTION_FEED = f"""
        SELECT g.1 AS grouping, g.2 AS channel, g.3 AS kind, g.4 AS agent, g.5 AS team, g.6 AS quality,
               sign * g.7 AS outcomes, sign * g.7 * bad AS bad_outcomes, sign AS touchpoints{_WEIGHTS}
        FROM (
            SELECT weight_last, weight_first, weight_linear, weight_time_decay, weight_position,
                   toInt64(if(is_deleted, -1, 1)) AS sign, toInt64(outcome_class IN {BAD_OUTCOMES}) AS bad,
                   [{_GROUPINGS}] AS groupings
            FROM (SELECT *, ifNull(agent_id, '(none)') AS agent, ifNull(team_id, '(none)') AS team
                  FROM {{source}})
        )
        ARRAY JOIN groupings AS g"""
_WEIGHT_COLUMNS = "".join(
    f",\n        {model}_weight Int64,\n        {model}_bad_weight Int64" for model in ATTRIBUTION_MODELS
)
ATTRIBUTION_TOTALS = f"""CREATE TABLE IF NOT EXISTS {{db}}.attribution_totals (
        grouping LowCardinality(String),
        channel LowCardinality(String),
        kind LowCardinality(String),
        agent String,
        team String,
        quality LowCardinality(String),
        outcomes Int64,
        bad_outcomes Int64,
        touchpoints Int64{_WEIGHT_COLUMNS}
    ) ENGINE = SummingMergeTree ORDER BY ({", ".join(ATTRIBUTION_GROUP)})"""
ATTRIBUTION_TOTALS_FEED = (
    "CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.attribution_totals_feed TO {db}.attribution_totals AS"
    + ATTRIBUTION_FEED.replace("{source}", "{db}.outcome_touchpoints")
)

#: When a customer's maintained rows change by event time alone (no event of theirs): the
#: horizon passing the last event of a conversation (a ticket becomes final), a journey's
#: end plus the gap, a survey answer (its outcome rows), a churn instant or a return (the
#: churn, the profile), and the partition's newest event time passing the churn instant of
#: the last customer-initiated event (a churn appears, the profile reads churned) or
#: reaching a month start within `churn_after` of it (the customer counts as active in that
#: month). `horizon_due` is the earliest such instant the horizon has not passed yet (it
#: passes when horizon > due), `newest_due` the same for the newest event time; a customer
#: with neither has no row. Each step computes the customers whose instant their partition
#: passed (`sinks.maintained`).
ANALYTICS_DUE = """
        SELECT customer_id, any(source_partition) AS source_partition,
               if(countIf(clock = 'horizon' AND instant_at >= horizon) > 0,
                  minIf(instant_at, clock = 'horizon' AND instant_at >= horizon), NULL) AS horizon_due,
               if(countIf(clock = 'newest' AND instant_at >= newest) > 0,
                  minIf(instant_at, clock = 'newest' AND instant_at >= newest), NULL) AS newest_due
        FROM (
            SELECT customer_id, source_partition, horizon, newest, instant.1 AS clock, instant.2 AS instant_at
            FROM (
                SELECT customer_id, source_partition, partition_newest AS newest,
                       toDateTime64(partition_horizon, 6, 'UTC') AS horizon,
                       toDateTime64(occurred_at, 6, 'UTC') AS event_at,
                       event_at + toIntervalMillisecond({journey_gap_ms}) AS journey_end,
                       arrayFilter(x -> x.2 IS NOT NULL, [
                           ('horizon', if(occurred_at = max(occurred_at) OVER conversation, event_at, NULL)),
                           ('horizon', if(next_at IS NULL OR next_at > journey_end, journey_end, NULL)),
                           ('horizon', if(survey_type IS NOT NULL, event_at, NULL))]) AS instants
                FROM (
                    SELECT *, leadInFrame(toNullable(toDateTime64(occurred_at, 6, 'UTC'))) OVER (
                                  PARTITION BY customer_id ORDER BY occurred_at, event_id
                                  ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) AS next_at
                    FROM {db}.counted_touchpoints
                )
                WINDOW conversation AS (PARTITION BY customer_id, conversation)
                UNION ALL
                SELECT customer_id, source_partition, partition_newest,
                       toDateTime64(partition_horizon, 6, 'UTC'), event_at, churn,
                       arrayConcat(
                           if(next_at IS NULL OR next_at > churn, [('horizon', churn)], []),
                           if(previous_at IS NOT NULL AND event_at > previous_churn,
                              [('horizon', event_at)], []),
                           if(next_at IS NULL,
                              arrayConcat([('newest', churn)], arrayMap(
                                  m -> ('newest', m - toIntervalMicrosecond(1)),
                                  arrayFilter(m -> m >= event_at AND m < churn, arrayMap(
                                      i -> toDateTime64(addMonths(toStartOfMonth(occurred_at), i), 6, 'UTC'),
                                      range({churn_months}))))),
                              []))
                FROM (
                    SELECT *, toDateTime64(occurred_at, 6, 'UTC') AS event_at,
                           event_at + toIntervalMillisecond({churn_after_ms}) AS churn,
                           leadInFrame(toNullable(event_at)) OVER initiated_events AS next_at,
                           lagInFrame(toNullable(event_at)) OVER initiated_events AS previous_at,
                           previous_at + toIntervalMillisecond({churn_after_ms}) AS previous_churn
                    FROM {db}.counted_touchpoints
                    WHERE initiated
                    WINDOW initiated_events AS (PARTITION BY customer_id ORDER BY occurred_at, event_id
                                                ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
                )
            )
            ARRAY JOIN instants AS instant
        )
        GROUP BY customer_id
        HAVING horizon_due IS NOT NULL OR newest_due IS NOT NULL"""


#: Social conversations with a customer message (the experience view's panel per network):
#: per conversation, its network (`attributes['network']` of its first event), customer
#: messages, and its first response record's seconds if answered.
SOCIAL_CONVERSATIONS = """
        SELECT c.customer_id AS customer_id, c.conversation AS conversation_id, network, messages,
               r.response_seconds AS first_response_seconds, r.customer_id != '' AS answered
        FROM (
            SELECT customer_id, conversation, countIf(customer_message) AS messages,
                   argMin(if(attributes['network'] = '', 'unknown', attributes['network']), occurred_at)
                       AS network
            FROM {db}.counted_touchpoints
            WHERE channel = 'social'
            GROUP BY customer_id, conversation
            HAVING messages > 0
        ) AS c
        LEFT JOIN (
            SELECT customer_id, conversation_id, response_seconds
            FROM {db}.responses FINAL WHERE {scope} AND is_first_response AND channel = 'social'
        ) AS r ON r.customer_id = c.customer_id AND r.conversation_id = c.conversation
        SETTINGS join_use_nulls = 0"""


@dataclass(frozen=True)
class Maintained:
    """A table of SPEC §5b kept by `sinks.maintained`: `query` gives the rows of the customers
    its `{scope}` condition (on `customer_id`) selects, from their stored events and the
    stream's rows; the table is `ReplacingMergeTree(version, is_deleted)` ordered by `key`,
    its columns those of the query."""

    query: str
    key: str
    #: The running totals a materialized view keeps from this table's inserts (their
    #: deletions must then carry the values of live rows, read with `FINAL`).
    feeds: str | None = None


#: The maintained tables (SPEC §5b "Maintained, not recomputed"), in refresh order. Every row
#: is a function of one customer's stored events, their stream rows (`responses`,
#: `engagement`, `engagement_changes`) and their partition's horizon and newest event time,
#: so refreshing the customers a step touched, and those whose due instant it passed
#: (`ANALYTICS_DUE`), keeps each table equal to its query over all customers.
MAINTAINED: dict[str, Maintained] = {
    "tickets": Maintained(TICKETS, "customer_id, conversation_id"),
    "churn_events": Maintained(CHURNS, "customer_id, churned_at"),
    "outcome_touchpoints": Maintained(
        OUTCOME_TOUCHPOINTS, "customer_id, outcome_id, event_id", feeds="attribution_totals"
    ),
    "journeys": Maintained(JOURNEYS, "customer_id, journey_id"),
    "customer_profiles": Maintained(PROFILES, "customer_id"),
    "customer_months": Maintained(CUSTOMER_MONTHS, "customer_id, month"),
    "social_conversations": Maintained(SOCIAL_CONVERSATIONS, "customer_id, conversation_id"),
    "analytics_due": Maintained(ANALYTICS_DUE, "customer_id"),
}

VIEWS: dict[str, str] = {
    **{name: query.replace("{where}", "") for name, query in _HOURLY.items()},
    **{f"{name}_settled": query.replace("{where}", "WHERE final") for name, query in _HOURLY.items()},
    "response_times_rolling": ROLLING,
    # The events the behaviour views count, with whether each is the customer's own action.
    "counted_touchpoints": _CONVERSATIONS,
    "ticket_weeks": TICKET_WEEKS,
    "churn_rates": CHURN_RATES,
    # Touchpoints are stored as they arrive and never provisional.
    "volumes_hourly": """
        SELECT channel, toStartOfHour(occurred_at) AS hour, kind, direction, count() AS events,
               uniqExact(customer_id) AS customers
        FROM {db}.touchpoints_by_hour FINAL
        GROUP BY channel, hour, kind, direction""",
}


@dataclass(frozen=True)
class Mirror:
    """A copy of `source` ordered by the hour of `time` first (see `MIRRORS`)."""

    source: str
    time: str
    columns: str
    engine: str
    key: str


#: Copies of the tables read by event-time windows (the dashboards' last hour, 24 h, 48 h,
#: 7 d, the per-hour views), ordered by the hour first: a window reads the rows of that
#: window, where the source, ordered by customer, is read a whole month partition at a time.
#: Each has the source's rows and versions, kept by a materialized view on every insert
#: into the source (`{mirror}_feed`), and the source's key after the hour; the hour is that
#: of a column no key changes, so `FINAL` collapses the copy's rows as it does the source's.
#: An erasure deletes from both (`sinks.erasure`).
MIRRORS: dict[str, Mirror] = {
    "touchpoints_by_hour": Mirror(
        "touchpoints",
        "occurred_at",
        "event_id, customer_id, channel, kind, direction, actor, agent_id, occurred_at, ingested_at",
        "ReplacingMergeTree(ingested_at)",
        "customer_id, event_id",
    ),
    "responses_by_hour": Mirror(
        "responses",
        "replied_at",
        "*",
        "ReplacingMergeTree(version, is_deleted)",
        "customer_id, reply_event_id",
    ),
    "engagement_changes_by_hour": Mirror(
        "engagement_changes",
        "changed_at",
        "*",
        "ReplacingMergeTree(version, is_deleted)",
        "customer_id, changed_at, previous_level, level",
    ),
}


def mirror_statements(database: str, name: str) -> list[str]:
    """The statements that create mirror `name` and the view that feeds it."""
    mirror = MIRRORS[name]
    source = f"{database}.{mirror.source}"
    return [
        f"CREATE TABLE IF NOT EXISTS {database}.{name} ENGINE = {mirror.engine} "
        f"PARTITION BY toYYYYMM({mirror.time}) ORDER BY (toStartOfHour({mirror.time}), {mirror.key}) "
        f"SETTINGS index_granularity = 256 EMPTY AS SELECT {mirror.columns} FROM {source}",
        f"CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{name}_feed TO {database}.{name} "
        f"AS SELECT {mirror.columns} FROM {source}",
    ]


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


def _values(database: str, config: MetricsConfig) -> dict[str, object]:
    """What the view and maintained-table templates take: windows and thresholds of `config`."""
    initiated = "', '".join(sorted(kind.value for kind in CUSTOMER_INITIATED_KINDS))
    replies = "', '".join(sorted(actor.value for actor in config.reply_actors))
    status_kinds = "('" + "', '".join(sorted(kind.value for kind in STATUS_KINDS)) + "')"
    return {
        "db": database,
        "promoter": PROMOTER_MIN,
        "detractor": DETRACTOR_MAX,
        "satisfied": SATISFIED_MIN,
        "dissatisfied": DISSATISFIED_MAX,
        "journey_gap_ms": _millis(config.journey_gap),
        "profile_window_ms": _millis(config.profile_window),
        "churn_after_ms": _millis(config.churn_after),
        "lookback_ms": _millis(config.lookback),
        # Month starts within churn_after after an event (each month is at least 28 days).
        "churn_months": math.ceil(config.churn_after / timedelta(days=28)) + 1,
        "signal_names": ", ".join(f"'{signal}'" for signal in CHURN_SIGNALS),
        "lowest_level": config.levels[0][0],
        # Changes at one instant are rises (a decay drop comes strictly before the next event).
        "levels": "[" + ", ".join(f"'{name}'" for name, _ in config.levels) + "]",
        "inactivity_ms": _by_channel({channel: _millis(gap) for channel, gap in config.inactivity.items()}),
        "sla_of_channel": _by_channel(
            {channel: span.total_seconds() for channel, span in config.sla.items()}
        ),
        "reply": f"(direction = 'outbound' AND actor IN ('{replies}') AND kind NOT IN {status_kinds})",
        "status_kinds": status_kinds,
        "initiated": f"(actor = 'customer' AND kind IN ('{initiated}') "
        "AND (kind NOT IN ('message', 'call') OR direction = 'inbound'))",
    }


#: Columns added to a table after its first version, with their types: an existing table
#: gets them at start (`ALTER TABLE ... ADD COLUMN IF NOT EXISTS`), its rows the defaults.
ADDED_COLUMNS: dict[str, list[str]] = {
    "touchpoints": ["team_id Nullable(String) AFTER agent_id"],
    "late_events": [f"restated_at Nullable({_TS}) AFTER detected_at"],
    "responses": ["sla_met Nullable(Bool) AFTER response_business_seconds"],
    "conversations": ["resolution_business_seconds Nullable(Float64) AFTER updated_at"],
    "waiting": [
        "team_id Nullable(String) AFTER updated_at",
        "status LowCardinality(String) DEFAULT 'open' AFTER team_id",
        f"closed_at Nullable({_TS}) AFTER status",
    ],
}


def migrations(database: str, config: MetricsConfig | None = None) -> list[str]:
    """The statements that bring `database`'s event and stream tables to this version."""
    statements = [f"CREATE DATABASE IF NOT EXISTS {database}"]
    for table, body in TABLES.items():
        statements.append(f"CREATE TABLE IF NOT EXISTS {database}.{table} ({body}\n    {_SETTINGS}")
    for table, columns in ADDED_COLUMNS.items():
        added = ", ".join(f"ADD COLUMN IF NOT EXISTS {column}" for column in columns)
        statements.append(f"ALTER TABLE {database}.{table} {added}")
    return statements


def views(database: str, config: MetricsConfig | None = None) -> list[str]:
    """The statements that (re)create the views, with the windows and thresholds of `config`
    (the defaults without one); run after the maintained tables exist."""
    values = _values(database, config or MetricsConfig())
    statements = [
        f"CREATE OR REPLACE VIEW {database}.{view} AS {query.format(**values, scope='1')}"
        for view, query in VIEWS.items()
    ]
    # One customer's counted events, read by the primary key (the Customer 360):
    # `SELECT ... FROM customer_counted_touchpoints(customer = 'id')`.
    one = _CONVERSATIONS.format(**values, scope="customer_id = {customer:String}")
    statements.append(f"CREATE OR REPLACE VIEW {database}.customer_counted_touchpoints AS {one}")
    return statements


def counted_query(database: str, config: MetricsConfig | None = None) -> str:
    """The counted events with their conversations (the `counted_touchpoints` view), with
    `{scope}` left for the condition on `customer_id` that selects the customers."""
    return _CONVERSATIONS.format(**_values(database, config or MetricsConfig()), scope="{scope}")


def maintained_queries(
    database: str, config: MetricsConfig | None = None, counted: str | None = None
) -> dict[str, str]:
    """Per maintained table, its query with the windows and thresholds of `config`, and
    `{scope}` left for the condition on `customer_id` that selects the customers to compute.
    The counted events come from the table `counted` (holding those of the customers in
    scope, see `sinks.maintained`), or are computed inline without one."""
    values = _values(database, config or MetricsConfig())
    source = f"{database}.{counted}" if counted else f"({_CONVERSATIONS})"
    return {
        table: maintained.query.replace("{db}.counted_touchpoints", source).format(**values, scope="{scope}")
        for table, maintained in MAINTAINED.items()
    }


def create_maintained(database: str, table: str, query: str) -> str:
    """The statement that creates a maintained table: its columns those of `query`, then the
    version and deleted flag of an upsert."""
    return (
        f"CREATE TABLE IF NOT EXISTS {database}.{table} "
        f"ENGINE = ReplacingMergeTree(version, is_deleted) ORDER BY ({MAINTAINED[table].key}) "
        f"SETTINGS index_granularity = 256 "
        f"EMPTY AS SELECT *, toUInt64(0) AS version, toUInt8(0) AS is_deleted "
        f"FROM ({query.replace('{scope}', '0')})"
    )


def _by_channel(values: Mapping[Channel, float]) -> str:
    """A SQL expression of `channel`: its value in `values`, NULL for any other channel."""
    cases = ", ".join(f"channel = '{channel.value}', {value}" for channel, value in sorted(values.items()))
    return f"multiIf({cases}, NULL)" if cases else "NULL"


def _millis(span: timedelta) -> int:
    return round(span.total_seconds() * 1000)
