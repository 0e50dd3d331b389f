"""What the metric core emits: one dataclass per ClickHouse table row (SPEC §6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.touchpoint import TouchpointEvent


@dataclass(frozen=True)
class ResponseRecord:
    reply_event_id: str
    conversation_id: str
    customer_id: str
    channel: str
    agent_id: str | None
    response_seconds: float
    is_first_response: bool
    customer_message_at: datetime
    replied_at: datetime
    #: Within the response channel's opening hours; None without a schedule.
    response_business_seconds: float | None = None


@dataclass(frozen=True)
class WaitingRow:
    conversation_id: str
    customer_id: str
    channel: str
    waiting_since: datetime | None
    answered: bool
    updated_at: datetime


@dataclass(frozen=True)
class EngagementRow:
    customer_id: str
    score: float
    level: str
    interactions_24h: int
    interactions_7d: int
    interactions_30d: int
    active_channels_30d: int
    last_interaction_at: datetime | None
    updated_at: datetime


@dataclass(frozen=True)
class LevelChange:
    customer_id: str
    previous_level: str
    level: str
    score: float
    changed_at: datetime


@dataclass(frozen=True)
class SurveyRow:
    event_id: str
    customer_id: str
    channel: str
    survey_type: str
    score: int
    conversation_id: str | None
    occurred_at: datetime


@dataclass(frozen=True)
class LateEvent:
    """An event that arrived after its grace period: stored, counted, not folded into results."""

    event_id: str
    customer_id: str
    channel: str
    occurred_at: datetime
    #: The results' horizon (watermark - grace) when it arrived; lateness = horizon - occurred_at.
    horizon: datetime


@dataclass(frozen=True)
class ErasureProof:
    """Proof that a customer's state was erased; carries no personal data."""

    request_event_id: str
    requested_at: datetime


@dataclass
class Outputs:
    """Everything one step of the core produced, in event order within each list."""

    responses: list[ResponseRecord] = field(default_factory=list)
    waiting: list[WaitingRow] = field(default_factory=list)
    engagement: list[EngagementRow] = field(default_factory=list)
    changes: list[LevelChange] = field(default_factory=list)
    surveys: list[SurveyRow] = field(default_factory=list)
    late: list[LateEvent] = field(default_factory=list)
    erasures: list[ErasureProof] = field(default_factory=list)
    #: Customers erased in this step: their rows must go from every table.
    erased_customers: list[str] = field(default_factory=list)
    #: Per partition stepped, the horizon its results are final before (set by the caller
    #: that runs one engine per partition).
    horizons: dict[int, datetime] = field(default_factory=dict)
    duplicates: int = 0
    suppressed: int = 0

    def extend(self, other: Outputs) -> None:
        self.responses += other.responses
        self.waiting += other.waiting
        self.engagement += other.engagement
        self.changes += other.changes
        self.surveys += other.surveys
        self.late += other.late
        self.erasures += other.erasures
        self.erased_customers += other.erased_customers
        self.horizons |= other.horizons
        self.duplicates += other.duplicates
        self.suppressed += other.suppressed


def order_key(event: TouchpointEvent) -> tuple[datetime, str]:
    """SPEC §5: events are ordered by (occurred_at, event_id), whatever the arrival order."""
    return (event.occurred_at, event.event_id)
