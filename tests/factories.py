"""Small builders shared by the tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from touchstream.schemas.touchpoint import TouchpointEvent

BASE_TIME = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def event_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "event_id": "evt-1",
        "schema_version": 1,
        "occurred_at": BASE_TIME.isoformat(),
        "received_at": (BASE_TIME + timedelta(seconds=1)).isoformat(),
        "customer_id": "cust-1",
        "channel": "chat",
        "kind": "message",
        "direction": "inbound",
        "actor": "customer",
        "conversation_id": "conv-1",
        "agent_id": None,
        "team_id": None,
        "survey": None,
        "consent": None,
        "attributes": {},
    }
    data.update(overrides)
    if "occurred_at" in overrides and "received_at" not in overrides:  # received a second later
        occurred = overrides["occurred_at"]
        occurred = datetime.fromisoformat(occurred) if isinstance(occurred, str) else occurred
        if isinstance(occurred, datetime) and occurred.tzinfo is not None:
            data["received_at"] = (occurred + timedelta(seconds=1)).isoformat()
    return data


def event(**overrides: Any) -> TouchpointEvent:
    return TouchpointEvent.model_validate(event_data(**overrides))
