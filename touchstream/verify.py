"""`touchstream verify`: recompute the metrics from `touchpoints` and diff them with what
the stream wrote, in both views.

The recomputation is the brute-force definition (`streams.metrics.reference`) over the
stored events, minus those the stream reported late and did not restate, per partition
with the horizon and newest event time the stream recorded for it in `stream_horizons`
(where none is recorded: its newest event, and that - grace):

- live view: every row under `FINAL` equals the definitions applied to all those
  events, evaluated at the partition's newest event time;
- settled view: the final rows (`FINAL WHERE final`) of responses, level changes and
  surveys equal the definitions applied to the events before the horizon; a final
  engagement or waiting row equals the settled row of its key, and every settled row
  the definitions give is there, final, or replaced by a provisional one (a later
  event changed it).

Run it when the worker is stopped or has nothing left to read: while it writes, the
tables are read at slightly different moments. Events are stored to the millisecond,
so response times are compared within 2 ms. Every row is one customer's, so the
customers are compared a slice at a time (`SLICE_EVENTS` events): memory is bounded by
the slice, time is linear in the events.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from touchstream.schemas.partitioning import partition_of
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.sinks.ddl import ATTRIBUTION_GROUP, ATTRIBUTION_MODELS, WEIGHT_UNITS
from touchstream.sinks.touchpoints import EVENT_COLUMNS, event_of
from touchstream.streams.metrics import MetricsConfig
from touchstream.streams.metrics.records import (
    KEY_COLUMNS,
    LATEST_STATE_TABLES,
    ChurnRow,
    OutcomeTouchpoint,
    TicketRow,
)
from touchstream.streams.metrics.reference import (
    Group,
    Tables,
    attribution,
    journeys,
    outcome_tables,
    profiles,
    recompute,
)

Fetch = Callable[[str], list[dict[str, Any]]]
SECONDS_TOLERANCE = 0.002

EVENTS = f"SELECT {', '.join(EVENT_COLUMNS)} FROM touchpoints FINAL"
STREAM = {
    "responses": "SELECT reply_event_id, customer_id, response_seconds, response_business_seconds, "
    "is_first_response, sla_met, final "
    "FROM responses FINAL",
    "engagement": "SELECT customer_id, level, interactions_30d, final FROM engagement FINAL",
    "waiting": "SELECT customer_id, conversation_id, answered, status, team_id, closed_at, final "
    "FROM waiting FINAL",
    "conversations": "SELECT customer_id, conversation_id, status, team_id, closed_without_reply, abandoned, "
    "closed_at, resolution_business_seconds, final FROM conversations FINAL",
    "sla_events": "SELECT customer_id, conversation_id, metric, started_by, policy, team_id, status, due_at, "
    "met_at, breached_at, ended_at, final FROM sla_events FINAL",
    "engagement_changes": "SELECT customer_id, previous_level, level, final FROM engagement_changes FINAL",
    "surveys": "SELECT event_id, score, final FROM surveys FINAL",
}
TICKET_COLUMNS = [field.name for field in fields(TicketRow)]
CHURN_COLUMNS = [field.name for field in fields(ChurnRow)]
OUTCOME_COLUMNS = [field.name for field in fields(OutcomeTouchpoint)]
#: Per outcome-analytics table (`reference.outcome_tables`), the columns compared (times as
#: ISO 8601 in UTC, seconds and weights to 6 decimals).
OUTCOME_TABLES: dict[str, list[str]] = {
    "tickets": TICKET_COLUMNS,
    "churn_events": CHURN_COLUMNS,
    "outcome_touchpoints": OUTCOME_COLUMNS,
}
BEHAVIOUR = {
    "journeys": "SELECT journey_id, customer_id, started_at, ended_at, channel_path, touchpoints, outcome, "
    "final FROM journeys FINAL",
    "customer_profiles": "SELECT customer_id, first_seen_at, last_seen_at, preferred_channel, "
    "active_channels, active_hours, active_weekdays, purchases, level, latest_nps, latest_csat, "
    "consent, churned, final FROM customer_profiles FINAL",
    "tickets": f"SELECT {', '.join(TICKET_COLUMNS)} FROM tickets FINAL",
    "churn_events": f"SELECT {', '.join(CHURN_COLUMNS)} FROM churn_events FINAL",
    "outcome_touchpoints": f"SELECT {', '.join(OUTCOME_COLUMNS)} FROM outcome_touchpoints FINAL",
}
NEWEST = """
    SELECT source_partition AS partition, max(occurred_at) AS newest FROM touchpoints FINAL
    WHERE (customer_id, event_id) NOT IN (
        SELECT customer_id, event_id FROM late_events FINAL WHERE restated_at IS NULL)
    GROUP BY source_partition"""
#: The late events left out: reported, not restated (a restated one counts).
UNCOUNTED = "SELECT event_id FROM (SELECT * FROM late_events FINAL WHERE restated_at IS NULL)"
HORIZONS = (
    "SELECT partition, max(horizon) AS horizon, max(newest) AS newest FROM stream_horizons GROUP BY partition"
)


@dataclass
class TableDiff:
    table: str
    view: str
    expected: int
    actual: int
    #: Rows the definitions give and the table lacks, and the reverse (the first
    #: `KEPT_ROWS` of each; the counts are of all).
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    missing_count: int = 0
    unexpected_count: int = 0

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value).replace(tzinfo=UTC)


def expected_tables(
    events: list[TouchpointEvent],
    late: set[str],
    config: MetricsConfig,
    partitions: int,
    horizons: dict[int, tuple[datetime, datetime]] | None = None,
) -> tuple[Tables, Tables]:
    """The live and the settled tables the definitions give, per partition with its
    recorded (horizon, newest event time)."""
    kept = [event for event in events if event.event_id not in late]
    live, settled = Tables(), Tables()
    for partition in range(partitions):
        mine = [e for e in kept if partition_of(e.customer_id.encode(), partitions) == partition]
        if not mine:
            continue
        recorded = (horizons or {}).get(partition)
        if recorded is None:  # nothing recorded: the stream's horizon once caught up
            newest = max(event.occurred_at for event in mine)
            recorded = (newest - config.grace, newest)
        horizon, newest = recorded
        _merge(live, recompute(mine, config, None, newest))
        _merge(settled, recompute(mine, config, horizon))
    return live, settled


def _merge(into: Tables, tables: Tables) -> None:
    into.responses |= tables.responses
    into.engagement |= tables.engagement
    into.waiting |= tables.waiting
    into.conversations |= tables.conversations
    into.sla |= tables.sla
    into.changes += tables.changes
    into.surveys |= tables.surveys


def _diff(table: str, view: str, expected: Counter[str], actual: Counter[str]) -> TableDiff:
    missing = sorted((expected - actual).elements())
    unexpected = sorted((actual - expected).elements())
    return TableDiff(table, view, sum(expected.values()), sum(actual.values()), missing, unexpected)


def behaviour_rows(
    events: list[TouchpointEvent],
    late: set[str],
    config: MetricsConfig,
    partitions: int,
    horizons: dict[int, tuple[datetime, datetime]],
    sums: Sums | None = None,
) -> dict[str, list[tuple[Any, ...]]]:
    """The journeys and profiles the definitions give, per partition with its recorded
    (horizon, newest event time), as comparable rows (the final flag last); the outcome
    touchpoints' attribution sums are added to `sums`. A profile's score is the engagement
    row's, which verify compares by level (the stored event times are rounded to the
    millisecond, the score's last digits with them)."""
    kept = [event for event in events if event.event_id not in late]
    rows: dict[str, list[tuple[Any, ...]]] = {name: [] for name in BEHAVIOUR}
    for partition in range(partitions):
        mine = [e for e in kept if partition_of(e.customer_id.encode(), partitions) == partition]
        if not mine or partition not in horizons:
            continue
        horizon, newest = horizons[partition]
        rows["journeys"] += [
            (j.journey_id, j.customer_id, _iso(j.started_at), _iso(j.ended_at), list(j.channel_path),
             j.touchpoints, j.outcome, j.final)
            for j in journeys(mine, config, horizon)
        ]  # fmt: skip
        rows["customer_profiles"] += [
            (p.customer_id, _iso(p.first_seen_at), _iso(p.last_seen_at), p.preferred_channel,
             list(p.active_channels), list(p.active_hours), list(p.active_weekdays), p.purchases, p.level,
             p.latest_nps, p.latest_csat, p.consent, p.churned, p.final)
            for p in profiles(mine, config, horizon, newest)
        ]  # fmt: skip
        for name, found in outcome_tables(mine, config, horizon, newest).items():
            if name == "outcome_touchpoints" and sums is not None:
                for key, values in attribution(found).items():
                    group = sums.setdefault(key, {})
                    for column, value in values.items():
                        group[column] = group.get(column, 0.0) + value
            rows[name] += [
                tuple(_comparable(getattr(row, column)) for column in OUTCOME_TABLES[name]) for row in found
            ]
    return rows


def _comparable(value: Any) -> Any:
    """A column value as verify compares it: times as ISO 8601 in UTC, floats to 6 decimals."""
    if isinstance(value, datetime):
        return _iso(value)
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, tuple | list):
        return [_comparable(item) for item in value]
    return value


def _stored_value(column: str, value: Any) -> Any:
    if value is None or column == "final":
        return bool(value) if column == "final" else None
    if column.endswith("_at"):
        return _iso(_time(value))
    if column in ("resolved_on_first_reply",):
        return bool(value)
    if isinstance(value, float) or column.endswith("_seconds") or column.startswith("weight_"):
        return round(float(value), 6)
    if column in ("reopened", "position", "n"):
        return int(value)
    return list(value) if isinstance(value, list | tuple) else value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _stored_behaviour(name: str, row: dict[str, Any]) -> tuple[Any, ...]:
    if name in OUTCOME_TABLES:
        columns = OUTCOME_TABLES[name]
        return tuple(_stored_value(column, row[column]) for column in columns)
    if name == "journeys":
        return (row["journey_id"], row["customer_id"], _iso(_time(row["started_at"])),
                _iso(_time(row["ended_at"])), list(row["channel_path"]), int(row["touchpoints"]),
                row["outcome"], bool(row["final"]))  # fmt: skip
    return (row["customer_id"], _iso(_time(row["first_seen_at"])), _iso(_time(row["last_seen_at"])),
            row["preferred_channel"], list(row["active_channels"]), [int(n) for n in row["active_hours"]],
            [int(n) for n in row["active_weekdays"]], int(row["purchases"]), row["level"],
            row["latest_nps"], row["latest_csat"], bool(row["consent"]), bool(row["churned"]),
            bool(row["final"]))  # fmt: skip


#: The attribution view's sums per group (`reference.attribution`).
Sums = dict[Group, dict[str, float]]
TOTALS = f"""
    SELECT {", ".join(ATTRIBUTION_GROUP)}, sum(outcomes) AS outcomes, sum(bad_outcomes) AS bad_outcomes,
           sum(touchpoints) AS touchpoints,
           {
    ", ".join(
        f"sum({model}_weight) / {WEIGHT_UNITS} AS {model}_weight, "
        f"sum({model}_bad_weight) / {WEIGHT_UNITS} AS {model}_bad_weight"
        for model in ATTRIBUTION_MODELS
    )
}
    FROM attribution_totals
    GROUP BY {", ".join(ATTRIBUTION_GROUP)}
    HAVING touchpoints != 0"""


def totals_diff(wanted: Sums, rows: list[dict[str, Any]]) -> TableDiff:
    """`attribution_totals` against the sums the definitions give: counts exactly, weights
    within a billionth per touchpoint (they are summed in billionths)."""
    found: Sums = {
        (row["grouping"], row["channel"], row["kind"], row["agent"], row["team"], row["quality"]): {
            name: float(value) for name, value in row.items() if name not in ATTRIBUTION_GROUP
        }
        for row in rows
    }

    def agree(mine: dict[str, float], theirs: dict[str, float]) -> bool:
        slack = 1e-6 + mine.get("touchpoints", 0) * 1e-9
        return mine.keys() == theirs.keys() and all(
            abs(value - theirs[name]) <= slack for name, value in mine.items()
        )

    missing = [
        f"{key}: {values}" for key, values in sorted(wanted.items()) if not agree(values, found.get(key, {}))
    ]
    unexpected = [
        f"{key}: {values}" for key, values in sorted(found.items()) if not agree(values, wanted.get(key, {}))
    ]
    diff = TableDiff("attribution_totals", "live", len(wanted), len(found), missing, unexpected)
    diff.missing_count, diff.unexpected_count = len(missing), len(unexpected)
    return diff


#: Events per slice of customers verify holds in memory at once.
SLICE_EVENTS = 100_000
#: Mismatched rows kept per table and view (all are counted).
KEPT_ROWS = 1000


def verify(
    fetch: Fetch, config: MetricsConfig, partitions: int, *, slice_events: int = SLICE_EVENTS
) -> list[TableDiff]:
    """Every table against the definitions, a slice of the customers at a time (every row
    is one customer's, so slices are compared apart): memory is bounded by the slice,
    time is linear in the events."""
    horizons = {
        int(row["partition"]): (_time(row["horizon"]), _time(row["newest"])) for row in fetch(HORIZONS)
    }
    # A partition without a recorded horizon: its newest counted event, as the stream's
    # horizon once caught up (the same for every slice).
    recorded = dict(horizons)
    for row in fetch(NEWEST):
        partition = int(row["partition"])
        if partition not in horizons:
            newest = _time(row["newest"])
            horizons[partition] = (newest - config.grace, newest)
    events = int(fetch("SELECT count() AS n FROM touchpoints")[0]["n"])
    slices = max(1, -(-events // slice_events))
    totals: dict[tuple[str, str], TableDiff] = {}
    sums: Sums = {}
    for index in range(slices):
        scope = f"cityHash64(customer_id) % {slices} = {index}"
        for diff in _verify_slice(fetch, config, partitions, horizons, recorded, scope, sums):
            total = totals.setdefault((diff.table, diff.view), TableDiff(diff.table, diff.view, 0, 0))
            total.expected += diff.expected
            total.actual += diff.actual
            total.missing_count += len(diff.missing)
            total.unexpected_count += len(diff.unexpected)
            total.missing += diff.missing[: KEPT_ROWS - len(total.missing)]
            total.unexpected += diff.unexpected[: KEPT_ROWS - len(total.unexpected)]
    return [*totals.values(), totals_diff(sums, fetch(TOTALS))]


def _verify_slice(
    fetch: Fetch,
    config: MetricsConfig,
    partitions: int,
    horizons: dict[int, tuple[datetime, datetime]],
    recorded: dict[int, tuple[datetime, datetime]],
    scope: str,
    sums: Sums,
) -> list[TableDiff]:
    def scoped(query: str) -> list[dict[str, Any]]:
        return fetch(f"{query} WHERE {scope}")

    events = [event_of(row) for row in scoped(EVENTS)]
    late = {row["event_id"] for row in scoped(UNCOUNTED)}
    live, settled = expected_tables(events, late, config, partitions, horizons)
    stream = {name: scoped(query) for name, query in STREAM.items()}
    final = {name: [row for row in rows if row["final"]] for name, rows in stream.items()}
    diffs = [_diff(name, "live", wanted, found) for name, (wanted, found) in _pairs(live, stream).items()]
    for name, (wanted, found) in _pairs(settled, final).items():
        if name in LATEST_STATE_TABLES:
            # A settled row whose key the stream shows provisional was replaced by a later event's.
            width = len(KEY_COLUMNS[name])
            replaced = {
                tuple(row[column] for column in KEY_COLUMNS[name]) for row in stream[name] if not row["final"]
            }
            wanted = Counter(
                {row: n for row, n in wanted.items() if tuple(json.loads(row)[:width]) not in replaced}
            )
        diffs.append(_diff(name, "settled", wanted, found))
    wanted_behaviour = behaviour_rows(events, late, config, partitions, recorded, sums)
    for name, query in BEHAVIOUR.items():
        found_rows = [_stored_behaviour(name, row) for row in scoped(query)]
        for view, keep in (("live", lambda row: True), ("settled", lambda row: bool(row[-1]))):
            diffs.append(_diff(
                name, view,
                Counter(json.dumps(row) for row in wanted_behaviour[name] if keep(row)),
                Counter(json.dumps(row) for row in found_rows if keep(row)),
            ))  # fmt: skip
    return diffs


def _pairs(
    tables: Tables, stream: dict[str, list[dict[str, Any]]]
) -> dict[str, tuple[Counter[str], Counter[str]]]:
    """Per table, (expected, found) rows as comparable JSON strings."""

    def keys(rows: list[tuple[Any, ...]]) -> Counter[str]:
        return Counter(json.dumps(row) for row in rows)

    # Response times: the same record must exist, and its seconds (also within business
    # hours) agree within the tolerance.
    times = {
        r.reply_event_id: (r.response_seconds, r.response_business_seconds) for r in tables.responses.values()
    }

    # A conversation's business time to its close, within the same tolerance (the stream
    # measures from the events as read, verify from the stored milliseconds).
    business = {key: row.resolution_business_seconds for key, row in tables.conversations.items()}

    def close(value: Any, wanted: float | None) -> bool:
        if value is None or wanted is None:
            return value is None and wanted is None
        return abs(float(value) - wanted) <= SECONDS_TOLERANCE

    def close_enough(row: dict[str, Any]) -> bool:
        wanted = times.get(row["reply_event_id"])
        return (
            wanted is not None
            and close(row["response_seconds"], wanted[0])
            and close(row["response_business_seconds"], wanted[1])
        )

    rows = stream
    pairs: dict[str, tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]] = {
        "responses": (
            [(r.reply_event_id, r.customer_id, r.is_first_response, r.sla_met, True)
             for r in tables.responses.values()],
            [(row["reply_event_id"], row["customer_id"], bool(row["is_first_response"]),
              None if row["sla_met"] is None else bool(row["sla_met"]), close_enough(row))
             for row in stream["responses"]],
        ),
        "engagement": (
            [(r.customer_id, r.level, r.interactions_30d) for r in tables.engagement.values()],
            [(row["customer_id"], row["level"], int(row["interactions_30d"])) for row in rows["engagement"]],
        ),
        "waiting": (
            [(r.customer_id, r.conversation_id, r.answered, r.status, r.team_id, _comparable(r.closed_at))
             for r in tables.waiting.values()],
            [(row["customer_id"], row["conversation_id"], bool(row["answered"]), row["status"],
              row["team_id"], _stored_value("closed_at", row["closed_at"])) for row in rows["waiting"]],
        ),
        "conversations": (
            [(r.customer_id, r.conversation_id, r.status, r.team_id, r.closed_without_reply, r.abandoned,
              _comparable(r.closed_at), True) for r in tables.conversations.values()],
            [(row["customer_id"], row["conversation_id"], row["status"], row["team_id"],
              bool(row["closed_without_reply"]), bool(row["abandoned"]),
              _stored_value("closed_at", row["closed_at"]),
              close(row["resolution_business_seconds"],
                    business.get((row["customer_id"], row["conversation_id"]))))
             for row in rows["conversations"]],
        ),
        "sla_events": (
            [(r.customer_id, r.conversation_id, r.metric, r.started_by, r.policy, r.team_id, r.status,
              *(_comparable(at) for at in (r.due_at, r.met_at, r.breached_at, r.ended_at)))
             for r in tables.sla.values()],
            [(row["customer_id"], row["conversation_id"], row["metric"], row["started_by"], row["policy"],
              row["team_id"], row["status"],
              *(_stored_value(at, row[at]) for at in ("due_at", "met_at", "breached_at", "ended_at")))
             for row in rows["sla_events"]],
        ),
        "engagement_changes": (
            [(c.customer_id, c.previous_level, c.level) for c in tables.changes],
            [(row["customer_id"], row["previous_level"], row["level"]) for row in rows["engagement_changes"]],
        ),
        "surveys": (
            [(r.event_id, r.score) for r in tables.surveys.values()],
            [(row["event_id"], int(row["score"])) for row in stream["surveys"]],
        ),
    }  # fmt: skip
    return {name: (keys(wanted), keys(found)) for name, (wanted, found) in pairs.items() if name in stream}
