"""Journeys and customer profiles (SPEC §5b) in real ClickHouse (chDB) against their
brute-force definitions, after a stream of any arrival order within the grace period,
with redeliveries and any batching, and again once the idle rule has settled it."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from tests.integration.test_metric_sinks import store
from tests.unit.test_metrics_core import GRACE, arrivals
from tests.unit.test_metrics_core import journeys as event_lists
from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.ddl import MAINTAINED, MIRRORS
from touchstream.sinks.maintained import MaintainedTables
from touchstream.streams.metrics import MetricsConfig
from touchstream.streams.metrics.reference import journeys, profiles
from touchstream.streams.partitions import PartitionEngines

CONFIG = MetricsConfig(grace=GRACE, journey_gap=timedelta(hours=6), profile_window=timedelta(days=2),
                       churn_after=timedelta(days=1))  # fmt: skip
VIEWS = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "150")) // 10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
TABLES = ("touchpoints", "late_events", "stream_horizons", "engagement", "engagement_changes", "responses",
          "surveys", "waiting", "erasures", *MAINTAINED, *MIRRORS, "attribution_totals")  # fmt: skip


def utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def stored_journeys(clickhouse: ClickHouse) -> list[tuple[Any, ...]]:
    rows = clickhouse.rows("SELECT * EXCEPT (version, is_deleted) FROM journeys FINAL")
    return sorted((r[0], r[1], utc(r[2]), utc(r[3]), tuple(r[4]), r[5], r[6], bool(r[7])) for r in rows)


def stored_profiles(clickhouse: ClickHouse) -> list[tuple[Any, ...]]:
    rows = clickhouse.rows("SELECT * EXCEPT (churns_at, version, is_deleted) FROM customer_profiles FINAL")
    return sorted(
        (r[0], utc(r[1]), utc(r[2]), r[3], tuple(r[4]), tuple(r[5]), tuple(r[6]), r[7], r[8], round(r[9], 6),
         r[10], r[11], bool(r[12]), bool(r[13]), bool(r[14]))
        for r in rows
    )  # fmt: skip


def expected(
    events: list[TouchpointEvent], horizon: datetime, newest: datetime
) -> tuple[list[Any], list[Any]]:
    trips = sorted(
        (j.journey_id, j.customer_id, j.started_at, j.ended_at, j.channel_path, j.touchpoints, j.outcome,
         j.final)
        for j in journeys(events, CONFIG, horizon)
    )  # fmt: skip
    people = sorted(
        (p.customer_id, p.first_seen_at, p.last_seen_at, p.preferred_channel, p.active_channels,
         p.active_hours, p.active_weekdays, p.purchases, p.level, round(p.score, 6), p.latest_nps,
         p.latest_csat, p.consent, p.churned, p.final)
        for p in profiles(events, CONFIG, horizon, newest)
    )  # fmt: skip
    return trips, people


def streamed(
    clickhouse: ClickHouse, config: MetricsConfig, batches: list[list[TouchpointEvent]]
) -> Iterator[tuple[datetime, datetime]]:
    """Stream `batches` through the real engine and sink into emptied tables (the views made
    with `config`); yield the recorded (horizon, newest event time) for the live view, then
    again once the idle rule has moved the horizon past the newest event.

    The maintained tables are computed as the worker computes them: after some batches and
    not others (their customers stay marked until then), and by a restarted process (a new
    `MaintainedTables`) now and then; which ones follows from the batches' sizes."""
    clickhouse.migrate(config)
    for table in TABLES:
        clickhouse.command(f"TRUNCATE TABLE {table}")
    note(
        repr(
            [
                [(e.event_id, e.customer_id, e.kind.value, e.occurred_at.isoformat()) for e in b]
                for b in batches
            ]
        )
    )
    engines = PartitionEngines(config, None, partitions=1)
    analytics = MaintainedTables(clickhouse.database, config)
    offset = 0
    for number, batch in enumerate(batches, 1):
        out = engines.process(((event, 0, "t") for event in batch), {})
        assert not out.late, "arrivals within the grace period"
        if len(batch) % 3 == 2:
            analytics = MaintainedTables(clickhouse.database, config)  # a restart
        last = number == len(batches)
        store(clickhouse, batch, out, offset, analytics, catch_up=last or len(batch) % 2 == 0)
        offset += len(batch)
    for settle in (False, True):
        if settle:
            settled = engines.idle([0], datetime.now(UTC))
            assert settled is not None
            store(clickhouse, [], settled, offset, analytics)
        horizon, newest = clickhouse.rows("SELECT max(horizon), max(newest) FROM stream_horizons")[0]
        yield utc(horizon), utc(newest)


@VIEWS
@given(data=st.data())
def test_journeys_and_profiles_equal_their_definitions(clickhouse: ClickHouse, data: st.DataObject) -> None:
    events = data.draw(event_lists())
    people: list[Any] = []
    for horizon, newest in streamed(clickhouse, CONFIG, data.draw(arrivals(events))):
        trips, people = expected(events, horizon, newest)
        assert stored_journeys(clickhouse) == trips
        assert stored_profiles(clickhouse) == people
    # Settled: a journey ending within the gap of the newest event may still grow, a profile not.
    assert all(person[-1] for person in people)
    assert math.isfinite(sum(person[9] for person in people))
