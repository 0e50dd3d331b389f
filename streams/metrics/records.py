"""What the metric core emits: one dataclass per ClickHouse table row (SPEC §6)."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from touchstream.schemas.touchpoint import TouchpointEvent


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
    #: Whether the reply met the response target it ended (SPEC §5 "Teams and SLA
    #: policies"); None when no target was running (a policy without one, a closed
    #: conversation's wait).
    sla_met: bool | None = None


@dataclass(frozen=True)
class WaitingRow:
    """A conversation with a customer message: how long it has been waiting (SPEC §5
    "Waiting queue"). The queue is the open ones not answered; a close ends the wait
    unanswered (`waiting_since` kept, `closed_at` set)."""

    conversation_id: str
    customer_id: str
    channel: str
    waiting_since: datetime | None
    answered: bool
    updated_at: datetime
    team_id: str | None = None
    #: `open`, `snoozed` or `closed` (`CONVERSATION_STATUSES`).
    status: str = "open"
    closed_at: datetime | None = None


#: SPEC §5 "Conversation status".
CONVERSATION_STATUSES = ("open", "snoozed", "closed")


@dataclass(frozen=True)
class ConversationRow:
    """A conversation's latest state (SPEC §5 "Conversation status"): from its first event
    on, open, snoozed or closed; a close while a customer waited is `closed_without_reply`,
    an automatic close (no event for the channel's `auto_close_after`) while one waited is
    `abandoned` (both describe the latest close)."""

    conversation_id: str
    customer_id: str
    #: The channel of its first event.
    channel: str
    team_id: str | None
    status: str
    opened_at: datetime
    closed_at: datetime | None
    closed_without_reply: bool
    abandoned: bool
    #: The agent of its latest reply.
    last_agent_id: str | None
    updated_at: datetime
    #: Opening hours from its first event to its latest close, on the schedule of its team
    #: at the close (else of its channel); None while open or without a schedule.
    resolution_business_seconds: float | None = None


@dataclass(frozen=True)
class SlaEventRow:
    """One SLA target of a conversation (SPEC §5 "Teams and SLA policies"): started by a
    customer message under the policy that matched the conversation then, due at
    `due_at` (None: a business-hours target on a schedule that never opens); `met_at`
    the reply or close that met it, `breached_at` its due instant once passed unmet,
    `ended_at` the reply or close that ended it (met, late, or cancelled by a close)."""

    conversation_id: str
    customer_id: str
    #: `first_response`, `next_response` or `resolution` (`SLA_METRICS`).
    metric: str
    started_at: datetime
    #: The event_id of the customer message that started it (a message starts at most one
    #: target per metric: several may start at one instant).
    started_by: str
    #: The channel of the customer message that started it.
    channel: str
    team_id: str | None
    priority: str
    policy: str
    target_seconds: float
    business: bool
    due_at: datetime | None
    #: `pending`, `met`, `breached` or `cancelled` (`SLA_STATUSES`).
    status: str
    met_at: datetime | None
    breached_at: datetime | None
    ended_at: datetime | None
    #: The agent of the reply or close that ended it.
    agent_id: str | None
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
class JourneyRow:
    """A customer's run of events with gaps of at most the journey gap (SPEC §5b)."""

    journey_id: str
    customer_id: str
    started_at: datetime
    ended_at: datetime
    channel_path: tuple[str, ...]
    touchpoints: int
    outcome: str
    final: bool


@dataclass(frozen=True)
class ProfileRow:
    """One customer at their partition's newest event time (SPEC §5b)."""

    customer_id: str
    first_seen_at: datetime
    last_seen_at: datetime
    preferred_channel: str | None
    active_channels: tuple[str, ...]
    #: Customer-initiated events in the profile window by UTC hour (0-23) and weekday (Mon-Sun).
    active_hours: tuple[int, ...]
    active_weekdays: tuple[int, ...]
    purchases: int
    level: str
    score: float
    latest_nps: int | None
    latest_csat: int | None
    consent: bool
    churned: bool
    final: bool


@dataclass(frozen=True)
class ChurnRow:
    """A churn (SPEC §5b): no customer-initiated event for `churn_after` after the last one."""

    customer_id: str
    churned_at: datetime
    last_interaction_at: datetime
    returned_at: datetime | None
    level_at_churn: str
    #: The signals that preceded it, in SPEC order (`CHURN_SIGNALS`).
    signals: tuple[str, ...]
    final: bool


#: SPEC §5b's churn signals, in the order a churn row lists them.
CHURN_SIGNALS = ("unanswered", "slow_response", "detractor", "dissatisfied", "open_ticket")


@dataclass(frozen=True)
class OutcomeTouchpoint:
    """One touchpoint of an outcome (a survey answer or a churn) with its weight under each
    attribution model (SPEC §5b); the weights of one outcome sum to 1 per model."""

    outcome_id: str
    outcome_type: str
    outcome_class: str
    outcome_at: datetime
    customer_id: str
    event_id: str
    channel: str
    kind: str
    agent_id: str | None
    #: The touchpoint's conversation's team at the touchpoint (SPEC §5b).
    team_id: str | None
    #: What the brand did there (SPEC §5b "interaction quality"): `answered_in_sla`,
    #: `answered_late`, `unanswered`, `bot_only` (a customer message, by the outcome
    #: instant), `in_sla`, `late` (an agent reply), `none`.
    quality: str
    position: int
    n: int
    weight_last: float
    weight_first: float
    weight_linear: float
    weight_time_decay: float
    weight_position: float
    final: bool


@dataclass(frozen=True)
class TicketRow:
    """A conversation with a `ticket_opened` event, from its opening on (SPEC §5b)."""

    conversation_id: str
    customer_id: str
    channel: str
    category: str
    priority: str
    opened_at: datetime
    first_response_at: datetime | None
    first_response_seconds: float | None
    #: The agent of the first response record.
    first_response_agent_id: str | None
    first_resolved_at: datetime | None
    resolved_at: datetime | None
    reopened: int
    status: str
    first_resolution_seconds: float | None
    #: While resolved: its latest resolution - opened_at; None while open.
    full_resolution_seconds: float | None
    resolved_on_first_reply: bool
    final: bool


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
    """An event that arrived after its grace period: stored, reported, and either restated
    (its customer recomputed from all their stored events) or not counted."""

    event_id: str
    customer_id: str
    channel: str
    occurred_at: datetime
    #: The results' horizon (watermark - grace) when it arrived; lateness = horizon - occurred_at.
    horizon: datetime
    #: When its customer's rows were restated with it (None: reported only).
    restated_at: datetime | None = None


@dataclass(frozen=True)
class ErasureProof:
    """Proof that a customer's state was erased; carries no personal data."""

    request_event_id: str
    requested_at: datetime


@dataclass(frozen=True)
class Erasure:
    """A customer's rows to delete: every metric row, and the touchpoints ordered before
    the request (its `order_key`); what came after the request stays."""

    customer_id: str
    before: tuple[datetime, str]


#: (table, key): the identity of a metric row (`KEY_COLUMNS`), what an upsert replaces.
RowKey = tuple[str, tuple[Any, ...]]


@dataclass
class Rows:
    """The rows one customer's events produce, in event order within each list."""

    responses: list[ResponseRecord] = field(default_factory=list)
    waiting: list[WaitingRow] = field(default_factory=list)
    conversations: list[ConversationRow] = field(default_factory=list)
    sla_events: list[SlaEventRow] = field(default_factory=list)
    engagement: list[EngagementRow] = field(default_factory=list)
    changes: list[LevelChange] = field(default_factory=list)
    surveys: list[SurveyRow] = field(default_factory=list)
    erasures: list[ErasureProof] = field(default_factory=list)
    #: Customers erased: their rows must go from every table before these rows are written.
    erased: list[Erasure] = field(default_factory=list)
    suppressed: int = 0

    def extend(self, other: Rows) -> None:
        self.responses += other.responses
        self.waiting += other.waiting
        self.conversations += other.conversations
        self.sla_events += other.sla_events
        self.engagement += other.engagement
        self.changes += other.changes
        self.surveys += other.surveys
        self.erasures += other.erasures
        self.erased += other.erased
        self.suppressed += other.suppressed

    def withdraw(self, customer_id: str) -> None:
        """Drop the customer's rows (an erasure within the same step)."""
        self.responses = [row for row in self.responses if row.customer_id != customer_id]
        self.waiting = [row for row in self.waiting if row.customer_id != customer_id]
        self.conversations = [row for row in self.conversations if row.customer_id != customer_id]
        self.sla_events = [row for row in self.sla_events if row.customer_id != customer_id]
        self.engagement = [row for row in self.engagement if row.customer_id != customer_id]
        self.changes = [row for row in self.changes if row.customer_id != customer_id]
        self.surveys = [row for row in self.surveys if row.customer_id != customer_id]

    def keyed(self) -> dict[RowKey, Any]:
        """The rows by identity; a later row of the same key replaces an earlier one."""
        found: dict[RowKey, Any] = {}
        for table, rows in self.tables().items():
            if rows:
                key_of = _KEY_OF[table]
                for row in rows:
                    found[table, key_of(row)] = row
        return found

    def tables(self) -> dict[str, list[Any]]:
        return {
            "responses": self.responses,
            "waiting": self.waiting,
            "conversations": self.conversations,
            "sla_events": self.sla_events,
            "engagement": self.engagement,
            "engagement_changes": self.changes,
            "surveys": self.surveys,
        }


#: A metric row's identity per table: a function of the events alone (never of batches
#: or horizons), so a re-read batch and a later correction overwrite the same row.
KEY_COLUMNS: dict[str, tuple[str, ...]] = {
    "responses": ("customer_id", "reply_event_id"),
    "waiting": ("customer_id", "conversation_id"),
    "conversations": ("customer_id", "conversation_id"),
    "sla_events": ("customer_id", "conversation_id", "metric", "started_by"),
    "engagement": ("customer_id",),
    "engagement_changes": ("customer_id", "changed_at", "previous_level", "level"),
    "surveys": ("customer_id", "event_id"),
}


#: Tables of one latest-state row per key (a later event replaces it), as opposed to rows
#: of events and instants, which are final once the horizon passes them.
LATEST_STATE_TABLES = frozenset({"engagement", "waiting", "conversations", "sla_events"})


def _key_getter(columns: tuple[str, ...]) -> Callable[[Any], tuple[Any, ...]]:
    if len(columns) == 1:
        name = columns[0]
        return lambda row: (getattr(row, name),)
    return operator.attrgetter(*columns)


_KEY_OF = {table: _key_getter(columns) for table, columns in KEY_COLUMNS.items()}


@dataclass
class Outputs:
    """Everything one step of the core produced.

    `final` rows are settled: the definitions applied to the events before the
    horizon. `live` rows are provisional: the definitions applied to every event read
    so far, evaluated at the partition's newest event time; they are replaced as more
    events arrive. `retracted` names provisional rows that no longer exist. Within a
    step, a live row replaces a final row of the same key and either replaces a
    retraction (`sinks.metric_rows` writes them in that order).
    """

    final: Rows = field(default_factory=Rows)
    live: Rows = field(default_factory=Rows)
    retracted: list[RowKey] = field(default_factory=list)
    late: list[LateEvent] = field(default_factory=list)
    #: Per partition stepped, the horizon its results are final before and its newest
    #: event time (set by the caller that runs one engine per partition).
    horizons: dict[int, tuple[datetime, datetime]] = field(default_factory=dict)
    #: (customer_id, event_id) of the step's events at or before their customer's latest
    #: erasure request (the request included): they are not stored.
    forgotten: set[tuple[str, str]] = field(default_factory=set)
    #: The version of every row the step writes (set by the caller; see `sinks.metric_rows`).
    version: int = 0
    duplicates: int = 0

    @property
    def suppressed(self) -> int:
        return self.final.suppressed

    @property
    def erased(self) -> list[Erasure]:
        return [*self.final.erased, *self.live.erased]

    def customers(self) -> set[str]:
        """The customers with a row, a retraction or an erasure in this step."""
        found = {key[0] for _, key in self.retracted}  # every key begins with the customer
        found.update(erasure.customer_id for erasure in self.erased)
        for rows in (self.final, self.live):
            for table in rows.tables().values():
                found.update(row.customer_id for row in table)
        return found

    def extend(self, other: Outputs) -> None:
        self.final.extend(other.final)
        self.live.extend(other.live)
        self.retracted += other.retracted
        self.late += other.late
        self.horizons |= other.horizons
        self.forgotten |= other.forgotten
        self.version = max(self.version, other.version)
        self.duplicates += other.duplicates


def order_key(event: TouchpointEvent) -> tuple[datetime, str]:
    """SPEC §5: events are ordered by (occurred_at, event_id), whatever the arrival order."""
    return (event.occurred_at, event.event_id)
