"""A customer's whole engine state as one JSON-able record, and back.

One record per customer (state, buffered events, remembered event ids) is what a
changelog-backed table stores under the customer's key; the partition's horizon and
watermarks travel in a record of their own (`Engine.export_partition`).
`Engine.export` / `Engine.restore` use these; restoring and carrying on gives exactly
the results of never having stopped (property-tested).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from schemas.touchpoint import TouchpointEvent
from streams.metrics.customer import CustomerState
from streams.metrics.engagement import Engagement
from streams.metrics.responses import Conversation


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _parse(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def _required(value: str) -> datetime:
    return datetime.fromisoformat(value)


def customer_to_dict(state: CustomerState) -> dict[str, Any]:
    engagement = state.engagement
    assert engagement is not None
    return {
        "customer_id": state.customer_id,
        "consent": state.consent,
        "derived": dict(state.derived),
        "conversations": {
            key: [_time(c.last_event_at), _time(c.waiting_since), c.waiting_channel, c.responded]
            for key, c in state.conversations.items()
        },
        "engagement": {
            "score": engagement.score,
            "updated_at": _time(engagement.updated_at),
            "level": engagement.level,
            "cap_day": engagement.cap_day.isoformat() if engagement.cap_day else None,
            "cap_counts": dict(engagement.cap_counts),
            "recent": [[_time(when), channel] for when, channel in engagement.recent],
        },
    }


def customer_from_dict(data: dict[str, Any]) -> CustomerState:
    saved = data["engagement"]
    engagement = Engagement(
        customer_id=data["customer_id"],
        score=saved["score"],
        updated_at=_parse(saved["updated_at"]),
        level=saved["level"],
        cap_day=date.fromisoformat(saved["cap_day"]) if saved["cap_day"] else None,
        cap_counts=dict(saved["cap_counts"]),
        recent=[(_required(when), channel) for when, channel in saved["recent"]],
    )
    conversations = {
        key: Conversation(key, _required(last), _parse(since), channel, responded)
        for key, (last, since, channel, responded) in data["conversations"].items()
    }
    return CustomerState(
        customer_id=data["customer_id"],
        consent=data["consent"],
        conversations=conversations,
        derived=dict(data["derived"]),
        engagement=engagement,
    )


def record_to_dict(
    state: CustomerState | None,
    pending: list[TouchpointEvent],
    seen: dict[str, datetime],
    customer_id: str,
) -> dict[str, Any]:
    return {
        "customer_id": customer_id,
        "state": customer_to_dict(state) if state is not None else None,
        # Unset optional fields are left out: pending events travel in every record write.
        "pending": [event.model_dump(mode="json", exclude_defaults=True) for event in pending],
        "seen": {event_id: when.isoformat() for event_id, when in seen.items()},
    }


def record_from_dict(
    data: dict[str, Any],
) -> tuple[CustomerState | None, list[TouchpointEvent], dict[str, datetime]]:
    state = customer_from_dict(data["state"]) if data["state"] is not None else None
    pending = [TouchpointEvent.model_validate(item) for item in data["pending"]]
    seen = {event_id: _required(when) for event_id, when in data["seen"].items()}
    return state, pending, seen
