"""The metric core against its brute-force definition, in any arrival order within grace."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import event
from touchstream.schemas.touchpoint import Actor, Channel, Kind, TouchpointEvent
from touchstream.streams.metrics import Engine, MetricsConfig, Outputs
from touchstream.streams.metrics.config import SlaPolicy
from touchstream.streams.metrics.records import (
    ConversationRow,
    EngagementRow,
    ResponseRecord,
    RowKey,
    SlaEventRow,
    SurveyRow,
    WaitingRow,
)
from touchstream.streams.metrics.reference import Tables, recompute
from touchstream.streams.metrics.schedule import Schedule
from touchstream.streams.metrics.state import conversation_key

T0 = datetime(2026, 3, 2, tzinfo=UTC)
GRACE = timedelta(minutes=10)
#: SLA policies by team, priority and channel, in calendar and business hours.
POLICIES = (
    SlaPolicy("urgent billing chat", team="billing", priority="urgent", channel="chat",
              first_response=timedelta(minutes=10), next_response=timedelta(minutes=30),
              resolution=timedelta(hours=2), business=True),
    SlaPolicy("billing", team="billing", first_response=timedelta(hours=1), resolution=timedelta(days=1),
              business=True),
    SlaPolicy("email", channel="email", first_response=timedelta(hours=4), next_response=timedelta(hours=2),
              business=True),
    SlaPolicy("default", first_response=timedelta(minutes=20), next_response=timedelta(minutes=15),
              resolution=timedelta(hours=6)),
)  # fmt: skip
CONFIGS = {
    "spec defaults": MetricsConfig(grace=GRACE),
    # Conversations close after hours, not days: automatic closes within the drawn span.
    "quick auto-close": MetricsConfig(
        grace=GRACE, auto_close_after={channel: timedelta(hours=5) for channel in Channel}
    ),
    "fast decay, business hours": MetricsConfig(
        grace=GRACE,
        half_life=timedelta(hours=6),
        daily_cap=3,
        business_hours={
            Channel.CHAT: Schedule.parse({"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}}),
            Channel.EMAIL: Schedule.parse({"hours": {"mon": "00:00-00:30,02:00-03:00"}}),
        },
    ),
    # SLA policies by team, priority and channel, in calendar and business hours, with
    # targets short enough to be met, breached and cancelled within the drawn span.
    "sla policies": MetricsConfig(
        grace=GRACE,
        auto_close_after={channel: timedelta(hours=20) for channel in Channel},
        team_hours={
            "billing": Schedule.parse({"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}})
        },
        business_hours={Channel.EMAIL: Schedule.parse({"hours": {"mon-tue": "08:00-12:00"}})},
        sla_policies=POLICIES,
    ),
}
PROPERTY = settings(
    max_examples=int(os.environ.get("PROPERTY_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

SHAPES: dict[str, dict[str, Any]] = {
    "customer_chat": {"channel": "chat", "kind": "message", "direction": "inbound", "actor": "customer"},
    "customer_call": {"channel": "phone", "kind": "call", "direction": "inbound", "actor": "customer"},
    "customer_email": {"channel": "email", "kind": "message", "direction": "inbound", "actor": "customer"},
    "agent_chat": {"channel": "chat", "kind": "message", "direction": "outbound", "actor": "agent",
                   "agent_id": "agent-1"},
    "agent_email": {"channel": "email", "kind": "message", "direction": "outbound", "actor": "agent",
                    "agent_id": "agent-2"},
    "bot_chat": {"channel": "chat", "kind": "message", "direction": "outbound", "actor": "bot"},
    "ticket": {"channel": "helpdesk", "kind": "ticket_opened", "direction": "inbound", "actor": "customer"},
    "page_view": {"channel": "web", "kind": "page_view", "direction": "inbound", "actor": "customer"},
    "click": {"channel": "web", "kind": "click", "direction": "inbound", "actor": "customer"},
    "purchase": {"channel": "web", "kind": "purchase", "direction": "none", "actor": "customer"},
    "nps": {"channel": "chat", "kind": "survey_response", "direction": "inbound", "actor": "customer",
            "survey": {"type": "nps", "score": 9}},
    "opt_out": {"channel": "web", "kind": "consent_updated", "direction": "inbound", "actor": "customer",
                "consent": {"analytics": False}},
    "opt_in": {"channel": "web", "kind": "consent_updated", "direction": "inbound", "actor": "customer",
               "consent": {"analytics": True}},
    "erasure": {"channel": "web", "kind": "erasure_requested", "direction": "inbound", "actor": "customer"},
    "close": {"channel": "chat", "kind": "conversation_closed", "direction": "outbound", "actor": "agent",
              "agent_id": "agent-1"},
    "resolve": {"channel": "helpdesk", "kind": "ticket_resolved", "direction": "none", "actor": "agent"},
    "reopen": {"channel": "chat", "kind": "conversation_opened", "direction": "none", "actor": "agent"},
    "snooze": {"channel": "email", "kind": "conversation_snoozed", "direction": "none", "actor": "agent"},
    "team_chat": {"channel": "chat", "kind": "message", "direction": "inbound", "actor": "customer",
                  "team_id": "billing"},
    "urgent_chat": {"channel": "chat", "kind": "message", "direction": "inbound", "actor": "customer",
                    "attributes": {"priority": "urgent"}},
}  # fmt: skip
COMMON = ["customer_chat", "agent_chat", "customer_email", "agent_email", "page_view", "click", "purchase"]
RARE = ["customer_call", "bot_chat", "ticket", "nps", "opt_out", "opt_in", "erasure"]
#: Conversation status (SPEC §5): closes, snoozes and reopens, and teams.
STATUS = ["close", "resolve", "reopen", "snooze", "team_chat", "urgent_chat"]


@st.composite
def journeys(draw: st.DrawFn) -> list[TouchpointEvent]:
    count = draw(st.integers(1, 40))
    events = []
    for number in range(count):
        shape = draw(st.sampled_from(COMMON) | st.sampled_from(RARE) | st.sampled_from(STATUS))
        seconds = draw(st.integers(0, 3 * 86400) | st.integers(0, 3600))
        occurred = T0 + timedelta(seconds=seconds)
        extra: dict[str, Any] = {}
        if shape == "snooze":
            wake = occurred + timedelta(seconds=draw(st.integers(-600, 2 * 86400)))
            extra["attributes"] = {"until": wake.isoformat()}
        events.append(
            event(
                event_id=f"e{number:03d}",
                customer_id=draw(st.sampled_from(["ann", "bob", "cy"])),
                occurred_at=occurred.isoformat(),
                conversation_id=draw(st.sampled_from([None, None, "conv-1", "conv-2"])),
                **SHAPES[shape],
                **extra,
            )
        )
    # Much later, one event moves event time on, so decay has time to lower levels.
    events.append(event(event_id="tail", customer_id="zed", channel="web", kind="page_view",
                        occurred_at=(T0 + timedelta(days=9)).isoformat(), conversation_id=None))  # fmt: skip
    return events


@st.composite
def arrivals(draw: st.DrawFn, events: list[TouchpointEvent]) -> list[list[TouchpointEvent]]:
    """An arrival order in which nothing is late (each event is at most `grace` behind any
    event that came before it), some events redelivered, cut into batches."""
    delays = [draw(st.integers(0, int(GRACE.total_seconds()) - 1)) for _ in events]
    order = sorted(
        range(len(events)), key=lambda i: (events[i].occurred_at + timedelta(seconds=delays[i]), i)
    )
    sequence = [events[i] for i in order]
    for index in draw(st.lists(st.integers(0, len(sequence) - 1), max_size=5)):
        sequence.insert(draw(st.integers(index, len(sequence))), sequence[index])
    cuts = sorted(draw(st.lists(st.integers(0, len(sequence)), max_size=6)))
    return [sequence[a:b] for a, b in zip([0, *cuts], [*cuts, len(sequence)], strict=True)]


@dataclass
class Table:
    """The metric tables as `FROM t FINAL` shows them: row and final flag by row key,
    written the way `sinks.metric_rows` writes a step."""

    rows: dict[RowKey, tuple[Any, bool]] = field(default_factory=dict)

    def apply(self, out: Outputs) -> None:
        for erasure in out.erased:
            self.rows = {key: row for key, row in self.rows.items() if key[1][0] != erasure.customer_id}
        for key in out.retracted:
            self.rows.pop(key, None)
        self.rows |= {key: (row, True) for key, row in out.final.keyed().items()}
        self.rows |= {key: (row, False) for key, row in out.live.keyed().items()}

    def view(self, *, settled: bool = False) -> Tables:
        """The live view, or the settled one (`WHERE final`)."""
        return as_tables([row for row, final in self.rows.values() if final or not settled])

    def provisional_keys(self) -> set[RowKey]:
        return {key for key, (_, final) in self.rows.items() if not final}


def as_tables(rows: list[Any]) -> Tables:
    tables = Tables()
    for row in rows:
        if isinstance(row, ResponseRecord):
            tables.responses[row.reply_event_id] = row
        elif isinstance(row, SurveyRow):
            tables.surveys[row.event_id] = row
        elif isinstance(row, WaitingRow):
            tables.waiting[row.customer_id, row.conversation_id] = row
        elif isinstance(row, ConversationRow):
            tables.conversations[row.customer_id, row.conversation_id] = row
        elif isinstance(row, SlaEventRow):
            tables.sla[row.customer_id, row.conversation_id, row.metric, row.started_by] = row
        elif isinstance(row, EngagementRow):
            tables.engagement[row.customer_id] = row
        else:
            tables.changes.append(row)
    return tables


def run(engine: Engine, batches: list[list[TouchpointEvent]]) -> tuple[Table, Outputs]:
    """Feed the batches and apply every step's outputs as the sink would."""
    table, total = Table(), Outputs()
    for batch in batches:
        out = engine.process(batch)
        table.apply(out)
        total.extend(out)
    return table, total


def assert_same(actual: Tables, expected: Tables) -> None:
    assert actual.responses == expected.responses
    assert actual.surveys == expected.surveys
    assert actual.waiting == expected.waiting
    assert actual.conversations == expected.conversations
    assert actual.sla == expected.sla
    assert sorted(actual.engagement) == sorted(expected.engagement)
    for customer, row in expected.engagement.items():
        got = actual.engagement[customer]
        assert got.level == row.level and math.isclose(got.score, row.score, rel_tol=1e-9)
        assert abs(got.updated_at - row.updated_at) < timedelta(milliseconds=1)
        counts = lambda r: (r.interactions_24h, r.interactions_7d, r.interactions_30d, r.active_channels_30d)  # noqa: E731
        assert counts(got) == counts(row)
    assert len(actual.changes) == len(expected.changes)
    key = lambda change: (change.customer_id, change.changed_at)  # noqa: E731
    pairs = zip(sorted(actual.changes, key=key), sorted(expected.changes, key=key), strict=True)
    for change, wanted in pairs:
        assert (change.customer_id, change.previous_level, change.level) == (
            wanted.customer_id, wanted.previous_level, wanted.level)  # fmt: skip
        assert abs(change.changed_at - wanted.changed_at) < timedelta(milliseconds=1)
        assert math.isclose(change.score, wanted.score, rel_tol=1e-9)


def assert_views(table: Table, received: list[TouchpointEvent], engine: Engine) -> None:
    """The live view is the brute force over everything received, at the newest event
    time; the settled rows are the brute force before the horizon."""
    config = engine.config
    assert engine.newest is not None and engine.horizon is not None
    assert_same(table.view(), recompute(received, config, None, engine.newest))
    # An erasure takes effect when it is read: its customer's settled rows go at once.
    erased = {
        e.customer_id
        for e in received
        if e.kind is Kind.ERASURE_REQUESTED and e.occurred_at >= engine.horizon
    }
    settled = table.view(settled=True)
    expected = recompute([e for e in received if e.customer_id not in erased], config, engine.horizon)
    # Rows of events and instants (responses, surveys, level changes) are final exactly
    # when they fall before the horizon.
    assert_same(
        Tables(responses=settled.responses, surveys=settled.surveys, changes=settled.changes),
        Tables(responses=expected.responses, surveys=expected.surveys, changes=expected.changes),
    )
    # A latest-state row (engagement, waiting) is final when no later event or decay
    # changed it; otherwise the live row in its place is provisional.
    provisional = table.provisional_keys()
    for customer, engaged in expected.engagement.items():
        if ("engagement", (customer,)) not in provisional:
            assert_same(Tables(engagement={customer: settled.engagement[customer]}),
                        Tables(engagement={customer: engaged}))  # fmt: skip
    assert set(settled.engagement) <= set(expected.engagement)
    for pair, waiting in expected.waiting.items():
        assert settled.waiting.get(pair) == waiting or ("waiting", pair) in provisional
    assert set(settled.waiting) <= set(expected.waiting)
    for pair, conversation in expected.conversations.items():
        assert settled.conversations.get(pair) == conversation or ("conversations", pair) in provisional
    assert set(settled.conversations) <= set(expected.conversations)
    for ident, target in expected.sla.items():
        assert settled.sla.get(ident) == target or ("sla_events", ident) in provisional
    assert set(settled.sla) <= set(expected.sla)
    for key, (row, final) in table.rows.items():
        instant = getattr(row, "replied_at", None) or getattr(row, "changed_at", None) or getattr(
            row, "updated_at", None) or row.occurred_at  # fmt: skip
        assert final == (instant < engine.horizon), key


@pytest.mark.parametrize("name", sorted(CONFIGS))
@PROPERTY
@given(data=st.data())
def test_any_arrival_within_grace_equals_the_brute_force_definition(name: str, data: st.DataObject) -> None:
    config = CONFIGS[name]
    events = data.draw(journeys())
    engine = Engine(config)
    table, outputs = run(engine, data.draw(arrivals(events)))
    assert outputs.late == []
    assert engine.horizon is not None
    assert_views(table, events, engine)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@PROPERTY
@given(data=st.data())
def test_after_every_batch_the_live_and_settled_views_equal_the_brute_force(
    name: str, data: st.DataObject
) -> None:
    config = CONFIGS[name]
    events = data.draw(journeys())
    engine, table, received = Engine(config), Table(), []
    for batch in data.draw(arrivals(events)):
        table.apply(engine.process(batch))
        received += batch
        if engine.newest is not None and engine.horizon is not None:
            assert_views(table, received, engine)
    # The idle rule settles everything: the live view is then final.
    assert engine.newest is not None
    later = engine.newest + config.grace + timedelta(seconds=1)
    if (out := engine.idle(later)) is not None:
        table.apply(out)
    assert table.provisional_keys() == set()
    assert_views(table, received, engine)


@pytest.mark.parametrize("name", ["quick auto-close", "sla policies"])
@PROPERTY
@given(data=st.data())
def test_live_views_deferred_while_behind_are_exact_at_the_next_live_step(
    name: str, data: st.DataObject
) -> None:
    """A backlog's steps write final rows only (`live=False`); the first live step after
    them brings every deferred live view up to date, retracting what no longer holds."""
    config = CONFIGS[name]
    events = data.draw(journeys())
    engine, table, received = Engine(config), Table(), []
    for batch in data.draw(arrivals(events)):
        live = data.draw(st.booleans(), label="live")
        table.apply(engine.process(batch, live=live))
        received += batch
        if live and engine.newest is not None and engine.horizon is not None:
            assert_views(table, received, engine)
    table.apply(engine.process([]))  # a step that keeps up
    assert_views(table, received, engine)


@PROPERTY
@given(data=st.data())
def test_redelivery_and_batching_change_nothing(data: st.DataObject) -> None:
    config = CONFIGS["fast decay, business hours"]
    events = data.draw(journeys())
    in_order = sorted(events, key=lambda e: (e.occurred_at, e.event_id))
    once, _ = run(Engine(config), [in_order])
    batches = data.draw(arrivals(events))
    shuffled, outputs = run(Engine(config), batches)
    assert_same(shuffled.view(), once.view())
    assert_same(shuffled.view(settled=True), once.view(settled=True))
    assert outputs.duplicates == sum(len(batch) for batch in batches) - len(events)


def test_late_events_are_reported_and_not_folded_in() -> None:
    config = MetricsConfig(grace=GRACE)
    base = [
        event(event_id="m1", occurred_at=T0.isoformat(), conversation_id="c"),
        event(event_id="far", customer_id="other", occurred_at=(T0 + timedelta(hours=2)).isoformat()),
    ]
    late_reply = event(event_id="r1", occurred_at=(T0 + timedelta(minutes=5)).isoformat(),
                       conversation_id="c", direction="outbound", actor="agent", agent_id="a")  # fmt: skip
    engine = Engine(config)
    table, _ = run(engine, [base])
    out = engine.process([late_reply])
    assert [(late.event_id, late.horizon) for late in out.late] == [("r1", T0 + timedelta(hours=2) - GRACE)]
    assert out.final.responses == out.live.responses == []
    assert table.view().waiting["cust-1", "c"].answered is False
    assert engine.process([late_reply]).duplicates == 1, "a redelivered late event is a duplicate"


def test_response_times_first_response_and_waiting() -> None:
    at = lambda minutes: (T0 + timedelta(minutes=minutes)).isoformat()  # noqa: E731
    events = [
        event(event_id="q1", occurred_at=at(0), conversation_id="c"),
        event(event_id="q2", occurred_at=at(2), conversation_id="c"),
        event(event_id="bot", occurred_at=at(3), conversation_id="c", direction="outbound", actor="bot"),
        event(event_id="a1", occurred_at=at(5), conversation_id="c", direction="outbound", actor="agent",
              agent_id="kim"),
        event(event_id="a2", occurred_at=at(6), conversation_id="c", direction="outbound", actor="agent"),
        event(event_id="q3", occurred_at=at(30), conversation_id="c"),
        event(event_id="a3", occurred_at=at(31), conversation_id="c", direction="outbound", actor="agent"),
        event(event_id="q4", occurred_at=at(40), conversation_id="c"),
        event(event_id="tick", customer_id="z", occurred_at=at(100), conversation_id=None, channel="web",
              kind="page_view"),
    ]  # fmt: skip
    tables = run(Engine(MetricsConfig(grace=GRACE)), [events])[0].view(settled=True)
    assert sorted((r.reply_event_id, r.response_seconds, r.is_first_response, r.agent_id)
                  for r in tables.responses.values()) == [
        ("a1", 300.0, True, "kim"), ("a3", 60.0, False, None)
    ]  # fmt: skip
    assert tables.waiting["cust-1", "c"].waiting_since == T0 + timedelta(minutes=40)
    with_bots = MetricsConfig(grace=GRACE, reply_actors=frozenset({Actor.AGENT, Actor.BOT}))
    bots_count = run(Engine(with_bots), [events])[0].view()
    assert bots_count.responses["bot"].response_seconds == 180.0


def test_sla_targets_are_met_breached_and_cancelled_under_the_first_matching_policy() -> None:
    """SPEC §5 "Teams and SLA policies", hand-checked on settled rows."""
    office = Schedule.parse({"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}})
    config = MetricsConfig(
        grace=GRACE,
        team_hours={"billing": office},
        sla_policies=(
            SlaPolicy("vip", team="billing", priority="urgent", first_response=timedelta(minutes=10),
                      resolution=timedelta(hours=1)),
            SlaPolicy("office", team="billing", first_response=timedelta(hours=1), business=True),
            SlaPolicy("default", first_response=timedelta(minutes=20), next_response=timedelta(minutes=15)),
        ),
    )  # fmt: skip
    at = lambda minutes: (T0 + timedelta(minutes=minutes)).isoformat()  # noqa: E731
    agent = {"direction": "outbound", "actor": "agent", "agent_id": "kim"}
    close = {"kind": "conversation_closed", "direction": "none", "actor": "agent", "agent_id": "lee"}
    billing = {"team_id": "billing"}
    events = [
        # No team: the default policy. A reply in time, then one 5 minutes late.
        event(event_id="d1", occurred_at=at(0), conversation_id="default"),
        event(event_id="d2", occurred_at=at(15), conversation_id="default", **agent),
        event(event_id="d3", occurred_at=at(30), conversation_id="default"),
        event(event_id="d4", occurred_at=at(50), conversation_id="default", **agent),
        # Closed before the first response was due: cancelled; the customer writes again.
        event(event_id="c1", occurred_at=at(0), conversation_id="closed"),
        event(event_id="c2", occurred_at=at(10), conversation_id="closed", **close),
        event(event_id="c3", occurred_at=at(12), conversation_id="closed"),
        # Billing, urgent: answered in 5 minutes, resolved 10 minutes after the hour.
        event(event_id="u1", occurred_at=at(0), conversation_id="urgent", attributes={"priority": "urgent"},
              **billing),
        event(event_id="u2", occurred_at=at(5), conversation_id="urgent", **agent),
        event(event_id="u3", occurred_at=at(70), conversation_id="urgent", **close),
        # Billing at 01:00 in Berlin on a Monday: an hour of office time is due at 10:00 there.
        event(event_id="o1", occurred_at=at(0), conversation_id="office", **billing),
        event(event_id="o2", occurred_at=at(500), conversation_id="office", **agent),
        event(event_id="tick", customer_id="z", occurred_at=at(2000), conversation_id=None, channel="web",
              kind="page_view"),
    ]  # fmt: skip
    tables = run(Engine(config), [events])[0].view(settled=True)
    sla = {(key[1], key[2], key[3]): row for key, row in tables.sla.items()}
    t = lambda m: T0 + timedelta(minutes=m)  # noqa: E731
    shown = {key: (r.policy, r.status, r.due_at, r.met_at, r.breached_at, r.ended_at, r.agent_id)
             for key, r in sla.items()}  # fmt: skip
    assert shown == {
        ("default", "first_response", "d1"): ("default", "met", t(20), t(15), None, t(15), "kim"),
        ("default", "next_response", "d3"): ("default", "breached", t(45), None, t(45), t(50), "kim"),
        ("closed", "first_response", "c1"): ("default", "cancelled", t(20), None, None, t(10), "lee"),
        ("closed", "first_response", "c3"): ("default", "breached", t(32), None, t(32), None, None),
        ("urgent", "first_response", "u1"): ("vip", "met", t(10), t(5), None, t(5), "kim"),
        ("urgent", "resolution", "u1"): ("vip", "breached", t(60), None, t(60), t(70), "lee"),
        ("office", "first_response", "o1"): ("office", "met", t(540), t(500), None, t(500), "kim"),
    }  # fmt: skip
    assert (sla["urgent", "resolution", "u1"].team_id, sla["urgent", "resolution", "u1"].priority) == (
        "billing", "urgent")  # fmt: skip
    assert sla["office", "first_response", "o1"].business is True
    assert {r.reply_event_id: r.sla_met for r in tables.responses.values()} == {
        "d2": True, "d4": False, "u2": True, "o2": True
    }  # fmt: skip


def test_conversations_close_snooze_reopen_and_close_by_themselves() -> None:
    """SPEC §5 "Conversation status", on the settled rows once event time moved on."""
    at = lambda minutes: (T0 + timedelta(minutes=minutes)).isoformat()  # noqa: E731
    agent = {"direction": "outbound", "actor": "agent", "agent_id": "kim"}
    status = {"direction": "none", "actor": "agent"}
    events = [
        # "closed": a customer waits, an agent closes it without a reply.
        event(event_id="c1", occurred_at=at(0), conversation_id="closed", team_id="billing"),
        event(event_id="c2", occurred_at=at(5), conversation_id="closed", kind="conversation_closed",
              **status),
        # "snoozed": answered, then snoozed for an hour; the customer writes during the snooze.
        event(event_id="s1", occurred_at=at(0), conversation_id="snoozed"),
        event(event_id="s2", occurred_at=at(1), conversation_id="snoozed", **agent),
        event(event_id="s3", occurred_at=at(2), conversation_id="snoozed", kind="conversation_snoozed",
              attributes={"until": at(62)}, **status),
        event(event_id="s4", occurred_at=at(30), conversation_id="snoozed"),
        # "woken": snoozed until minute 20, and nothing happens meanwhile.
        event(event_id="w1", occurred_at=at(0), conversation_id="woken"),
        event(event_id="w2", occurred_at=at(1), conversation_id="woken", kind="conversation_snoozed",
              attributes={"until": at(20)}, **status),
        # "abandoned": nobody answers for the channel's auto_close_after (7 days on chat).
        event(event_id="a1", occurred_at=at(0), conversation_id="abandoned", team_id="sales"),
        event(event_id="a2", occurred_at=at(3), conversation_id="abandoned", team_id="support"),
        # "reopened": resolved, then the customer writes again.
        event(event_id="r1", occurred_at=at(0), conversation_id="reopened", kind="ticket_opened",
              channel="helpdesk"),
        event(event_id="r2", occurred_at=at(10), conversation_id="reopened", channel="helpdesk", **agent),
        event(event_id="r3", occurred_at=at(20), conversation_id="reopened", channel="helpdesk",
              kind="ticket_resolved", **status),
        event(event_id="r4", occurred_at=at(60), conversation_id="reopened", channel="helpdesk"),
    ]  # fmt: skip

    def settled(minutes: int) -> tuple[Tables, dict[str, ConversationRow], dict[str, WaitingRow]]:
        """The settled rows once event time reached `minutes`."""
        tick = event(event_id="tick", customer_id="z", occurred_at=at(minutes), conversation_id=None,
                     channel="web", kind="page_view")  # fmt: skip
        tables = run(Engine(MetricsConfig(grace=GRACE)), [[*events, tick]])[0].view(settled=True)
        mine = lambda rows: {key[1]: row for key, row in rows.items() if key[0] == "cust-1"}  # noqa: E731
        return tables, mine(tables.conversations), mine(tables.waiting)

    tables, conversations, waiting = settled(100)
    closed = conversations["closed"]
    assert (closed.status, closed.closed_at, closed.closed_without_reply, closed.team_id) == (
        "closed", T0 + timedelta(minutes=5), True, "billing")  # fmt: skip
    assert (waiting["closed"].answered, waiting["closed"].status) == (False, "closed")
    assert "c2" not in tables.responses  # a close answers nothing
    # The customer wrote during the snooze: open again, waiting from minute 30.
    assert conversations["snoozed"].status == waiting["snoozed"].status == "open"
    assert waiting["snoozed"].waiting_since == T0 + timedelta(minutes=30)
    assert conversations["snoozed"].last_agent_id == "kim"
    # Snoozed until minute 20: open again since, still waiting.
    assert (conversations["woken"].status, conversations["woken"].updated_at) == (
        "open",
        T0 + timedelta(minutes=20),
    )
    # Resolved and reopened by the customer: open, waiting again.
    reopened = conversations["reopened"]
    assert (reopened.status, reopened.closed_at, reopened.channel) == ("open", None, "helpdesk")
    assert (waiting["reopened"].answered, waiting["reopened"].status) == (False, "open")
    queue = sorted(key for key, row in waiting.items() if not row.answered and row.status == "open")
    assert queue == ["abandoned", "reopened", "snoozed", "woken"]

    # Eight days on: chats nobody answered closed a week after their last event, abandoned
    # (help desks close after 30 days).
    _, conversations, waiting = settled(60 * 24 * 8)
    abandoned = conversations["abandoned"]
    assert (abandoned.status, abandoned.abandoned, abandoned.closed_without_reply, abandoned.team_id) == (
        "closed", True, False, "support")  # fmt: skip
    assert abandoned.closed_at == T0 + timedelta(days=7, minutes=3)
    assert conversations["woken"].closed_at == T0 + timedelta(days=7, minutes=1)
    assert conversations["snoozed"].abandoned and conversations["reopened"].status == "open"
    queue = sorted(key for key, row in waiting.items() if not row.answered and row.status == "open")
    assert queue == ["reopened"]


def test_a_snooze_needs_an_aware_until() -> None:
    for attributes, reason in (({}, 'needs attributes["until"]'), ({"until": "soon"}, "not an ISO 8601"),
                               ({"until": "2026-03-02T10:00:00"}, "no timezone")):  # fmt: skip
        with pytest.raises(ValueError, match=re.escape(reason)):
            event(kind="conversation_snoozed", direction="none", actor="agent", attributes=attributes)


def test_score_cap_levels_and_decay_changes() -> None:
    config = MetricsConfig(grace=timedelta(0))
    buys = [
        event(event_id=f"p{n:02d}", occurred_at=(T0 + timedelta(seconds=n)).isoformat(), kind="purchase",
              channel="web", direction="none", conversation_id=None)
        for n in range(25)
    ]  # fmt: skip
    # The score at the last purchase: only the day's first 20 count, each decayed since.
    score = sum(5 * 0.5 ** ((24 - n) / timedelta(days=7).total_seconds()) for n in range(20))
    tick = event(event_id="tick", customer_id="z", occurred_at=(T0 + timedelta(minutes=1)).isoformat(),
                 conversation_id=None, channel="web", kind="page_view")  # fmt: skip
    tables = run(Engine(config), [[*buys, tick]])[0].view()
    row = tables.engagement["cust-1"]
    assert (row.level, row.interactions_24h, row.active_channels_30d) == ("champion", 25, 1)
    assert math.isclose(row.score, score, rel_tol=1e-12) and row.updated_at == T0 + timedelta(seconds=24)
    # Hysteresis: the first purchase scores exactly 5 and holds medium while the score stays
    # above 4.5; 15 and 40 are reached one purchase late, because of decay.
    assert [(c.previous_level, c.level, c.changed_at) for c in tables.changes] == [
        ("dormant", "medium", T0), ("medium", "high", T0 + timedelta(seconds=3)),
        ("high", "champion", T0 + timedelta(seconds=8)),
    ]  # fmt: skip
    # Without hysteresis (h = 0, the plain definition) the first purchase falls to low at once.
    plain = run(Engine(replace(config, level_hysteresis=0.0)), [[*buys, tick]])[0].view()
    assert [(c.previous_level, c.level, c.changed_at) for c in plain.changes] == [
        ("dormant", "medium", T0), ("medium", "low", T0), ("low", "medium", T0 + timedelta(seconds=1)),
        ("medium", "high", T0 + timedelta(seconds=3)), ("high", "champion", T0 + timedelta(seconds=8)),
    ]  # fmt: skip

    later = event(event_id="later", customer_id="z", occurred_at=(T0 + timedelta(days=60)).isoformat(),
                  conversation_id=None, channel="web", kind="page_view")  # fmt: skip
    tables = run(Engine(config), [buys, [later]])[0].view(settled=True)
    drops = [c for c in tables.changes if c.customer_id == "cust-1"][3:]
    assert [(c.previous_level, c.level) for c in drops] == [
        ("champion", "high"), ("high", "medium"), ("medium", "low"), ("low", "dormant")
    ]  # fmt: skip
    for change, threshold in zip(drops, (40, 15, 5, 1), strict=True):
        floor = threshold * (1 - config.level_hysteresis)
        expected = T0 + timedelta(seconds=24) + timedelta(days=7) * math.log2(score / floor)
        assert abs(change.changed_at - expected) < timedelta(milliseconds=1)
        assert math.isclose(change.score, floor, rel_tol=1e-12)
    final = tables.engagement["cust-1"]
    assert final.level == "dormant" and final.updated_at == drops[-1].changed_at
    assert math.isclose(final.score, 0.9, rel_tol=1e-12), "the score at the crossing: threshold * (1 - h)"


def test_consent_suppresses_and_erasure_forgets() -> None:
    at = lambda minutes: (T0 + timedelta(minutes=minutes)).isoformat()  # noqa: E731
    events = [
        event(event_id="q1", occurred_at=at(0), conversation_id="c"),
        event(event_id="off", occurred_at=at(1), kind="consent_updated", consent={"analytics": False}),
        event(event_id="q2", occurred_at=at(2), conversation_id="d"),
        event(event_id="on", occurred_at=at(3), kind="consent_updated", consent={"analytics": True}),
        event(event_id="q3", occurred_at=at(4), conversation_id="e"),
        event(event_id="tick", customer_id="z", occurred_at=at(100), conversation_id=None),
    ]
    table, outputs = run(Engine(MetricsConfig(grace=GRACE)), [events])
    assert outputs.suppressed == 1
    tables = table.view(settled=True)
    assert sorted(key for customer, key in tables.waiting if customer == "cust-1") == ["c", "e"]

    erase = event(event_id="gone", occurred_at=at(5), kind="erasure_requested", conversation_id=None)
    after = event(event_id="q4", occurred_at=at(6), conversation_id="f")
    engine = Engine(MetricsConfig(grace=GRACE))
    table, outputs = run(engine, [events[:5], [erase, after, events[5]]])
    assert [proof.request_event_id for proof in outputs.final.erasures] == ["gone"]
    assert [erasure.customer_id for erasure in outputs.erased] == ["cust-1"]
    assert [erasure.before for erasure in outputs.erased] == [(T0 + timedelta(minutes=5), "gone")]
    tables = table.view(settled=True)
    assert sorted(key for customer, key in tables.waiting if customer == "cust-1") == ["f"]
    assert tables.engagement["cust-1"].interactions_30d == 1, "only what came after the erasure"


@PROPERTY
@given(data=st.data())
def test_a_restored_engine_carries_on_exactly(data: st.DataObject) -> None:
    """Stop after any batch, keep only the records of customers touched so far (what a
    changelog table holds), restore them into a new engine: the rest comes out the same."""
    config = CONFIGS["fast decay, business hours"]
    batches = data.draw(arrivals(data.draw(journeys())))
    stop = data.draw(st.integers(0, len(batches)))
    running, rows = Engine(config), Table()
    records: dict[str, str] = {}
    for batch in batches[:stop]:
        rows.apply(running.process(batch))
        records |= {customer: json.dumps(running.export(customer)) for customer in running.touched}
    restored = Engine(config)
    restored.restore(json.loads(record) for record in records.values())
    restored.restore_partition(json.loads(json.dumps(running.export_partition())))
    assert restored.horizon == running.horizon
    restored_rows = Table(dict(rows.rows))
    for batch in batches[stop:]:
        rows.apply(running.process(batch))
        restored_rows.apply(restored.process(batch))
        assert restored_rows.rows == rows.rows


def write(records: dict[bytes, bytes], engine: Engine) -> None:
    """The records of an engine's step into `records`, as a table applies them."""
    records |= {customer.encode(): engine.export_json(customer) for customer in engine.touched}
    for key, value in engine.retired.items():
        if value is None:
            records.pop(key, None)
        else:
            records[key] = value
    engine.touched, engine.retired = set(), {}


def stored_engine(config: MetricsConfig, records: dict[bytes, bytes]) -> Engine:
    """An engine that reads customers back from `records` (`write`)."""
    return Engine(config, load=records.get, keys=lambda prefix: [k for k in records if k.startswith(prefix)])


@pytest.mark.parametrize("name", ["fast decay, business hours", "quick auto-close"])
@PROPERTY
@given(data=st.data())
def test_an_engine_reading_customers_back_from_its_store_gives_the_same_rows(
    name: str, data: st.DataObject
) -> None:
    """Customers evicted after every batch (`keep` of 0 or 1) and read back from their
    records when an event, a decay crossing or a live view needs them, and a restart at
    any batch that notes crossings from the records' heads (`Engine.index`), and steps that
    defer live views (`live=False`, a backlog) where drawn; closed conversations kept out
    of the records (`Engine.retire`), read back when reopened and deleted by erasures:
    the rows, batch by batch, are those of an engine that keeps everyone in memory."""
    config = CONFIGS[name]
    batches = data.draw(arrivals(data.draw(journeys())))
    live = data.draw(st.lists(st.booleans(), min_size=len(batches), max_size=len(batches)))
    keep = data.draw(st.integers(0, 1))
    restart = data.draw(st.integers(0, len(batches)))
    records: dict[bytes, bytes] = {}

    memory, stored = Engine(config), stored_engine(config, records)
    expected, actual = Table(), Table()
    for number, batch in enumerate(batches):
        if number == restart:
            partition = json.loads(json.dumps(stored.export_partition()))
            stored = stored_engine(config, records)
            stored.index(records.items())
            stored.restore_partition(partition)
        expected.apply(memory.process(batch, live=live[number]))
        actual.apply(stored.process(batch, live=live[number]))
        write(records, stored)
        stored.evict(keep)
        assert actual.rows == expected.rows
    assert len(stored.customers) <= keep + len(stored.pending)
    later = memory.newest + config.grace + timedelta(seconds=1) if memory.newest else None
    if later is not None:
        for engine, table in ((memory, expected), (stored, actual)):
            if (out := engine.idle(later)) is not None:
                table.apply(out)
        assert actual.rows == expected.rows


def test_closed_conversations_leave_the_record_and_come_back_when_reopened() -> None:
    """A closed conversation with nothing left for time to change is kept out of its
    customer's record, in one of its own; a message in it reads it back, and an erasure
    deletes it. The rows are those of an engine that keeps everything in memory."""
    config = MetricsConfig(grace=GRACE)
    records: dict[bytes, bytes] = {}
    stored = stored_engine(config, records)
    memory, expected, actual = Engine(config), Table(), Table()
    at = lambda minutes: (T0 + timedelta(minutes=minutes)).isoformat()  # noqa: E731
    chat = {"customer_id": "ann", "conversation_id": "old"}
    reply = {"direction": "outbound", "actor": "agent", "agent_id": "lee"}
    ticks = iter(range(1000))

    def later(minutes: float) -> TouchpointEvent:  # another customer moves event time on
        return event(
            event_id=f"t{next(ticks)}", customer_id="zed", occurred_at=at(minutes), conversation_id=None
        )

    def step(*events: TouchpointEvent) -> None:
        expected.apply(memory.process(list(events)))
        actual.apply(stored.process(list(events)))
        write(records, stored)
        stored.evict(0)
        assert actual.rows == expected.rows

    step(
        event(event_id="a1", occurred_at=at(0), **chat),
        event(event_id="a2", occurred_at=at(1), **chat, **reply),
    )
    step(event(event_id="a3", occurred_at=at(2), kind="conversation_closed", **chat, **reply), later(30))
    step(later(60))
    assert "old" not in json.loads(records[b"ann"])["state"]["conversations"]
    assert conversation_key("ann", "old") in records, "kept in a record of its own"
    step(event(event_id="a4", occurred_at=at(90), **chat), later(120))
    assert json.loads(records[b"ann"])["state"]["conversations"]["old"][5] == "open", "reopened"
    step(event(event_id="a5", occurred_at=at(121), kind="conversation_closed", **chat, **reply), later(150))
    step(later(180))
    assert "old" not in json.loads(records[b"ann"])["state"]["conversations"]
    step(event(event_id="x", occurred_at=at(200), channel="web", kind="erasure_requested", customer_id="ann",
               conversation_id=None), later(230))  # fmt: skip
    step(later(260))
    assert conversation_key("ann", "old") not in records, "the erasure deleted it"
    step(event(event_id="a6", occurred_at=at(300), **chat), later(330))
    assert expected.view(settled=True).conversations == actual.view(settled=True).conversations


def test_the_horizon_waits_for_sources_with_unread_records() -> None:
    engine = Engine(MetricsConfig(grace=GRACE))
    hour = lambda h: (T0 + timedelta(hours=h)).isoformat()  # noqa: E731
    ahead = [(event(event_id=f"w{h}", channel="web", kind="page_view", occurred_at=hour(h),
                    conversation_id=None), "web") for h in range(6)]  # fmt: skip
    engine.process_sources(ahead, lagging={"web", "chat"})
    assert engine.horizon is None, "chat has unread records whose times are unknown"
    behind = [(event(event_id="c1", occurred_at=hour(1)), "chat")]
    engine.process_sources(behind, lagging={"chat"})
    assert engine.horizon == T0 + timedelta(hours=1) - GRACE
    out = engine.process_sources([(event(event_id="c2", occurred_at=hour(1.5)), "chat")], lagging=())
    assert out.late == [] and engine.horizon == T0 + timedelta(hours=5) - GRACE, "all caught up: the newest"
    late = engine.process_sources([(event(event_id="c3", occurred_at=hour(2)), "chat")], lagging=())
    assert [event.event_id for event in late.late] == ["c3"]


def test_an_erased_event_redelivered_is_not_stored_again() -> None:
    """A redelivery of an event at or before an erasure request, in the request's batch or
    a later one, is forgotten like the event itself (it was stored again before)."""
    engine = Engine(MetricsConfig(grace=GRACE))
    asked = event(event_id="q", occurred_at=T0.isoformat(), conversation_id="c")
    erasure = event(event_id="x", occurred_at=(T0 + timedelta(minutes=1)).isoformat(), channel="web",
                    kind="erasure_requested", conversation_id=None)  # fmt: skip
    after = event(event_id="r", occurred_at=(T0 + timedelta(minutes=2)).isoformat(), conversation_id="c")
    engine.process([asked])
    same_batch = engine.process([asked, erasure, after])
    assert same_batch.forgotten == {("cust-1", "q"), ("cust-1", "x")}
    later = engine.process([asked, after])
    assert later.forgotten == {("cust-1", "q")}


def restate(table: Table, engine: Engine, received: list[TouchpointEvent], late: set[str]) -> None:
    """What the worker does after a step with late events: the late events' customers
    recomputed from all their stored events, and their rows that the restatement did not
    write again deleted (`sinks.metric_rows.write_restated`)."""
    stored = {customer: [e for e in received if e.customer_id == customer] for customer in sorted(late)}
    out = engine.restate(stored)
    table.apply(out)
    written = out.final.keyed().keys() | out.live.keyed().keys()
    table.rows = {key: row for key, row in table.rows.items() if key[1][0] not in late or key in written}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@PROPERTY
@given(data=st.data())
def test_a_late_backfill_restated_gives_the_tables_of_the_whole_history(
    name: str, data: st.DataObject
) -> None:
    """Live traffic first, then an older history (any split in time): the backfill's late
    events restate their customers, and the tables equal the definitions over everything,
    as if it had all arrived in order."""
    config = CONFIGS[name]
    events = [e for e in data.draw(journeys()) if e.kind is not Kind.ERASURE_REQUESTED]
    cut = data.draw(st.sampled_from(sorted({e.occurred_at for e in events})))
    live, backfill = [e for e in events if e.occurred_at >= cut], [e for e in events if e.occurred_at < cut]
    engine = Engine(config)
    table, _ = run(engine, data.draw(arrivals(live)))
    received = list(live)
    for batch in data.draw(arrivals(backfill)) if backfill else []:
        out = engine.process(batch)
        table.apply(out)
        received += batch
        if out.late:
            restate(table, engine, received, {late.customer_id for late in out.late})
    unique = list({e.event_id: e for e in received}.values())
    assert_views(table, unique, engine)
    settled = engine.idle(engine.newest + GRACE * 2) if engine.newest else None
    if settled is not None:
        table.apply(settled)
        assert_views(table, unique, engine)
