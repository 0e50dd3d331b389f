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

from schemas.touchpoint import (
    DETRACTOR_MAX,
    DISSATISFIED_MAX,
    PROMOTER_MIN,
    SATISFIED_MIN,
    Kind,
    TouchpointEvent,
)
from streams.metrics.config import MetricsConfig
from streams.metrics.engagement import WINDOWS, is_customer_initiated
from streams.metrics.records import (
    EngagementRow,
    JourneyRow,
    LevelChange,
    ProfileRow,
    ResponseRecord,
    SurveyRow,
    WaitingRow,
    order_key,
)
from streams.metrics.responses import is_customer_message, is_reply


@dataclass
class Tables:
    """The state of the result tables: what `FINAL` queries would show."""

    responses: dict[str, ResponseRecord] = field(default_factory=dict)
    surveys: dict[str, SurveyRow] = field(default_factory=dict)
    changes: list[LevelChange] = field(default_factory=list)
    engagement: dict[str, EngagementRow] = field(default_factory=dict)
    #: By (customer_id, conversation_id): conversation ids are only unique per customer.
    waiting: dict[tuple[str, str], WaitingRow] = field(default_factory=dict)


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
        _responses(customer_id, aggregated, config, tables)
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
    customer_id: str, events: list[TouchpointEvent], config: MetricsConfig, tables: Tables
) -> None:
    conversations: dict[str, list[TouchpointEvent]] = {}
    for event, conversation_id in zip(events, conversation_ids(events, config), strict=True):
        conversations.setdefault(conversation_id, []).append(event)
    for conversation_id, members in conversations.items():
        unanswered: list[TouchpointEvent] = []
        responded = False
        row: WaitingRow | None = None
        for event in members:
            if is_customer_message(event):
                if not unanswered:
                    row = WaitingRow(
                        conversation_id,
                        customer_id,
                        event.channel.value,
                        event.occurred_at,
                        False,
                        event.occurred_at,
                    )
                unanswered.append(event)
            elif is_reply(event, config) and unanswered:
                first = unanswered[0]
                tables.responses[event.event_id] = ResponseRecord(
                    event.event_id,
                    conversation_id,
                    customer_id,
                    first.channel.value,
                    event.agent_id,
                    (event.occurred_at - first.occurred_at).total_seconds(),
                    not responded,
                    first.occurred_at,
                    event.occurred_at,
                    config.business_seconds(first.channel, first.occurred_at, event.occurred_at),
                )
                row = WaitingRow(
                    conversation_id, customer_id, first.channel.value, None, True, event.occurred_at
                )
                responded, unanswered = True, []
        if row is not None:
            tables.waiting[customer_id, conversation_id] = row


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
    """Every customer's profile at `newest` (one partition's newest event time): windows
    end there; final once the horizon has passed it."""
    materialized = list(events)
    engagement = recompute(materialized, config, None, newest).engagement
    rows = []
    for customer_id, (kept, consent) in _kept(materialized).items():
        if not kept:
            continue
        initiated = [event for event in kept if is_customer_initiated(event)]
        recent = [
            event for event in initiated if newest - config.profile_window < event.occurred_at <= newest
        ]
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
        last_interaction = initiated[-1].occurred_at if initiated else None
        rows.append(ProfileRow(
            customer_id, kept[0].occurred_at, kept[-1].occurred_at, preferred, tuple(sorted(counts)),
            tuple(hours), tuple(weekdays), sum(1 for event in kept if event.kind is Kind.PURCHASE),
            state.level if state else config.levels[0][0], state.score if state else 0.0,
            nps[-1] if nps else None, csat[-1] if csat else None, consent,
            last_interaction is not None and last_interaction + config.churn_after < newest,
            horizon > newest,
        ))  # fmt: skip
    return rows
