"""The metrics recomputed by brute force from a full event list: the definition the engine
is checked against (property tests) and that `touchstream verify` can diff with.

Written for clarity, not speed: every customer's events are deduplicated, sorted by
(occurred_at, event_id), cut at the horizon, and each metric is computed from its
definition (scores as direct sums over the contributing events).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from touchstream.schemas.touchpoint import (
    DETRACTOR_MAX,
    DISSATISFIED_MAX,
    PROMOTER_MIN,
    SATISFIED_MIN,
    Actor,
    Channel,
    Direction,
    Kind,
    TouchpointEvent,
    snoozed_until,
)
from touchstream.streams.metrics.config import DEFAULT_PRIORITY, STATUS_KINDS, MetricsConfig
from touchstream.streams.metrics.engagement import WINDOWS, is_customer_initiated
from touchstream.streams.metrics.records import (
    CHURN_SIGNALS,
    ChurnRow,
    ConversationRow,
    EngagementRow,
    JourneyRow,
    LevelChange,
    OutcomeTouchpoint,
    ProfileRow,
    ResponseRecord,
    SlaEventRow,
    SurveyRow,
    TicketRow,
    WaitingRow,
    order_key,
)
from touchstream.streams.metrics.responses import is_customer_message, is_reply, priority_of


@dataclass
class Tables:
    """The state of the result tables: what `FINAL` queries would show."""

    responses: dict[str, ResponseRecord] = field(default_factory=dict)
    surveys: dict[str, SurveyRow] = field(default_factory=dict)
    changes: list[LevelChange] = field(default_factory=list)
    engagement: dict[str, EngagementRow] = field(default_factory=dict)
    #: By (customer_id, conversation_id): conversation ids are only unique per customer.
    waiting: dict[tuple[str, str], WaitingRow] = field(default_factory=dict)
    conversations: dict[tuple[str, str], ConversationRow] = field(default_factory=dict)
    #: By (customer_id, conversation_id, metric, started_by).
    sla: dict[tuple[str, str, str, str], SlaEventRow] = field(default_factory=dict)


def recompute(
    events: Iterable[TouchpointEvent],
    config: MetricsConfig,
    horizon: datetime | None,
    until: datetime | None = None,
) -> Tables:
    """The tables from the events before `horizon` (all of them for None), with level
    drops from decay alone before `until` (default: the horizon).

    The final view is `recompute(events, config, horizon)`; the live view is
    `recompute(events, config, None, newest event time)`.
    """
    if until is None:
        assert horizon is not None, "the live view needs the instant it is evaluated at"
        until = horizon
    tables = Tables()
    by_customer: dict[str, dict[str, TouchpointEvent]] = {}
    for event in events:
        by_customer.setdefault(event.customer_id, {}).setdefault(event.event_id, event)
    for customer_id, unique in sorted(by_customer.items()):
        ordered = sorted(
            (e for e in unique.values() if horizon is None or e.occurred_at < horizon), key=order_key
        )
        erasures = [index for index, event in enumerate(ordered) if event.kind is Kind.ERASURE_REQUESTED]
        if erasures:
            ordered = ordered[erasures[-1] + 1 :]
        aggregated = _with_consent(ordered)
        _responses(customer_id, aggregated, config, until, tables, live=horizon is None)
        for event in aggregated:
            if event.survey is not None:
                tables.surveys[event.event_id] = SurveyRow(
                    event.event_id,
                    customer_id,
                    event.channel.value,
                    event.survey.type,
                    event.survey.score,
                    event.conversation_id,
                    event.occurred_at,
                )
        _engagement(customer_id, [e for e in aggregated if is_customer_initiated(e)], config, until, tables)
    return tables


def _with_consent(ordered: list[TouchpointEvent]) -> list[TouchpointEvent]:
    consent, kept = True, []
    for event in ordered:
        if event.kind is Kind.CONSENT_UPDATED:
            assert event.consent is not None
            consent = event.consent.analytics
        elif consent:
            kept.append(event)
    return kept


def conversation_ids(events: list[TouchpointEvent], config: MetricsConfig) -> list[str]:
    ids: list[str] = []
    last_on_channel: dict[str, str] = {}
    last_in_conversation: dict[str, datetime] = {}
    for event in events:
        if event.conversation_id is not None:
            ids.append(event.conversation_id)
        else:
            channel = event.channel.value
            current = last_on_channel.get(channel)
            gap = config.inactivity[event.channel]
            if current is None or event.occurred_at - last_in_conversation[current] > gap:
                current = f"derived:{channel}:{event.event_id}"
            last_on_channel[channel] = current
            ids.append(current)
        last_in_conversation[ids[-1]] = event.occurred_at
    return ids


def _responses(
    customer_id: str,
    events: list[TouchpointEvent],
    config: MetricsConfig,
    until: datetime,
    tables: Tables,
    live: bool,
) -> None:
    conversations: dict[str, list[TouchpointEvent]] = {}
    for event, conversation_id in zip(events, conversation_ids(events, config), strict=True):
        conversations.setdefault(conversation_id, []).append(event)
    for conversation_id, members in conversations.items():
        _conversation(customer_id, conversation_id, members, config, until, tables, live)


def _conversation(
    customer_id: str,
    conversation_id: str,
    members: list[TouchpointEvent],
    config: MetricsConfig,
    until: datetime,
    tables: Tables,
    live: bool,
) -> None:
    """One conversation's response records, and its waiting and conversation rows at
    `until`: its events in order, and between them (and up to `until`) what time alone
    does: a snooze ends at its `until`, and with no event for the first event's channel's
    `auto_close_after` it closes (strictly after: an event at that instant keeps it open).
    The live view (`live`, evaluated at the newest event, with every event up to it)
    applies what happens at `until` itself too; the settled one, before the horizon, not.

    SLA targets, each a dict: started by a customer message (a response target when none
    is running, the resolution target once), under the policy matching the team and
    priority then; a reply ends the running response target, a close every running one;
    a target running past its due instant is breached there."""
    first = members[0]
    channel = first.channel
    status, closed_at, snoozed = "open", None, None
    abandoned = unreplied = responded = False
    team: str | None = None
    agent: str | None = None
    unanswered: list[TouchpointEvent] = []
    replied_to: TouchpointEvent | None = None  # the earliest message the latest reply answered
    last = first.occurred_at
    shown: dict[str, tuple[Any, datetime]] = {}  # table -> (row without its instant, changed at)
    priority = DEFAULT_PRIORITY
    closed_team: str | None = None  # the team at the latest close
    targets: list[dict[str, Any]] = []
    target_shown: dict[tuple[str, str], tuple[Any, datetime]] = {}

    def running(metric: str | None = None) -> list[dict[str, Any]]:
        return [t for t in targets if t["ended"] is None and (metric is None or (t["metric"] == "resolution")
                                                              == (metric == "resolution"))]  # fmt: skip

    def start(message: TouchpointEvent) -> None:
        metrics = [] if running("response") else ["next_response" if responded else "first_response"]
        if not any(t["metric"] == "resolution" for t in targets):
            metrics.append("resolution")
        policy = config.policy_for(team, priority, message.channel.value)
        for metric in metrics:
            target = None if policy is None else policy.target(metric)
            if policy is not None and target is not None:
                due = config.due_at(policy, target, team, message.channel.value, message.occurred_at)
                targets.append({
                    "metric": metric, "started": message.occurred_at, "by": message.event_id,
                    "channel": message.channel.value,
                    "team": team, "priority": priority, "policy": policy.name,
                    "seconds": target.total_seconds(), "business": policy.business, "due": due,
                    "status": "pending", "ended": None, "agent": None,
                })  # fmt: skip

    def end(which: list[dict[str, Any]], at: datetime, agent_id: str | None, cancels: bool) -> None:
        for target in which:
            if target["status"] == "pending":
                target["status"] = "cancelled" if cancels and target["metric"] != "resolution" else "met"
            target["ended"], target["agent"] = at, agent_id

    def note(at: datetime) -> None:
        waiting = None
        wait = unanswered[0] if unanswered else replied_to  # whose channel the row shows
        if wait is not None:
            since = wait.occurred_at if unanswered else None
            waiting = (since, not unanswered, wait.channel.value, team, status, closed_at)
        conversation = (
            channel.value,
            team,
            status,
            first.occurred_at,
            closed_at,
            unreplied,
            abandoned,
            agent,
        )
        for table, row in (("waiting", waiting), ("conversations", conversation)):
            if row is not None and (table not in shown or shown[table][0] != row):
                shown[table] = (row, at)
        for target in targets:
            key, now = (
                (target["metric"], target["by"]),
                (target["status"], target["ended"], target["agent"]),
            )
            if key not in target_shown or target_shown[key][0] != now:
                target_shown[key] = (now, at)

    def time_passes(to: datetime, inclusive: bool = False) -> None:
        nonlocal status, closed_at, snoozed, abandoned, unreplied, closed_team
        while True:
            moment = None
            if status != "closed":
                deadline = last + config.auto_close_after[channel]
                moment = min(deadline, snoozed) if status == "snoozed" and snoozed is not None else deadline
            dues = [t["due"] for t in targets if t["status"] == "pending" and t["due"] is not None]
            soonest = min([*dues, *([moment] if moment is not None else [])], default=None)
            if soonest is None or soonest > to or (soonest == to and not inclusive):
                return
            if moment == soonest:
                if status == "snoozed" and snoozed is not None and snoozed <= deadline:
                    status, snoozed = "open", None
                else:
                    status, closed_at, snoozed, closed_team = "closed", moment, None, team
                    abandoned, unreplied = bool(unanswered), False
                    end(running(), moment, None, cancels=True)
            for target in targets:
                if target["status"] == "pending" and target["due"] == soonest:
                    target["status"] = "breached"
            note(soonest)

    for event in members:
        time_passes(event.occurred_at)
        at = event.occurred_at
        last = at
        if event.team_id is not None:
            team = event.team_id
        priority = priority_of(event) or priority
        if (is_customer_message(event) or event.kind is Kind.CONVERSATION_OPENED) and status != "open":
            status, closed_at, snoozed, abandoned, unreplied = "open", None, None, False, False
        if is_customer_message(event):
            unanswered.append(event)
            start(event)
        elif is_reply(event, config):
            if event.agent_id is not None:
                agent = event.agent_id
            if unanswered:
                earliest = unanswered[0]
                ended = running("response")
                end(ended, at, event.agent_id, cancels=False)
                tables.responses[event.event_id] = ResponseRecord(
                    event.event_id,
                    conversation_id,
                    customer_id,
                    earliest.channel.value,
                    event.agent_id,
                    (at - earliest.occurred_at).total_seconds(),
                    not responded,
                    earliest.occurred_at,
                    at,
                    config.business_seconds(earliest.channel, earliest.occurred_at, at, team),
                    ended[0]["status"] == "met" if ended else None,
                )
                responded, unanswered, replied_to = True, [], earliest
        elif event.kind in (Kind.CONVERSATION_CLOSED, Kind.TICKET_RESOLVED) and status != "closed":
            status, closed_at, snoozed, closed_team = "closed", at, None, team
            abandoned, unreplied = False, bool(unanswered)
            end(running(), at, event.agent_id, cancels=True)
        elif event.kind is Kind.CONVERSATION_SNOOZED and status != "closed":
            wake = snoozed_until(event)
            status, snoozed = ("snoozed", wake) if wake > at else ("open", None)
        note(at)
    time_passes(until, inclusive=live)
    if "waiting" in shown:
        (since, answered, on, team_id, state, closed), at = shown["waiting"]
        tables.waiting[customer_id, conversation_id] = WaitingRow(
            conversation_id, customer_id, on, since, answered, at, team_id, state, closed
        )
    (on, team_id, state, opened, closed, without_reply, gone, last_agent), at = shown["conversations"]
    tables.conversations[customer_id, conversation_id] = ConversationRow(
        conversation_id,
        customer_id,
        on,
        team_id,
        state,
        opened,
        closed,
        without_reply,
        gone,
        last_agent,
        at,
        None if closed is None else config.business_seconds(channel, opened, closed, closed_team),
    )
    for target in targets:
        (state, ended, by), at = target_shown[target["metric"], target["by"]]
        tables.sla[customer_id, conversation_id, target["metric"], target["by"]] = SlaEventRow(
            conversation_id, customer_id, target["metric"], target["started"], target["by"],
            target["channel"], target["team"], target["priority"], target["policy"], target["seconds"],
            target["business"],
            target["due"], state, ended if state == "met" else None,
            target["due"] if state == "breached" else None, ended, by, at,
        )  # fmt: skip


def _engagement(
    customer_id: str, actions: list[TouchpointEvent], config: MetricsConfig, horizon: datetime, tables: Tables
) -> None:
    counted: list[tuple[TouchpointEvent, float]] = []
    per_day: dict[tuple[str, object], int] = {}
    for event in actions:
        key = (event.kind.value, event.occurred_at.astimezone(UTC).date())
        per_day[key] = per_day.get(key, 0) + 1
        weight = config.weights.get(event.kind, 0.0) if per_day[key] <= config.daily_cap else 0.0
        counted.append((event, weight))

    def score(upto: int) -> float:
        """The score just after action `upto` (ties at one instant follow event order)."""
        at, half_life = counted[upto][0].occurred_at, config.half_life
        return sum(w * 0.5 ** ((at - e.occurred_at) / half_life) for e, w in counted[: upto + 1])

    def row(at: datetime, value: float, level: str) -> EngagementRow:
        recent = [e for e, _ in counted if at - WINDOWS[-1] < e.occurred_at <= at]
        day, week, month = (sum(1 for e in recent if at - window < e.occurred_at) for window in WINDOWS)
        return EngagementRow(
            customer_id=customer_id,
            score=value,
            level=level,
            interactions_24h=day,
            interactions_7d=week,
            interactions_30d=month,
            active_channels_30d=len({e.channel.value for e in recent}),
            last_interaction_at=max((e.occurred_at for e in recent), default=None),
            updated_at=at,
        )

    # The held level (SPEC §5 "Level hysteresis"): an event raises it to the score's
    # level; it falls only when decay takes the score below its floor, threshold * (1 - h).
    level, last_at, last_score = config.levels[0][0], None, 0.0
    for index, (event, _) in enumerate(counted):
        until = counted[index + 1][0].occurred_at if index + 1 < len(counted) else horizon
        at = event.occurred_at
        value = score(index)
        if config.rank(config.level_of(value)) > config.rank(level):
            tables.changes.append(LevelChange(customer_id, level, config.level_of(value), value, at))
            level = config.level_of(value)
        last_at, last_score = at, value
        # Decay between this action and the next (or the end): one change per floor crossed.
        while (floor := config.floor(level)) is not None and floor > 0:
            crossing = at + config.half_life * math.log2(value / floor)
            if not crossing < until:
                break
            lower = config.level_after_fall(level)
            tables.changes.append(LevelChange(customer_id, level, lower, floor, crossing))
            level, last_at, last_score = lower, crossing, floor
    if last_at is not None:
        tables.engagement[customer_id] = row(last_at, last_score, level)


def _kept(events: Iterable[TouchpointEvent]) -> dict[str, tuple[list[TouchpointEvent], bool]]:
    """Per customer, the events the definitions count (deduplicated, in order, after the
    latest erasure request, while analytics consent holds) and the consent state at the end."""
    by_customer: dict[str, dict[str, TouchpointEvent]] = {}
    for event in events:
        by_customer.setdefault(event.customer_id, {}).setdefault(event.event_id, event)
    kept = {}
    for customer_id, unique in sorted(by_customer.items()):
        ordered = sorted(unique.values(), key=order_key)
        erasures = [index for index, event in enumerate(ordered) if event.kind is Kind.ERASURE_REQUESTED]
        if erasures:
            ordered = ordered[erasures[-1] + 1 :]
        consents = [e.consent.analytics for e in ordered if e.kind is Kind.CONSENT_UPDATED and e.consent]
        kept[customer_id] = (_with_consent(ordered), consents[-1] if consents else True)
    return kept


def journey_outcome(events: list[TouchpointEvent]) -> str:
    """A journey's outcome: purchase, else its last survey answer's class, else ticket, else none."""
    if any(event.kind is Kind.PURCHASE for event in events):
        return "purchase"
    answers = [event.survey for event in events if event.survey is not None]
    if answers:
        return survey_class(answers[-1].type, answers[-1].score)
    if any(event.kind is Kind.TICKET_OPENED for event in events):
        return "ticket"
    return "none"


def survey_class(survey_type: str, score: int) -> str:
    """SPEC §5b outcome classes: NPS promoter 9-10 / passive 7-8 / detractor 0-6; CSAT
    satisfied 4-5 / neutral 3 / dissatisfied 1-2."""
    if survey_type == "nps":
        return "promoter" if score >= PROMOTER_MIN else "detractor" if score <= DETRACTOR_MAX else "passive"
    return (
        "satisfied" if score >= SATISFIED_MIN else "dissatisfied" if score <= DISSATISFIED_MAX else "neutral"
    )


def journeys(events: Iterable[TouchpointEvent], config: MetricsConfig, horizon: datetime) -> list[JourneyRow]:
    """Every journey of the events (one partition's, with its horizon): final once nothing
    before the horizon can extend it (its end plus the gap is before the horizon)."""
    rows = []
    for customer_id, (kept, _consent) in _kept(events).items():
        runs: list[list[TouchpointEvent]] = []
        for event in kept:
            if runs and event.occurred_at - runs[-1][-1].occurred_at <= config.journey_gap:
                runs[-1].append(event)
            else:
                runs.append([event])
        for run in runs:
            path = [event.channel.value for event in run]
            collapsed = tuple(
                channel for index, channel in enumerate(path) if index == 0 or path[index - 1] != channel
            )
            first, ended = run[0], run[-1].occurred_at
            rows.append(JourneyRow(
                f"{customer_id}:{first.event_id}", customer_id, first.occurred_at, ended, collapsed,
                len(run), journey_outcome(run), ended + config.journey_gap < horizon,
            ))  # fmt: skip
    return rows


def profiles(
    events: Iterable[TouchpointEvent], config: MetricsConfig, horizon: datetime, newest: datetime
) -> list[ProfileRow]:
    """Every customer's profile at `newest` (one partition's newest event time): the
    windows end at the customer's last counted event, churned is evaluated at `newest`;
    final once the horizon has passed the last event, the engagement row is settled (the
    same at the horizon as at `newest`), and churned reads the same at both instants."""
    materialized = list(events)
    engagement = recompute(materialized, config, None, newest).engagement
    settled = recompute(materialized, config, horizon).engagement
    rows = []
    for customer_id, (kept, consent) in _kept(materialized).items():
        if not kept:
            continue
        initiated = [event for event in kept if is_customer_initiated(event)]
        last_seen = kept[-1].occurred_at
        recent = [event for event in initiated if last_seen - config.profile_window < event.occurred_at]
        counts: dict[str, int] = {}
        latest: dict[str, tuple[datetime, str]] = {}
        hours, weekdays = [0] * 24, [0] * 7
        for event in recent:
            channel = event.channel.value
            counts[channel] = counts.get(channel, 0) + 1
            latest[channel] = max(latest.get(channel, order_key(event)), order_key(event))
            moment = event.occurred_at.astimezone(UTC)
            hours[moment.hour] += 1
            weekdays[moment.weekday()] += 1
        preferred = max(counts, key=lambda channel: (counts[channel], latest[channel])) if counts else None
        surveys = [event.survey for event in kept if event.survey is not None]
        nps = [survey.score for survey in surveys if survey.type == "nps"]
        csat = [survey.score for survey in surveys if survey.type == "csat"]
        state = engagement.get(customer_id)
        churns_at = initiated[-1].occurred_at + config.churn_after if initiated else None
        rows.append(ProfileRow(
            customer_id, kept[0].occurred_at, kept[-1].occurred_at, preferred, tuple(sorted(counts)),
            tuple(hours), tuple(weekdays), sum(1 for event in kept if event.kind is Kind.PURCHASE),
            state.level if state else config.levels[0][0], state.score if state else 0.0,
            nps[-1] if nps else None, csat[-1] if csat else None, consent,
            churns_at is not None and churns_at < newest,
            last_seen < horizon
            and (churns_at is None or churns_at < horizon or churns_at >= newest)
            and settled.get(customer_id) == state,
        ))  # fmt: skip
    return rows


def _conversations(kept: list[TouchpointEvent], config: MetricsConfig) -> dict[str, list[TouchpointEvent]]:
    """A customer's counted events by conversation (SPEC §5), each in event order."""
    conversations: dict[str, list[TouchpointEvent]] = {}
    for event, conversation_id in zip(kept, conversation_ids(kept, config), strict=True):
        conversations.setdefault(conversation_id, []).append(event)
    return conversations


def _reopens(event: TouchpointEvent) -> bool:
    """A customer message or `ticket_opened`: (re)opens a ticket."""
    return is_customer_message(event) or event.kind is Kind.TICKET_OPENED


def _waiting_at(members: list[TouchpointEvent], at: datetime, config: MetricsConfig) -> bool:
    """Whether the conversation has an unanswered customer message at `at`."""
    moves = [e for e in members if e.occurred_at <= at and (is_customer_message(e) or is_reply(e, config))]
    return bool(moves) and is_customer_message(moves[-1])


def _ticket_open_at(members: list[TouchpointEvent], at: datetime) -> bool:
    """Whether the conversation is an open ticket at `at`: opened, and its latest (re)opening
    is after its latest resolution."""
    moves = [e for e in members if e.occurred_at <= at and (e.kind is Kind.TICKET_RESOLVED or _reopens(e))]
    opened = any(e.kind is Kind.TICKET_OPENED for e in moves)
    return opened and moves[-1].kind is not Kind.TICKET_RESOLVED


def _latest_answer(kept: list[TouchpointEvent], survey_type: str, at: datetime) -> int | None:
    answers = [
        e.survey.score for e in kept if e.survey and e.survey.type == survey_type and e.occurred_at <= at
    ]
    return answers[-1] if answers else None


def _signals(
    kept: list[TouchpointEvent],
    conversations: dict[str, list[TouchpointEvent]],
    responses: list[ResponseRecord],
    config: MetricsConfig,
    at: datetime,
    last: datetime,
) -> tuple[str, ...]:
    """SPEC §5b's churn signals of a customer at `at`, whose last own action was at `last`."""
    nps, csat = _latest_answer(kept, "nps", at), _latest_answer(kept, "csat", at)
    found = {
        "unanswered": any(_waiting_at(members, at, config) for members in conversations.values()),
        "slow_response": any(
            last - config.lookback <= r.replied_at <= last
            and (sla := config.sla.get(Channel(r.channel))) is not None
            and r.response_seconds > sla.total_seconds()
            for r in responses
        ),
        "detractor": nps is not None and nps <= DETRACTOR_MAX,
        "dissatisfied": csat is not None and csat <= DISSATISFIED_MAX,
        "open_ticket": any(_ticket_open_at(members, at) for members in conversations.values()),
    }
    return tuple(signal for signal in CHURN_SIGNALS if found[signal])


@dataclass
class _Customer:
    """One customer's counted events and what the outcome definitions read of them."""

    kept: list[TouchpointEvent]
    conversations: dict[str, list[TouchpointEvent]]
    responses: list[ResponseRecord]
    #: What the brand did at each counted event (by event_id), for interaction quality.
    interactions: dict[str, _Interaction]
    changes: list[LevelChange]
    #: (last_interaction_at, churned_at, returned_at) of each churn up to the newest event time.
    churns: list[tuple[datetime, datetime, datetime | None]]


def _customers(
    events: Iterable[TouchpointEvent], config: MetricsConfig, newest: datetime
) -> dict[str, _Customer]:
    materialized = list(events)
    tables = recompute(materialized, config, None, newest)
    found = {}
    for customer_id, (kept, _consent) in _kept(materialized).items():
        initiated = [event.occurred_at for event in kept if is_customer_initiated(event)]
        churns = []
        for index, last in enumerate(initiated):
            churned_at = last + config.churn_after
            following = initiated[index + 1] if index + 1 < len(initiated) else None
            if (following is None and churned_at < newest) or (
                following is not None and following > churned_at
            ):
                churns.append((last, churned_at, following))
        responses = [r for r in tables.responses.values() if r.customer_id == customer_id]
        conversations = _conversations(kept, config)
        found[customer_id] = _Customer(
            kept,
            conversations,
            responses,
            _interactions(conversations, responses, config),
            [c for c in tables.changes if c.customer_id == customer_id],
            churns,
        )
    return found


@dataclass(frozen=True)
class _Interaction:
    """One counted event's part in its conversation, as interaction quality reads it."""

    #: The conversation's team at the event: the latest team_id seen in it up to the event.
    team_id: str | None
    #: A customer message's instant (None: not a customer message).
    message_at: datetime | None = None
    #: For a customer message: the response record of the first later reply of its
    #: conversation that made one, and the first later bot message's instant.
    answer: ResponseRecord | None = None
    bot_at: datetime | None = None
    #: For a reply: its own response record (None: it answered nothing).
    reply: ResponseRecord | None = None

    @staticmethod
    def _met(record: ResponseRecord) -> bool:
        """Whether the reply met the SLA policy's response target it ended (none: met)."""
        return record.sla_met is not False

    def quality(self, outcome_at: datetime) -> str:
        """SPEC §5b interaction quality at the outcome instant."""
        if self.message_at is not None:
            answer = self.answer
            if answer and answer.customer_message_at <= self.message_at and answer.replied_at <= outcome_at:
                return "answered_in_sla" if self._met(answer) else "answered_late"
            return "bot_only" if self.bot_at is not None and self.bot_at <= outcome_at else "unanswered"
        if self.reply is not None:
            return "in_sla" if self._met(self.reply) else "late"
        return "none"


def _is_bot_message(event: TouchpointEvent) -> bool:
    """A bot's message to the customer (not a status change)."""
    outbound = event.direction is Direction.OUTBOUND
    return outbound and event.actor is Actor.BOT and event.kind not in STATUS_KINDS


def _interactions(
    conversations: dict[str, list[TouchpointEvent]], responses: list[ResponseRecord], config: MetricsConfig
) -> dict[str, _Interaction]:
    """Per counted event of one customer (by event_id), its `_Interaction`."""
    by_reply = {r.reply_event_id: r for r in responses}
    found: dict[str, _Interaction] = {}
    for members in conversations.values():
        team: str | None = None
        for index, event in enumerate(members):
            team = event.team_id if event.team_id is not None else team
            if is_customer_message(event):
                later = members[index + 1 :]
                found[event.event_id] = _Interaction(
                    team, message_at=event.occurred_at,
                    answer=next((by_reply[e.event_id] for e in later if e.event_id in by_reply), None),
                    bot_at=next((e.occurred_at for e in later if _is_bot_message(e)), None),
                )  # fmt: skip
            else:
                reply = by_reply.get(event.event_id) if is_reply(event, config) else None
                found[event.event_id] = _Interaction(team, reply=reply)
    return found


def _churns(customers: dict[str, _Customer], config: MetricsConfig, horizon: datetime) -> list[ChurnRow]:
    """Every churn up to `newest` (one partition's newest event time) with its reactivation
    and signals; final once the horizon has passed its churn and its return (if any)."""
    rows = []
    for customer_id, customer in customers.items():
        for last, churned_at, returned_at in customer.churns:
            levels = [change.level for change in customer.changes if change.changed_at <= churned_at]
            rows.append(ChurnRow(
                customer_id, churned_at, last, returned_at, levels[-1] if levels else config.levels[0][0],
                _signals(customer.kept, customer.conversations, customer.responses, config, churned_at, last),
                churned_at < horizon and (returned_at is None or returned_at < horizon),
            ))  # fmt: skip
    return rows


def churn_outcome_id(customer_id: str, churned_at: datetime) -> str:
    """SPEC §6: `churn:<customer_id>:<churned_at ISO 8601>` (UTC, milliseconds, `Z`)."""
    return f"churn:{customer_id}:{churned_at.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%f')[:-3]}Z"


Weights = tuple[float, float, float, float, float]


def attribution_weights(times: list[datetime], outcome_at: datetime) -> list[Weights]:
    """Per touchpoint (in order), its weight under the last-touch, first-touch, linear, time
    decay (half-life 1 day before the outcome) and position-based models."""
    n = len(times)
    decay = [2 ** (-(outcome_at - t).total_seconds() / 86400) for t in times]
    total = sum(decay)
    weights: list[Weights] = []
    for index in range(n):
        position = 1 / n if n <= 2 else 0.4 if index in (0, n - 1) else 0.2 / (n - 2)
        weights.append((float(index == n - 1), float(index == 0), 1 / n, decay[index] / total, position))
    return weights


def _outcome_touchpoints(
    customers: dict[str, _Customer], config: MetricsConfig, horizon: datetime
) -> list[OutcomeTouchpoint]:
    """The touchpoints of every outcome (survey answers, and churns up to `newest`) with their
    team, interaction quality and attribution weights; survey answers are measurements, never
    touchpoints. Final once the horizon has passed the outcome (a churn's instant)."""
    rows = []
    for customer_id, customer in customers.items():
        outcomes: list[tuple[str, str, str, datetime, bool, bool]] = [
            (e.event_id, e.survey.type, survey_class(e.survey.type, e.survey.score), e.occurred_at, False,
             e.occurred_at < horizon)
            for e in customer.kept if e.survey is not None
        ]  # fmt: skip
        outcomes += [
            (churn_outcome_id(customer_id, churned_at), "churn", "churned", last, True, churned_at < horizon)
            for last, churned_at, _ in customer.churns
        ]
        for outcome_id, outcome_type, outcome_class, at, inclusive, final in outcomes:
            touched = [
                e for e in customer.kept
                if at - config.lookback <= e.occurred_at <= at and e.event_id != outcome_id
                and (inclusive or e.occurred_at < at) and e.kind is not Kind.SURVEY_RESPONSE
            ]  # fmt: skip
            weights = attribution_weights([e.occurred_at for e in touched], at)
            for position, (event, weight) in enumerate(zip(touched, weights, strict=True), start=1):
                interaction = customer.interactions[event.event_id]
                rows.append(OutcomeTouchpoint(
                    outcome_id, outcome_type, outcome_class, at, customer_id, event.event_id,
                    event.channel.value, event.kind.value, event.agent_id, interaction.team_id,
                    interaction.quality(at), position, len(touched), *weight, final,
                ))  # fmt: skip
    return rows


def _tickets(customers: dict[str, _Customer], config: MetricsConfig, horizon: datetime) -> list[TicketRow]:
    """Every ticket as its conversation's events give it; final once every event of the
    conversation is before the horizon."""
    rows = []
    for customer_id, customer in customers.items():
        first_responses = {r.conversation_id: r for r in customer.responses if r.is_first_response}
        for conversation_id, members in customer.conversations.items():
            openings = [index for index, e in enumerate(members) if e.kind is Kind.TICKET_OPENED]
            if not openings:
                continue
            ticket = members[openings[0] :]
            opening = ticket[0]
            resolutions = [e for e in ticket if e.kind is Kind.TICKET_RESOLVED]
            moves = [e for e in ticket if e.kind is Kind.TICKET_RESOLVED or _reopens(e)]
            resolved = moves[-1].kind is Kind.TICKET_RESOLVED
            first_resolved = resolutions[0] if resolutions else None
            opened_at = opening.occurred_at
            before = order_key(first_resolved) if first_resolved else (opened_at, "")
            replies = [e for e in ticket if is_reply(e, config) and order_key(e) < before]
            response = first_responses.get(conversation_id)
            rows.append(TicketRow(
                conversation_id, customer_id, opening.channel.value,
                opening.attributes.get("category") or "uncategorized",
                opening.attributes.get("priority") or "normal", opened_at,
                response.replied_at if response else None,
                response.response_seconds if response else None,
                response.agent_id if response else None,
                first_resolved.occurred_at if first_resolved else None,
                resolutions[-1].occurred_at if resolutions else None,
                sum(1 for a, b in pairwise(moves) if a.kind is Kind.TICKET_RESOLVED and _reopens(b)),
                "resolved" if resolved else "open",
                (first_resolved.occurred_at - opened_at).total_seconds() if first_resolved else None,
                (resolutions[-1].occurred_at - opened_at).total_seconds() if resolved else None,
                len(replies) == 1,
                members[-1].occurred_at < horizon,
            ))  # fmt: skip
    return rows


def outcome_tables(
    events: Iterable[TouchpointEvent], config: MetricsConfig, horizon: datetime, newest: datetime
) -> dict[str, list[Any]]:
    """The rows of `tickets`, `churn_events` and `outcome_touchpoints` the events give (one
    partition's, with its horizon and newest event time); the events are replayed once."""
    customers = _customers(events, config, newest)
    return {
        "tickets": _tickets(customers, config, horizon),
        "churn_events": _churns(customers, config, horizon),
        "outcome_touchpoints": _outcome_touchpoints(customers, config, horizon),
    }


def month_start(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(start: datetime) -> datetime:
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


def churn_rates(
    events: Iterable[TouchpointEvent], config: MetricsConfig, horizon: datetime, newest: datetime
) -> list[tuple[datetime, str, int, int, bool]]:
    """Per calendar month (UTC) from the first counted event's to `newest`'s, overall ('')
    and per signal: (month, signal, customers active at its start (with the signal, evaluated
    at that instant), of them (overall: of all customers) those who churned in the month,
    final: the month ended before the horizon)."""
    customers = _customers(events, config, newest)
    starts = [event.occurred_at for customer in customers.values() for event in customer.kept]
    if not starts:
        return []
    rows = []
    month = month_start(min(starts))
    while month <= newest:
        following = _next_month(month)
        active: dict[str, tuple[str, ...]] = {}
        churned: set[str] = set()
        for customer_id, customer in customers.items():
            if any(month <= churned_at < following for _, churned_at, _ in customer.churns):
                churned.add(customer_id)
            own = [
                e.occurred_at for e in customer.kept if is_customer_initiated(e) and e.occurred_at <= month
            ]
            if own and own[-1] > month - config.churn_after:
                active[customer_id] = _signals(
                    customer.kept, customer.conversations, customer.responses, config, month, own[-1]
                )
        final = following <= horizon
        rows.append((month, "", len(active), len(churned), final))
        for signal in CHURN_SIGNALS:
            flagged = {customer_id for customer_id, signals in active.items() if signal in signals}
            rows.append((month, signal, len(flagged), len(flagged & churned), final))
        month = following
    return rows


#: Attribution (SPEC §5b): outcome classes counted as bad, and the models' weights.
BAD_CLASSES = frozenset({"detractor", "dissatisfied", "churned"})
MODELS = ("last", "first", "linear", "time_decay", "position")


#: A group of the attribution view: (grouping, channel, kind, agent, team, quality).
Group = tuple[str, str, str, str, str, str]


def attribution(rows: Iterable[OutcomeTouchpoint]) -> dict[Group, dict[str, float]]:
    """The attribution view's sums, per group: the outcomes with a touchpoint in the group,
    the bad ones among them, the touchpoints, and per model the summed weight and the summed
    weight of bad outcomes. A grouping leaves blank what it does not group by; `all` is every
    outcome; a touchpoint without an agent or a team has `(none)`."""
    outcomes: dict[Group, set[tuple[str, bool]]] = {}
    sums: dict[Group, dict[str, float]] = {}
    for row in rows:
        agent = row.agent_id if row.agent_id is not None else "(none)"
        team = row.team_id if row.team_id is not None else "(none)"
        bad = row.outcome_class in BAD_CLASSES
        groups: list[Group] = [
            ("channel, kind and agent", row.channel, row.kind, agent, "", ""),
            ("channel", row.channel, "", "", "", ""),
            ("kind", "", row.kind, "", "", ""),
            ("agent", "", "", agent, "", ""),
            ("team", "", "", "", team, ""),
            ("quality", "", "", "", "", row.quality),
            ("all", "", "", "", "", ""),
        ]
        for key in groups:
            outcomes.setdefault(key, set()).add((row.outcome_id, bad))
            group = sums.setdefault(key, {"touchpoints": 0.0})
            group["touchpoints"] += 1
            for model in MODELS:
                weight = getattr(row, f"weight_{model}")
                group[f"{model}_weight"] = group.get(f"{model}_weight", 0.0) + weight
                group[f"{model}_bad_weight"] = group.get(f"{model}_bad_weight", 0.0) + weight * bad
    for key, members in outcomes.items():
        sums[key]["outcomes"] = len(members)
        sums[key]["bad_outcomes"] = sum(bad for _, bad in members)
    return sums
