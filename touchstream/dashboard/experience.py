"""The experience view (SPEC §8) and the ops page's charts, read from the SPEC §5b views.

`experience()` answers: how many customers churn and why (churn rate per month, overall
and per signal), how NPS and CSAT move, which interactions precede bad experiences (the
attributed bad share and its lift per channel, kind, agent, team and interaction quality
under each attribution model, with a Wilson interval), ticket trends and recurring
incidents, SLA attainment, first-response buckets, and social conversations per network.
`charts()` gives the ops page's volume per channel and response-time p50/p90 per hour.
Both read every event of the window, so the page reads them at most every 15 s (charts) or
30 s (the experience view). Every query here is in docs/clickhouse.md, word for word (a
test checks it).
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any

from touchstream.dashboard.panels import Fetch, clean, column, records, reference, table, within_bounds
from touchstream.sinks.ddl import ATTRIBUTION_MODELS

CHURN_RATES = """
SELECT month, signal, customers, churned, round(100 * churn_rate, 1) AS churn_percent,
       round(100 * anyIf(churn_rate, signal = '') OVER (PARTITION BY month), 1) AS overall_percent
FROM churn_rates
ORDER BY month, signal"""
SURVEY_TREND = """
SELECT toMonday(occurred_at) AS week,
       round(100 * (countIf(survey_type = 'nps' AND score >= 9) - countIf(survey_type = 'nps' AND score <= 6))
             / nullIf(countIf(survey_type = 'nps'), 0), 1) AS nps,
       round(100 * countIf(survey_type = 'csat' AND score >= 4) / nullIf(countIf(survey_type = 'csat'), 0), 1)
           AS csat_percent
FROM surveys FINAL
WHERE occurred_at > (SELECT max(occurred_at) FROM touchpoints) - INTERVAL 13 WEEK
GROUP BY week
ORDER BY week"""
#: Per group (channel, kind, agent, team, interaction quality, each alone, or channel, kind
#: and agent: `grouping`), the attributed bad share under each model (percent) and its lift
#: (the share / the overall share of bad outcomes, which is the same under every model: the
#: weights sum to 1 per outcome), and the 95% Wilson interval of the share of the group's
#: outcomes that were bad. Read from the running totals of `outcome_touchpoints`
#: (`sinks.ddl.ATTRIBUTION_TOTALS`): a few rows per group.
#: Attribution rows need this many outcomes behind them to be shown.
LEAST_OUTCOMES = 30
#: z of a two-sided 95% interval.
Z95 = 1.96
_SHARES = ",\n".join(
    f"       round(100 * sum({model}_bad_weight) / nullIf(sum({model}_weight), 0), 1) AS {model},\n"
    f"       round(sum({model}_bad_weight) / nullIf(sum({model}_weight), 0) / overall, 2) AS {model}_lift"
    for model in ATTRIBUTION_MODELS
)
ATTRIBUTION = f"""
WITH (SELECT sum(bad_outcomes) / nullIf(sum(outcomes), 0) FROM attribution_totals WHERE grouping = 'all')
         AS overall,
     {Z95} AS z
SELECT grouping, channel, kind, agent, team, quality, sum(outcomes) AS outcomes,
       sum(bad_outcomes) AS bad_outcomes, sum(touchpoints) AS touchpoints,
{_SHARES},
       bad_outcomes / outcomes AS p,
       z * sqrt(p * (1 - p) / outcomes + z * z / (4 * outcomes * outcomes)) AS margin,
       round(100 * (p + z * z / (2 * outcomes) - margin) / (1 + z * z / outcomes), 1) AS bad_low,
       round(100 * (p + z * z / (2 * outcomes) + margin) / (1 + z * z / outcomes), 1) AS bad_high
FROM attribution_totals
WHERE grouping != 'all'
GROUP BY grouping, channel, kind, agent, team, quality
HAVING outcomes >= {LEAST_OUTCOMES}
ORDER BY linear_lift DESC, outcomes DESC"""
OVERALL_BAD = """
SELECT round(100 * sum(bad_outcomes) / nullIf(sum(outcomes), 0), 1), sum(outcomes)
FROM attribution_totals
WHERE grouping = 'all'"""
TICKET_TREND = """
SELECT week, category, tickets, previous_mean, recurring
FROM ticket_weeks
WHERE week > toMonday((SELECT max(occurred_at) FROM touchpoints)) - INTERVAL 13 WEEK
ORDER BY week, category"""
RECURRING = """
SELECT category, week, tickets, round(previous_mean, 1) AS previous_mean
FROM ticket_weeks
WHERE recurring
ORDER BY week DESC, tickets DESC
LIMIT 20"""
FIRST_RESPONSE_BUCKETS = """
SELECT channel, count() AS answered,
       round(100 * countIf(hours < 1) / answered, 1) AS within_1h,
       round(100 * countIf(hours >= 1 AND hours < 4) / answered, 1) AS h1_4,
       round(100 * countIf(hours >= 4 AND hours < 8) / answered, 1) AS h4_8,
       round(100 * countIf(hours >= 8 AND hours < 24) / answered, 1) AS h8_24,
       round(100 * countIf(hours >= 24) / answered, 1) AS over_24h
FROM (
    SELECT channel, first_response_seconds / 3600 AS hours
    FROM tickets FINAL WHERE first_response_seconds IS NOT NULL
)
GROUP BY channel
ORDER BY answered DESC"""
SLA_BY_WEEK = """
SELECT toMonday(opened_at) AS week, channel, count() AS first_responses,
       round(100 * avg(within_sla), 1) AS within_sla_percent
FROM tickets FINAL
WHERE within_sla IS NOT NULL AND opened_at > (SELECT max(occurred_at) FROM touchpoints) - INTERVAL 8 WEEK
GROUP BY week, channel
ORDER BY week DESC, channel"""
SLA_BY_AGENT = """
SELECT first_response_agent_id AS agent, channel, count() AS first_responses,
       round(100 * avg(within_sla), 1) AS within_sla_percent
FROM tickets FINAL
WHERE within_sla IS NOT NULL AND first_response_agent_id IS NOT NULL
  AND opened_at > (SELECT max(occurred_at) FROM touchpoints) - INTERVAL 28 DAY
GROUP BY agent, channel
ORDER BY within_sla_percent, first_responses DESC
LIMIT 15"""
TICKET_SUMMARY = """
SELECT channel, count() AS tickets, countIf(status = 'open') AS open, sum(reopened) AS reopened,
       round(100 * countIf(resolved_on_first_reply) / nullIf(countIf(first_resolved_at IS NOT NULL), 0), 1)
           AS first_reply_percent,
       quantileExactIf(0.5)(first_resolution_seconds, first_resolution_seconds IS NOT NULL)
           AS median_resolution_seconds
FROM tickets FINAL
GROUP BY channel
ORDER BY tickets DESC"""
#: Per network, social conversations with a customer message, their customer messages, the
#: share answered and the median first response.
SOCIAL = """
SELECT network, count() AS conversations, sum(messages) AS messages,
       round(100 * countIf(answered) / conversations, 1) AS response_percent,
       quantileExactIf(0.5)(first_response_seconds, answered) AS median_first_response_seconds
FROM social_conversations FINAL
GROUP BY network
ORDER BY conversations DESC"""
VOLUME_BY_HOUR = """
SELECT hour, channel, sum(events) AS events
FROM volumes_hourly
WHERE hour > (SELECT max(occurred_at) FROM touchpoints) - INTERVAL 48 HOUR
GROUP BY hour, channel
ORDER BY hour, channel"""
RESPONSE_TIMES_BY_HOUR = """
SELECT toStartOfHour(replied_at) AS hour, quantileExact(0.5)(response_seconds) AS p50,
       quantileExact(0.9)(response_seconds) AS p90
FROM responses_by_hour FINAL
WHERE replied_at > (SELECT max(occurred_at) FROM touchpoints) - INTERVAL 48 HOUR
GROUP BY hour
ORDER BY hour"""
MODELS = {"last": "last touch", "first": "first touch", "linear": "linear", "time_decay": "time decay",
          "position": "position based"}  # fmt: skip


def _series(rows: list[tuple[Any, ...]], names: list[str]) -> dict[str, Any]:
    """Rows of (x, value, value...) as a chart's data: x in epoch seconds, one series per name."""
    return {
        "x": [_utc_epoch(row[0]) for row in rows],
        "series": [
            {"label": name, "values": [row[index + 1] for row in rows]} for index, name in enumerate(names)
        ],
    }


def _pivot(rows: list[tuple[Any, ...]]) -> dict[str, Any]:
    """Rows of (x, label, value) as a chart's data: one series per label, missing points 0."""
    xs = sorted({row[0] for row in rows})
    labels = sorted({row[1] for row in rows})
    values = {(row[0], row[1]): row[2] for row in rows}
    return {
        "x": [_utc_epoch(x) for x in xs],
        "series": [{"label": label, "values": [values.get((x, label), 0) for x in xs]} for label in labels],
    }


def _utc_epoch(moment: date | datetime) -> float:
    """Epoch seconds of a ClickHouse UTC time or date (the driver gives times naive)."""
    if isinstance(moment, datetime):
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()
    return datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp()


def _churn_points(overall: list[dict[str, Any]], ref: datetime | None) -> list[tuple[Any, ...]]:
    """(month, churn %, churn % of the month still under way): the month of "now" is a
    series of its own, so the chart marks it as partial."""
    points = []
    for row in overall:
        month = row["month"]
        current = ref is not None and (month.year, month.month) == (ref.year, ref.month)
        points.append(
            (month, None if current else row["churn_percent"], row["churn_percent"] if current else None)
        )
    return points


def charts(fetch: Fetch) -> dict[str, Any]:
    """The ops page's charts over the 48 h before the newest event: events per channel and
    response-time p50/p90 per hour."""
    ref = reference(fetch)
    if ref is None:
        return {"volume_chart": _pivot([]), "response_chart": _series([], ["p50", "p90"])}
    return {
        "volume_chart": _pivot(fetch(VOLUME_BY_HOUR, {})),
        "response_chart": _series(fetch(RESPONSE_TIMES_BY_HOUR, {}), ["p50", "p90"]),
    }


def experience(fetch: Fetch) -> dict[str, Any]:
    """Every panel of the experience view as JSON-able data (tables as in `panels`, charts
    as {x, series}); `errors` holds the reasons of panels left empty because their read
    went past its bound."""
    began = time.perf_counter()
    errors: list[str] = []
    fetch = within_bounds(fetch, errors)
    ref = reference(fetch)
    rates = records(["month", "signal", "customers", "churned", "churn_percent", "overall_percent"],
                    fetch(CHURN_RATES, {}))  # fmt: skip
    overall = [row for row in rates if row["signal"] == ""]
    by_signal = [row for row in rates if row["signal"] != ""][-15:]  # the last three months
    bad_share, outcomes = (fetch(OVERALL_BAD, {}) or [(None, 0)])[0]
    attribution = records(
        ["grouping", "channel", "kind", "agent", "team", "quality", "outcomes", "bad_outcomes", "touchpoints",
         *(name for model in MODELS for name in (model, f"{model}_lift")), "p", "margin", "bad_low",
         "bad_high"],
        fetch(ATTRIBUTION, {}),
    )  # fmt: skip
    trend = fetch(TICKET_TREND, {}) if ref else []
    percent = "number"
    panels: dict[str, Any] = {
        "churn_chart": _series(_churn_points(overall, ref), ["churn %", "this month so far"]),
        "churn_by_signal": table(
            [column("month", "Month"), column("signal", "Signal"),
             column("customers", "Active with it", "int"), column("churned", "Churned", "int"),
             column("churn_percent", "Churn %", percent),
             column("overall_percent", "Overall churn %", percent)],
            list(reversed(by_signal)),
        ),
        "survey_chart": _series(fetch(SURVEY_TREND, {}) if ref else [], ["NPS", "CSAT %"]),
        "attribution": {
            **table(
                [column("grouping", "By"), column("channel", "Channel"), column("kind", "Kind"),
                 column("agent", "Agent"), column("team", "Team"), column("quality", "Interaction"),
                 column("outcomes", "Outcomes", "int"), column("touchpoints", "Touchpoints", "int"),
                 *(column(model, f"Bad share % ({name})", percent) for model, name in MODELS.items()),
                 *(column(f"{model}_lift", f"Lift ({name})", "ratio") for model, name in MODELS.items()),
                 column("bad_outcomes", "Bad outcomes", "int"),
                 column("bad_low", "Bad outcomes %: 95% low", percent),
                 column("bad_high", "95% high", percent)],
                attribution,
            ),
            "overall_percent": bad_share,
            "outcomes": outcomes,
            "least_outcomes": LEAST_OUTCOMES,
        },
        "ticket_chart": _pivot([(week, category, tickets) for week, category, tickets, _, _ in trend]),
        "recurring": table(
            [column("category", "Category"), column("week", "Week of"), column("tickets", "Tickets", "int"),
             column("previous_mean", "Mean of previous 4 weeks", percent)],
            records(["category", "week", "tickets", "previous_mean"], fetch(RECURRING, {})),
        ),
        "tickets": table(
            [column("channel", "Channel"), column("tickets", "Tickets", "int"), column("open", "Open", "int"),
             column("reopened", "Reopened", "int"),
             column("first_reply_percent", "Resolved on first reply %", percent),
             column("median_resolution_seconds", "Median first resolution", "seconds")],
            records(["channel", "tickets", "open", "reopened", "first_reply_percent",
                     "median_resolution_seconds"], fetch(TICKET_SUMMARY, {})),
        ),
        "first_response_buckets": table(
            [column("channel", "Channel"), column("answered", "Answered tickets", "int"),
             column("within_1h", "0-1 h %", percent), column("h1_4", "1-4 h %", percent),
             column("h4_8", "4-8 h %", percent), column("h8_24", "8-24 h %", percent),
             column("over_24h", "24 h+ %", percent)],
            records(["channel", "answered", "within_1h", "h1_4", "h4_8", "h8_24", "over_24h"],
                    fetch(FIRST_RESPONSE_BUCKETS, {})),
        ),
        "sla_weeks": table(
            [column("week", "Week of"), column("channel", "Channel"),
             column("first_responses", "First responses", "int"),
             column("within_sla_percent", "Within SLA %", percent)],
            records(["week", "channel", "first_responses", "within_sla_percent"],
                    fetch(SLA_BY_WEEK, {}) if ref else []),
        ),
        "sla_agents": table(
            [column("agent", "Agent"), column("channel", "Channel"),
             column("first_responses", "First responses", "int"),
             column("within_sla_percent", "Within SLA %", percent)],
            records(["agent", "channel", "first_responses", "within_sla_percent"],
                    fetch(SLA_BY_AGENT, {}) if ref else []),
        ),
        "social": table(
            [column("network", "Network"), column("conversations", "Conversations", "int"),
             column("messages", "Customer messages", "int"),
             column("response_percent", "Answered %", percent),
             column("median_first_response_seconds", "Median first response", "seconds")],
            records(["network", "conversations", "messages", "response_percent",
                     "median_first_response_seconds"], fetch(SOCIAL, {})),
        ),
    }  # fmt: skip
    panels["reference"] = clean(ref)
    panels["errors"] = errors
    panels["read_seconds"] = round(time.perf_counter() - began, 3)
    return panels
