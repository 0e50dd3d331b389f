from __future__ import annotations

import itertools
from collections import Counter
from datetime import timedelta

from tests.factories import BASE_TIME
from touchstream.producers.simulator import DEFAULT_SLOW_SECONDS, SLOW_SECONDS, Simulator, SimulatorConfig
from touchstream.schemas.codec import Rejected, decode
from touchstream.schemas.touchpoint import Channel
from touchstream.settings import Settings
from touchstream.streams.metrics.config import DEFAULT_SLA


def test_same_seed_same_events() -> None:
    first = list(Simulator(SimulatorConfig(seed=3), BASE_TIME).events(3000))
    second = list(Simulator(SimulatorConfig(seed=3), BASE_TIME).events(3000))
    other = list(Simulator(SimulatorConfig(seed=4), BASE_TIME).events(3000))
    assert first == second
    assert first != other


def test_events_are_time_ordered_unique_and_varied() -> None:
    events = list(Simulator(SimulatorConfig(seed=1, sessions_per_second=0.5), BASE_TIME).events(20_000))
    assert all(a.occurred_at <= b.occurred_at for a, b in itertools.pairwise(events))
    assert len({e.event_id for e in events}) == len(events)
    channels = Counter(e.channel.value for e in events)
    kinds = Counter(e.kind.value for e in events)
    assert len(channels) == 10
    assert {"page_view", "message", "survey_response", "purchase", "ticket_resolved"} <= set(kinds)
    replies = [e for e in events if e.direction.value == "outbound" and e.actor.value == "agent"]
    assert replies and all(e.agent_id for e in replies)
    assert len({e.customer_id for e in events}) > 200


def test_invalid_share_produces_rejectable_records() -> None:
    simulator = Simulator(SimulatorConfig(seed=2, invalid_share=0.2), BASE_TIME)
    values = [value for _, value in simulator.records(2000)]
    reasons = [result.reason for result in map(decode, values) if isinstance(result, Rejected)]
    assert 250 < len(reasons) < 550
    assert all(reasons)


def test_runs_with_different_labels_share_no_event_or_conversation_id() -> None:
    def ids(run: str) -> tuple[set[str], set[str]]:
        events = list(Simulator(SimulatorConfig(seed=7, run=run), BASE_TIME).events(2000))
        return {e.event_id for e in events}, {e.conversation_id for e in events if e.conversation_id}

    first, again, other = ids("20261123T010000"), ids("20261123T010000"), ids("20261123T020000")
    assert first == again, "the same run label gives the same ids"
    assert first[0].isdisjoint(other[0]) and first[1].isdisjoint(other[1])
    assert all(event_id.startswith("sim-7-20261123T010000-") for event_id in first[0])


def test_with_rhythm_sessions_follow_the_hour_and_the_weekday() -> None:
    """Working hours are busier than nights, weekdays than weekends, and a week averages the
    configured rate; without rhythm every hour is alike."""
    rate = 400 / 86_400
    weeks = 4

    def by_slot(rhythm: bool) -> tuple[Counter[tuple[bool, int]], int]:
        config = SimulatorConfig(seed=5, customers=3000, sessions_per_second=rate, rhythm=rhythm)
        simulator = Simulator(config, BASE_TIME)
        end = BASE_TIME + timedelta(weeks=weeks)
        starts: Counter[tuple[bool, int]] = Counter()
        at = 0.0
        while (moment := BASE_TIME + timedelta(seconds=at)) < end:
            starts[moment.weekday() >= 5, moment.hour] += 1
            at = simulator._after(at)
        return starts, sum(starts.values())

    steady, steady_total = by_slot(rhythm=False)
    shaped, shaped_total = by_slot(rhythm=True)
    expected = rate * weeks * 7 * 86_400
    assert abs(shaped_total - expected) < 0.05 * expected
    assert abs(steady_total - expected) < 0.05 * expected

    def mean(counts: Counter[tuple[bool, int]], weekend: bool, hours: range) -> float:
        """Session starts per hour of `hours` on one day (weekend days or weekdays)."""
        days = weeks * (2 if weekend else 5)
        return sum(counts[weekend, hour] for hour in hours) / len(hours) / days

    day, night = range(9, 17), range(0, 5)
    assert mean(shaped, False, day) > 5 * mean(shaped, False, night)
    assert mean(shaped, False, day) > 1.4 * mean(shaped, True, day)
    assert mean(steady, False, day) < 1.3 * mean(steady, False, night)


def test_the_simulator_spoils_a_conversation_past_the_default_sla() -> None:
    """A reply slower than its channel's default SLA spoils the simulated conversation: the
    demo's bad experiences follow what the product itself calls late."""
    spoils_after = {channel: SLOW_SECONDS.get(channel, DEFAULT_SLOW_SECONDS) for channel in Channel}
    assert spoils_after == {channel: sla.total_seconds() for channel, sla in DEFAULT_SLA.items()}
    assert Settings().dashboard_sla_seconds == {"*": 300.0} | {
        channel.value: seconds for channel, seconds in SLOW_SECONDS.items()
    }
