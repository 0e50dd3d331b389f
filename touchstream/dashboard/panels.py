"""The ops view's tables (SPEC §8), read from the SPEC §6 tables with parameterized SQL.

`snapshot()` returns every panel as plain JSON-able data: columns (key, label, kind)
and rows, with a count and the time it was read. The web page and `touchstream top`
render the same snapshot.

Times are event time: "now" is the newest event in `touchpoints` (the reference), so
waiting ages and the 1 h / 24 h / 7 d / 30 d windows are right for live traffic and for
replayed history alike. Panels read the live view (`FINAL`); a row that is still
provisional (within the grace period, so a late event may still correct it) says so
(`provisional`), and the page marks it. Nothing from a request ends up in SQL; the only values are
the reference time and the configured levels and half-life, bound as parameters.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime
from typing import Any

from touchstream.schemas.errors import ClickHouseError
from touchstream.schemas.touchpoint import DETRACTOR_MAX, PROMOTER_MIN, SATISFIED_MIN
from touchstream.sinks.clickhouse import READ_BOUND_CODES
from touchstream.streams.metrics.config import MetricsConfig

#: Runs a parameterized query ({name:Type} placeholders) and returns its rows.
Fetch = Callable[[str, Mapping[str, Any]], list[tuple[Any, ...]]]

REFERENCE = "SELECT max(occurred_at) FROM touchpoints"

#: The 200 longest waiting, and how many wait (one read of the queue).
WAITING = """
SELECT customer_id, conversation_id, channel, waiting_since,
       dateDiff('millisecond', waiting_since, {ref:DateTime64(3, 'UTC')}) / 1000 AS waiting_seconds,
       NOT final AS provisional, count() OVER () AS waiting
FROM waiting FINAL
WHERE NOT answered AND status = 'open'
ORDER BY waiting_since NULLS LAST, customer_id
LIMIT 200"""

#: Running SLA targets (no reply or close has ended them): the 50 most overdue of those
#: breached, then the 50 due next, with how many of each there are (one read).
SLA_TARGETS = """
SELECT status, metric, ifNull(team_id, '(none)') AS team, policy, customer_id, conversation_id, due_at,
       dateDiff('millisecond', {ref:DateTime64(3, 'UTC')}, due_at) / 1000 AS due_in_seconds,
       NOT final AS provisional,
       countIf(status = 'breached') OVER () AS breached, countIf(status = 'pending') OVER () AS pending
FROM sla_events FINAL
WHERE ended_at IS NULL AND status IN ('pending', 'breached') AND due_at IS NOT NULL
ORDER BY status = 'pending', due_at, customer_id, conversation_id
LIMIT 50 BY status"""

RESPONSE_TIMES = """
WITH {ref:DateTime64(3, 'UTC')} AS ref,
     replied_at > ref - INTERVAL 1 HOUR AS last_hour
SELECT channel,
       countIf(is_first_response AND last_hour) AS first_1h,
       quantileExactIf(0.5)(response_seconds, is_first_response AND last_hour) AS first_p50_1h,
       quantileExactIf(0.9)(response_seconds, is_first_response AND last_hour) AS first_p90_1h,
       countIf(last_hour) AS replies_1h,
       quantileExactIf(0.5)(response_seconds, last_hour) AS p50_1h,
       quantileExactIf(0.9)(response_seconds, last_hour) AS p90_1h,
       countIf(is_first_response) AS first_24h,
       quantileExactIf(0.5)(response_seconds, is_first_response) AS first_p50_24h,
       quantileExactIf(0.9)(response_seconds, is_first_response) AS first_p90_24h,
       count() AS replies_24h,
       quantileExact(0.5)(response_seconds) AS p50_24h,
       quantileExact(0.9)(response_seconds) AS p90_24h,
       countIf(NOT final) > 0 AS provisional
FROM responses_by_hour FINAL
WHERE replied_at > ref - INTERVAL 24 HOUR AND replied_at <= ref
GROUP BY channel
ORDER BY channel"""

HOURLY_P90 = """
WITH {ref:DateTime64(3, 'UTC')} AS ref
SELECT channel, dateDiff('hour', toStartOfHour(replied_at), toStartOfHour(ref)) AS hours_ago,
       quantileExact(0.9)(response_seconds)
FROM responses_by_hour FINAL
WHERE replied_at > ref - INTERVAL 24 HOUR AND replied_at <= ref
GROUP BY channel, hours_ago"""

LEVELS = "SELECT level, count() FROM engagement FINAL GROUP BY level"

#: The latest changes within `days` of "now" (the snapshot reads the last day first, and
#: the last 30 days only when the day had fewer changes than the panel shows): the window
#: keeps the read to that window's rows, whatever the history.
CHANGES = """
SELECT customer_id, previous_level, level, changed_at, NOT final AS provisional
FROM engagement_changes_by_hour FINAL
WHERE changed_at > {ref:DateTime64(3, 'UTC')} - toIntervalDay({days:UInt32})
ORDER BY changed_at DESC, customer_id
LIMIT 20"""
CHANGES_SHOWN = 20

TOP = """
WITH {ref:DateTime64(3, 'UTC')} AS ref
SELECT customer_id, level,
       score * pow(0.5, greatest(dateDiff('millisecond', updated_at, ref), 0) / 1000 / {half_life:Float64})
           AS score_now,
       interactions_30d, active_channels_30d, last_interaction_at, NOT final AS provisional
FROM engagement FINAL
ORDER BY score_now DESC, customer_id
LIMIT 10"""

#: At risk: now at least two levels below the highest level held in the last 7 days (every
#: level held in the window is the previous or new level of one of its changes, and the
#: level now is the new level of the latest: at one instant, changes are rises).
AT_RISK = """
WITH {ref:DateTime64(3, 'UTC')} AS ref, {levels:Array(String)} AS levels
SELECT customer_id, levels[peak] AS peak_level, levels[now_index] AS level_now, now_index - peak AS moved,
       last_change
FROM (
    SELECT customer_id, max(greatest(indexOf(levels, level), indexOf(levels, previous_level))) AS peak,
           argMax(indexOf(levels, level), (changed_at, indexOf(levels, level))) AS now_index,
           max(changed_at) AS last_change
    FROM engagement_changes_by_hour FINAL
    WHERE changed_at > ref - INTERVAL 7 DAY AND changed_at <= ref
    GROUP BY customer_id
)
WHERE now_index <= peak - 2
ORDER BY moved, last_change DESC, customer_id
LIMIT 50"""

EXPERIENCE = f"""
WITH {{ref:DateTime64(3, 'UTC')}} AS ref
SELECT channel,
       countIf(survey_type = 'nps') AS nps_responses,
       100 * (countIf(survey_type = 'nps' AND score >= {PROMOTER_MIN})
              - countIf(survey_type = 'nps' AND score <= {DETRACTOR_MAX}))
           / nullIf(countIf(survey_type = 'nps'), 0) AS nps,
       countIf(survey_type = 'csat') AS csat_responses,
       100 * countIf(survey_type = 'csat' AND score >= {SATISFIED_MIN})
           / nullIf(countIf(survey_type = 'csat'), 0) AS csat,
       countIf(NOT final) > 0 AS provisional
FROM surveys FINAL
WHERE occurred_at > ref - INTERVAL 30 DAY AND occurred_at <= ref
GROUP BY channel
ORDER BY channel"""

STORED_HEALTH = """
SELECT countIf(ingested_at > now64(3) - INTERVAL 1 MINUTE) / 60, max(ingested_at),
       (SELECT count() FROM late_events FINAL)
FROM touchpoints"""


def column(key: str, label: str, kind: str = "text") -> dict[str, str]:
    """kind: text, int, number (one decimal), ratio (two), seconds (a duration), time, level,
    spark (a list of numbers)."""
    return {"key": key, "label": label, "kind": kind}


def clean(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, float):
        return round(value, 3)
    return value


def shown(value: Any) -> str | None:
    """A health figure as text: counts as they are, rates to one decimal, times in UTC."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return str(clean(value)).replace("T", " ")[:19] + " UTC"
    if isinstance(value, float):
        return f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def records(keys: list[str], rows: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Query rows as dicts, by the keys of their columns in SELECT order."""
    return [dict(zip(keys, row, strict=True)) for row in rows]


def table(
    columns: list[dict[str, str]], rows: list[dict[str, Any]], count: int | None = None
) -> dict[str, Any]:
    return {
        "columns": columns,
        "rows": [
            {key: clean(bool(value) if key == "provisional" else value) for key, value in row.items()}
            for row in rows
        ],
        "count": len(rows) if count is None else count,
        "updated_at": clean(datetime.now(UTC)),
    }


def within_bounds(fetch: Fetch, errors: list[str]) -> Fetch:
    """`fetch`, except that a read stopped by its time or memory bound (TOUCHSTREAM_READ_*)
    gives no rows and its reason in `errors`: the other panels are still shown."""

    def bounded(sql: str, parameters: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        try:
            return fetch(sql, parameters)
        except ClickHouseError as error:
            if error.code not in READ_BOUND_CODES:
                raise
            errors.append(str(error))
            return []

    return bounded


def reference(fetch: Fetch) -> datetime | None:
    """ "Now" in event time: the newest stored event, or None before the first one."""
    ref = (fetch(REFERENCE, {}) or [(None,)])[0][0]
    return None if ref is None or (isinstance(ref, datetime) and ref.year < 1971) else ref


def snapshot(
    fetch: Fetch,
    config: MetricsConfig,
    sla: Callable[[str], float | None],
    health: Callable[[], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Every panel of the ops view, read now; `errors` holds the reasons of panels left
    empty because their read went past its bound."""
    began = time.perf_counter()
    errors: list[str] = []
    fetch = within_bounds(fetch, errors)
    ref = reference(fetch)
    panels: dict[str, Any] = {"reference": clean(ref), "errors": errors}
    params = {"ref": ref}
    levels = [name for name, _ in config.levels]

    waiting_rows = []
    queue = fetch(WAITING, params) if ref is not None else []
    for customer, conversation, channel, since, seconds, provisional, _ in queue:
        if since is not None:
            limit = sla(channel)
            waiting_rows.append({
                "customer_id": customer, "conversation_id": conversation, "channel": channel,
                "waiting_since": since, "waiting_seconds": seconds,
                "over_sla": limit is not None and seconds > limit, "provisional": bool(provisional),
            })  # fmt: skip
    panels["waiting"] = table(
        [column("customer_id", "Customer"), column("channel", "Channel"),
         column("waiting_seconds", "Waiting", "seconds"), column("waiting_since", "Since", "time"),
         column("conversation_id", "Conversation")],
        waiting_rows,
        queue[0][-1] if queue else 0,  # the queue's length, counted in the same read
    )  # fmt: skip

    targets = fetch(SLA_TARGETS, params) if ref is not None else []
    panels["sla"] = table(
        [column("status", "Status"), column("due_in_seconds", "Due in", "seconds"),
         column("metric", "Target"), column("team", "Team"), column("policy", "Policy"),
         column("customer_id", "Customer"), column("due_at", "Due", "time"),
         column("conversation_id", "Conversation")],
        [{"status": status, "metric": metric, "team": team, "policy": policy, "customer_id": customer,
          "conversation_id": conversation, "due_at": due, "due_in_seconds": due_in,
          "over_sla": status == "breached", "provisional": bool(provisional)}
         for status, metric, team, policy, customer, conversation, due, due_in, provisional, _, _ in targets],
        targets[0][-2] if targets else 0,  # breached now, counted in the same read
    )  # fmt: skip
    panels["sla"]["pending"] = targets[0][-1] if targets else 0

    response_rows = []
    if ref is not None:
        spark: dict[str, list[float | None]] = {}
        for channel, hours_ago, p90 in fetch(HOURLY_P90, params):
            spark.setdefault(channel, [None] * 24)
            if 0 <= hours_ago < 24:
                spark[channel][23 - hours_ago] = clean(float(p90))
        names = [f"{what}_{window}" for window in ("1h", "24h")
                 for what in ("first", "first_p50", "first_p90", "replies", "p50", "p90")]  # fmt: skip
        names.append("provisional")
        for channel, *values in fetch(RESPONSE_TIMES, params):
            row = {"channel": channel, **dict(zip(names, values, strict=True))}
            row["p90_trend"] = spark.get(channel, [])
            response_rows.append(row)
    panels["responses"] = table(
        [column("channel", "Channel"),
         column("first_p50_1h", "1h first p50", "seconds"), column("first_p90_1h", "1h first p90", "seconds"),
         column("p50_1h", "1h reply p50", "seconds"), column("p90_1h", "1h reply p90", "seconds"),
         column("replies_1h", "1h replies", "int"),
         column("first_p50_24h", "24h first p50", "seconds"),
         column("first_p90_24h", "24h first p90", "seconds"),
         column("p50_24h", "24h reply p50", "seconds"), column("p90_24h", "24h reply p90", "seconds"),
         column("replies_24h", "24h replies", "int"), column("p90_trend", "p90 by hour", "spark")],
        response_rows,
    )  # fmt: skip

    counts: dict[str, int] = {level: count for level, count in fetch(LEVELS, {})}
    panels["levels"] = table(
        [column("level", "Level", "level"), column("customers", "Customers", "int")],
        [{"level": level, "customers": counts.get(level, 0)} for level in reversed(levels)],
        sum(counts.values()),
    )
    rank = {name: index for index, name in enumerate(levels)}
    changes = [
        {"customer_id": customer, "previous_level": before, "level": after, "changed_at": at,
         "direction": "rising" if rank.get(after, 0) > rank.get(before, 0) else "falling",
         "provisional": bool(provisional)}
        for customer, before, after, at, provisional in _latest_changes(fetch, params)
    ]  # fmt: skip
    panels["changes"] = table(
        [column("changed_at", "When", "time"), column("customer_id", "Customer"),
         column("previous_level", "From", "level"), column("level", "To", "level"),
         column("direction", "Direction")],
        changes,
    )  # fmt: skip
    top_rows: list[dict[str, Any]] = []
    risk_rows: list[dict[str, Any]] = []
    if ref is not None:
        half_life = config.half_life.total_seconds()
        top_rows = records(
            [
                "customer_id",
                "level",
                "score",
                "interactions_30d",
                "channels_30d",
                "last_interaction_at",
                "provisional",
            ],
            fetch(TOP, {**params, "half_life": half_life}),
        )
        risk_rows = records(
            ["customer_id", "peak_level", "level", "levels_moved", "last_change"],
            fetch(AT_RISK, {**params, "levels": levels}),
        )
    panels["top"] = table(
        [column("customer_id", "Customer"), column("level", "Level", "level"),
         column("score", "Score", "number"),
         column("interactions_30d", "Actions 30d", "int"), column("channels_30d", "Channels 30d", "int"),
         column("last_interaction_at", "Last action", "time")],
        top_rows,
    )  # fmt: skip
    panels["at_risk"] = table(
        [column("customer_id", "Customer"), column("peak_level", "Highest in 7d", "level"),
         column("level", "Level now", "level"), column("levels_moved", "Levels down", "int"),
         column("last_change", "Last change", "time")],
        risk_rows,
    )  # fmt: skip

    experience: list[dict[str, Any]] = []
    if ref is not None:
        experience = records(
            ["channel", "nps_responses", "nps", "csat_responses", "csat", "provisional"],
            fetch(EXPERIENCE, params),
        )
    panels["experience"] = table(
        [column("channel", "Channel"), column("nps", "NPS 30d", "number"),
         column("nps_responses", "NPS responses", "int"), column("csat", "CSAT % 30d", "number"),
         column("csat_responses", "CSAT responses", "int")],
        experience,
    )  # fmt: skip

    figures = health() if health is not None else stored_health(fetch)
    panels["health"] = table(
        [column("metric", "Pipeline"), column("value", "Value")],
        [{"metric": name, "value": shown(value)} for name, value in figures.items()],
    )
    panels["read_seconds"] = round(time.perf_counter() - began, 3)
    return panels


def _latest_changes(fetch: Fetch, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
    if params["ref"] is None:
        return []
    rows = fetch(CHANGES, {**params, "days": 1})
    return rows if len(rows) >= CHANGES_SHOWN else fetch(CHANGES, {**params, "days": 30})


PREFERRED_CHANNELS = """
SELECT preferred_channel, count() AS customers, round(100 * count() / sum(count()) OVER (), 1) AS percent
FROM customer_profiles FINAL
WHERE preferred_channel IS NOT NULL
GROUP BY preferred_channel
ORDER BY customers DESC, preferred_channel"""
ACTIVE_HOURS = """
SELECT intDiv(slot, 24) + 1 AS weekday, slot % 24 AS hour, count() AS events
FROM customer_profiles FINAL
ARRAY JOIN recent_slots AS slot
WHERE last_seen_at > {ref:DateTime64(3, 'UTC')} - INTERVAL 90 DAY
GROUP BY weekday, hour"""
JOURNEY_PATHS = """
SELECT multiIf(outcome = 'purchase', 'purchase', outcome IN ('detractor', 'dissatisfied'),
               'detractor or dissatisfied', 'ticket') AS ending,
       arrayStringConcat(channel_path, ' > ') AS path, count() AS journeys
FROM journeys FINAL
WHERE outcome IN ('purchase', 'detractor', 'dissatisfied', 'ticket')
GROUP BY ending, path
ORDER BY ending, journeys DESC, path
LIMIT 5 BY ending"""
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def behaviour(fetch: Fetch) -> dict[str, Any]:
    """The behaviour-pattern panels (SPEC §5b), from the journeys and profiles views: which
    channels customers prefer, when they act (weekday x UTC hour, 90 days), and the top
    journey paths by how they end. The queries are docs/clickhouse.md's. A panel past its
    read bound is left empty, its reason in `behaviour_errors`."""
    errors: list[str] = []
    fetch = within_bounds(fetch, errors)
    ref = reference(fetch)
    preferred = records(["channel", "customers", "percent"], fetch(PREFERRED_CHANNELS, {}))
    cells: dict[int, dict[str, Any]] = {day: {"weekday": WEEKDAYS[day - 1]} for day in range(1, 8)}
    peak = 0
    if ref is not None:
        for day, hour, events in fetch(ACTIVE_HOURS, {"ref": ref}):
            cells[day][f"h{hour:02}"] = events
            peak = max(peak, events)
    heat = table(
        [column("weekday", "UTC"), *(column(f"h{hour:02}", f"{hour:02}", "heat") for hour in range(24))],
        [{**{f"h{hour:02}": 0 for hour in range(24)}, **row} for row in cells.values()],
    )
    heat["max"] = peak
    paths = records(["ending", "path", "journeys"], fetch(JOURNEY_PATHS, {}))
    return {
        "behaviour_errors": errors,
        "preferred_channels": table(
            [
                column("channel", "Preferred channel"),
                column("customers", "Customers", "int"),
                column("percent", "%", "number"),
            ],
            preferred,
        ),
        "active_hours": heat,
        "journey_paths": table(
            [
                column("ending", "Journeys ending in"),
                column("path", "Channel path"),
                column("journeys", "Journeys", "int"),
            ],
            paths,
        ),
    }


def stored_health(fetch: Fetch) -> dict[str, Any]:
    """Health as far as ClickHouse tells it (a dashboard apart from the worker)."""
    per_second, last_write, late = (fetch(STORED_HEALTH, {}) or [(0.0, None, 0)])[0]
    return {
        "events/s in (last minute)": round(float(per_second), 1),
        "late events": late,
        "last sink flush": last_write if last_write and last_write.year > 1970 else None,
        "dead letters": None,
        "consumer lag": None,
    }
