"""Customer 360 (SPEC §5b): one customer's whole record, for `GET /api/customers/<id>` and
`touchstream customer ID`.

The record is read from the SPEC §6 tables with bound parameters: the profile, every
stored touchpoint in event order (paged) with its conversation and journey, the
journeys, response times, what still waits, level changes, surveys, tickets, churns, and
the periods in which the customer had withdrawn analytics consent (their events are
shown, marked as not counted). A counted event's conversation is the stream's (from
`customer_counted_touchpoints`, the counted events of one customer, read by key); one not
counted gets the conversation derived the same way over all the customer's events.

An erasure removes the customer's events up to the request and keeps only a proof with
no personal data, so a customer with no stored event is answered as "no record": never
seen, or erased at their request; the two cannot be told apart, by design.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from touchstream.schemas.touchpoint import Kind, TouchpointEvent
from touchstream.streams.metrics.config import MetricsConfig
from touchstream.streams.metrics.reference import conversation_ids

Fetch = Callable[[str, Mapping[str, Any]], list[tuple[Any, ...]]]

#: Touchpoints per page, by default and at most.
PAGE, MAX_PAGE = 200, 1000

EVENTS = """
SELECT t.event_id, t.occurred_at, t.channel, t.kind, t.direction, t.actor, t.conversation_id, t.agent_id,
       t.survey_type, t.survey_score, t.consent_analytics, c.conversation, c.event_id != '' AS counted
FROM touchpoints AS t FINAL
LEFT JOIN (SELECT event_id, conversation FROM customer_counted_touchpoints(customer = {customer:String})) AS c
    ON c.event_id = t.event_id
WHERE t.customer_id = {customer:String}
ORDER BY t.occurred_at, t.event_id
SETTINGS join_use_nulls = 0"""
PROFILE = """
SELECT first_seen_at, last_seen_at, preferred_channel, active_channels, active_hours, active_weekdays,
       purchases, level, score, latest_nps, latest_csat, consent, churned, final,
       (SELECT max(newest) FROM stream_horizons) AS as_of
FROM customer_profiles FINAL WHERE customer_id = {customer:String}"""
JOURNEYS = """
SELECT journey_id, started_at, ended_at, channel_path, touchpoints, outcome, final
FROM journeys FINAL WHERE customer_id = {customer:String} ORDER BY started_at"""
RESPONSES = """
SELECT reply_event_id, conversation_id, channel, agent_id, response_seconds, is_first_response,
       customer_message_at, replied_at, final
FROM responses FINAL WHERE customer_id = {customer:String} ORDER BY replied_at"""
WAITING = """
SELECT conversation_id, channel, waiting_since, final
FROM waiting FINAL
WHERE customer_id = {customer:String} AND NOT answered AND status = 'open' AND waiting_since IS NOT NULL
ORDER BY waiting_since"""
LATE = "SELECT event_id FROM late_events FINAL WHERE customer_id = {customer:String}"
LEVEL_CHANGES = """
SELECT changed_at, previous_level, level, score, final
FROM engagement_changes FINAL WHERE customer_id = {customer:String} ORDER BY changed_at"""
TICKETS = """
SELECT conversation_id, channel, category, priority, opened_at, first_response_seconds, first_resolved_at,
       resolved_at, reopened, status, resolved_on_first_reply, final
FROM tickets FINAL WHERE customer_id = {customer:String} ORDER BY opened_at"""
CHURNS = """
SELECT churned_at, last_interaction_at, returned_at, level_at_churn, signals, final
FROM churn_events FINAL WHERE customer_id = {customer:String} ORDER BY churned_at"""
SURVEYS = """
SELECT event_id, occurred_at, channel, survey_type, score, conversation_id, final
FROM surveys FINAL WHERE customer_id = {customer:String} ORDER BY occurred_at"""


class NoRecord(LookupError):
    """No stored event of the customer: never seen, or erased at their request."""

    def __init__(self, customer_id: str) -> None:
        super().__init__(
            f"no record of customer {customer_id!r}: never seen, or erased at their request "
            "(an erasure keeps no personal data, so the two look the same)"
        )


@dataclass(frozen=True)
class Page:
    """Touchpoints after `after` (an event's `<occurred_at ISO>|<event_id>`), at most `limit`."""

    after: tuple[datetime, str] | None = None
    limit: int = PAGE

    @classmethod
    def parse(cls, after: str | None, limit: str | int | None) -> Page:
        """From query parameters; ValueError with a reason when they are not valid."""
        size = PAGE if limit in (None, "") else int(limit)
        if not 1 <= size <= MAX_PAGE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE}")
        if not after:
            return cls(None, size)
        moment, separator, event_id = after.partition("|")
        when = datetime.fromisoformat(moment.replace("Z", "+00:00"))
        if not separator or not event_id or when.tzinfo is None:
            raise ValueError("after must be `<occurred_at with timezone>|<event_id>`, as `next` gives it")
        return cls((when.astimezone(UTC), event_id), size)


def record(fetch: Fetch, customer_id: str, config: MetricsConfig, page: Page = Page()) -> dict[str, Any]:
    """The customer's record as JSON-able data; raises NoRecord."""
    params = {"customer": customer_id}
    rows = fetch(EVENTS, params)
    if not rows:
        raise NoRecord(customer_id)
    events = [_event(customer_id, row) for row in rows]
    counted = [bool(row[-1]) for row in rows]
    late = {event_id for (event_id,) in fetch(LATE, params)}
    # A counted event's conversation is the stream's (over the counted events, consent
    # respected); one not counted gets the one derived over all the customer's events.
    everything = dict(zip((e.event_id for e in events), conversation_ids(events, config), strict=True))
    derived = {
        e.event_id: row[-2] if row[-1] else everything[e.event_id]
        for e, row in zip(events, rows, strict=True)
    }
    journeys = [
        {"journey_id": j, "started_at": _time(start), "ended_at": _time(end), "channel_path": list(path),
         "touchpoints": n, "outcome": outcome, "final": bool(final)}
        for j, start, end, path, n, outcome, final in fetch(JOURNEYS, params)
    ]  # fmt: skip
    touchpoints = []
    # Journeys are in start order and do not overlap, like the events: one sweep pairs them.
    spans = iter(journeys)
    span = next(spans, None)
    for event, is_counted in zip(events, counted, strict=True):
        at = _time(event.occurred_at)
        journey = None
        if is_counted:
            while span is not None and span["ended_at"] < at:
                span = next(spans, None)
            if span is not None and span["started_at"] <= at:
                journey = span["journey_id"]
        touchpoints.append({
            "event_id": event.event_id, "occurred_at": at, "channel": event.channel.value,
            "kind": event.kind.value, "direction": event.direction.value, "actor": event.actor.value,
            "agent_id": event.agent_id, "conversation_id": derived[event.event_id], "journey_id": journey,
            "survey": event.survey.model_dump() if event.survey else None,
            "consent": event.consent.analytics if event.consent else None, "counted": is_counted,
            "not_counted": None if is_counted else _why_not_counted(event, late),
        })  # fmt: skip
    start = 0
    if page.after is not None:
        after = page.after
        start = next((n for n, e in enumerate(events) if (e.occurred_at, e.event_id) > after), len(events))
    shown = touchpoints[start : start + page.limit]
    more = start + page.limit < len(touchpoints)
    profile = fetch(PROFILE, params)
    responses = [
        {"reply_event_id": reply, "conversation_id": conversation, "channel": channel, "agent_id": agent,
         "response_seconds": round(seconds, 3), "is_first_response": bool(first),
         "customer_message_at": _time(asked), "replied_at": _time(replied), "final": bool(final)}
        for reply, conversation, channel, agent, seconds, first, asked, replied, final
        in fetch(RESPONSES, params)
    ]  # fmt: skip
    waiting = [
        {"conversation_id": conversation, "channel": channel, "waiting_since": _time(since),
         "final": bool(final)}
        for conversation, channel, since, final in fetch(WAITING, params)
    ]  # fmt: skip
    changes = [
        {"changed_at": _time(at), "previous_level": before, "level": level, "score": round(score, 3),
         "final": bool(final)}
        for at, before, level, score, final in fetch(LEVEL_CHANGES, params)
    ]  # fmt: skip
    surveys = [
        {"event_id": event_id, "occurred_at": _time(at), "channel": channel, "survey_type": kind,
         "score": score, "conversation_id": conversation, "final": bool(final)}
        for event_id, at, channel, kind, score, conversation, final in fetch(SURVEYS, params)
    ]  # fmt: skip
    tickets = [
        {"conversation_id": conversation, "channel": channel, "category": category, "priority": priority,
         "opened_at": _time(opened), "first_response_seconds": _seconds(first),
         "first_resolved_at": _time(solved), "resolved_at": _time(resolved), "reopened": reopened,
         "status": status, "resolved_on_first_reply": bool(on_first), "final": bool(final)}
        for conversation, channel, category, priority, opened, first, solved, resolved, reopened, status,
        on_first, final in fetch(TICKETS, params)
    ]  # fmt: skip
    churns = [
        {"churned_at": _time(churned), "last_interaction_at": _time(last), "returned_at": _time(returned),
         "level_at_churn": level, "signals": list(signals), "final": bool(final)}
        for churned, last, returned, level, signals, final in fetch(CHURNS, params)
    ]  # fmt: skip
    return {
        "customer_id": customer_id,
        "profile": _profile(profile[0]) if profile else None,
        "not_counted": None if profile else not_counted_summary(touchpoints),
        "journeys": journeys,
        "conversations": _conversations(touchpoints),
        "touchpoints": shown,
        "page": {
            "total": len(touchpoints),
            "from": start,
            "limit": page.limit,
            "next": f"{shown[-1]['occurred_at']}|{shown[-1]['event_id']}" if more and shown else None,
        },
        "responses": responses,
        "waiting": waiting,
        "level_changes": changes,
        "surveys": surveys,
        "tickets": tickets,
        "churns": churns,
        "consent_withdrawn": _withdrawn(events),
    }


def _why_not_counted(event: TouchpointEvent, late: set[str]) -> str:
    """Why a stored event is not counted (SPEC §5): it arrived after the horizon had passed
    it, it is a consent change or an erasure request (not an interaction), or the customer
    had withdrawn analytics consent. (A duplicate is stored once; an erased event not at all.)"""
    if event.event_id in late:
        return "late"
    if event.kind is Kind.CONSENT_UPDATED:
        return "consent change"
    if event.kind is Kind.ERASURE_REQUESTED:
        return "erasure request"
    return "no consent"


def not_counted_summary(touchpoints: list[dict[str, Any]]) -> str:
    """Why none of a customer's events is counted, e.g. `1 late, 1 consent change`."""
    reasons = [point["not_counted"] for point in touchpoints if point["not_counted"]]
    return ", ".join(f"{reasons.count(reason)} {reason}" for reason in dict.fromkeys(reasons))


def _event(customer_id: str, row: tuple[Any, ...]) -> TouchpointEvent:
    event_id, at, channel, kind, direction, actor, conversation, agent, survey_type, score, consent = row[:11]
    return TouchpointEvent.model_validate({
        "event_id": event_id, "occurred_at": _utc(at), "received_at": _utc(at), "customer_id": customer_id,
        "channel": channel, "kind": kind, "direction": direction, "actor": actor,
        "conversation_id": conversation, "agent_id": agent,
        "survey": {"type": survey_type, "score": score} if survey_type else None,
        "consent": {"analytics": bool(consent)} if consent is not None else None,
    })  # fmt: skip


def _profile(row: tuple[Any, ...]) -> dict[str, Any]:
    first, last, preferred, channels, hours, weekdays, purchases, level, score, nps, csat = row[:11]
    consent, churned, final, as_of = row[11:]
    return {
        "first_seen_at": _time(first), "last_seen_at": _time(last), "preferred_channel": preferred,
        "active_channels": list(channels), "active_hours": list(hours), "active_weekdays": list(weekdays),
        "purchases": purchases, "level": level, "score": round(score, 3), "latest_nps": nps,
        "latest_csat": csat, "consent": bool(consent), "churned": bool(churned), "final": bool(final),
        "as_of": _time(as_of),
    }  # fmt: skip


def _conversations(touchpoints: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each conversation's span: channel, first and last event, count, in start order."""
    spans: dict[str, dict[str, Any]] = {}
    for point in touchpoints:
        if point["kind"] in (Kind.CONSENT_UPDATED.value, Kind.ERASURE_REQUESTED.value):
            continue
        span = spans.setdefault(point["conversation_id"], {
            "conversation_id": point["conversation_id"], "channel": point["channel"],
            "started_at": point["occurred_at"], "ended_at": point["occurred_at"], "touchpoints": 0,
        })  # fmt: skip
        span["ended_at"] = point["occurred_at"]
        span["touchpoints"] += 1
    return sorted(spans.values(), key=lambda span: span["started_at"])


def _withdrawn(events: list[TouchpointEvent]) -> list[dict[str, str | None]]:
    """The periods without analytics consent: from a withdrawal to the next grant (or now)."""
    periods: list[dict[str, str | None]] = []
    for event in events:
        if event.kind is not Kind.CONSENT_UPDATED or event.consent is None:
            continue
        open_period = bool(periods) and periods[-1]["to"] is None
        if not event.consent.analytics and not open_period:
            periods.append({"from": _time(event.occurred_at), "to": None})
        elif event.consent.analytics and open_period:
            periods[-1]["to"] = _time(event.occurred_at)
    return periods


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _seconds(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return _utc(moment).isoformat(timespec="milliseconds").replace("+00:00", "Z")
