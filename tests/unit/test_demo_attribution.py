"""The demo's story holds in the attribution view's definition: on 90 days of the demo's
business, the interactions ranked first are the slow agents' and the conversations left
unanswered or answered late (the simulator spoils exactly those, SPEC §5b)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import takewhile

from touchstream.dashboard.experience import LEAST_OUTCOMES
from touchstream.producers.simulator import SLOW_AGENTS, Simulator, SimulatorConfig
from touchstream.runtime import BUSINESS_CUSTOMERS, BUSINESS_SESSIONS_PER_DAY, HISTORY_INCIDENT_AGO
from touchstream.settings import Settings
from touchstream.streams.metrics import MetricsConfig
from touchstream.streams.metrics.reference import attribution, outcome_tables

DAYS = 90


def test_the_demo_ranks_slow_agents_and_unanswered_or_late_conversations_first() -> None:
    start = datetime(2026, 1, 5, tzinfo=UTC)
    end = start + timedelta(days=DAYS)
    config = SimulatorConfig(  # as `runtime.DemoTraffic.business`, with the demo's default seed
        seed=Settings().demo_seed + 1,
        customers=BUSINESS_CUSTOMERS,
        sessions_per_second=BUSINESS_SESSIONS_PER_DAY / 86_400,
        incident_at=end - HISTORY_INCIDENT_AGO,
        rhythm=True,
    )
    events = list(takewhile(lambda e: e.occurred_at < end, Simulator(config, start).events(10**7)))
    newest = max(event.occurred_at for event in events)
    sums = attribution(outcome_tables(events, MetricsConfig(), newest, newest)["outcome_touchpoints"])
    everything = sums["all", "", "", "", "", ""]
    overall = everything["bad_outcomes"] / everything["outcomes"]
    # The view's first grouping: agents and interaction quality, ranked by the linear model's lift.
    ranked = sorted(
        (
            (group["linear_bad_weight"] / group["linear_weight"] / overall, agent or quality)
            for (grouping, _, _, agent, _, quality), group in sums.items()
            if grouping in ("agent", "quality") and group["outcomes"] >= LEAST_OUTCOMES
        ),
        reverse=True,
    )
    first = {name for _, name in ranked[:6]}
    assert first == {"unanswered", "answered_late", "late", *SLOW_AGENTS}, ranked[:10]
    assert ranked[5][0] > 1 > ranked[-1][0], ranked  # the first rows above the overall share, the last below
