"""TouchpointEvent v1: the canonical event every channel adapter produces (SPEC §2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Final = 1

#: How far `occurred_at` may lie after `received_at` (a source's clock running ahead).
#: Beyond it an event is rejected: one event dated in year 9999 would otherwise move its
#: partition's event time there, and every later event would be late. Validation takes
#: another bound from its context: `model_validate(data, context={MAX_SKEW: timedelta})`.
MAX_CLOCK_SKEW: Final = timedelta(hours=1)
MAX_SKEW: Final = "max_clock_skew"
#: The earliest time an event can carry: the Unix epoch. ClickHouse's DateTime64 columns
#: hold 1900-2299 only, and a year-62 timestamp once stopped the worker (its erasure
#: DELETE could not be written), so nothing earlier gets in.
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)

#: Bounds on `attributes`: small, free-form, never a place for payloads.
MAX_ATTRIBUTES = 32
MAX_ATTRIBUTE_KEY_CHARS = 64
MAX_ATTRIBUTE_VALUE_CHARS = 1024


class Channel(StrEnum):
    WEB = "web"
    CHAT = "chat"
    EMAIL = "email"
    SOCIAL = "social"
    PHONE = "phone"
    MOBILE_APP = "mobile_app"
    FORUM = "forum"
    HELPDESK = "helpdesk"
    MESSAGING = "messaging"
    IN_STORE = "in_store"


class Kind(StrEnum):
    PAGE_VIEW = "page_view"
    CLICK = "click"
    MESSAGE = "message"
    CALL = "call"
    TICKET_OPENED = "ticket_opened"
    TICKET_RESOLVED = "ticket_resolved"
    SURVEY_RESPONSE = "survey_response"
    PURCHASE = "purchase"
    CONSENT_UPDATED = "consent_updated"
    ERASURE_REQUESTED = "erasure_requested"
    #: Conversation status (SPEC §5): closed, snoozed until `attributes["until"]`, (re)opened.
    CONVERSATION_CLOSED = "conversation_closed"
    CONVERSATION_SNOOZED = "conversation_snoozed"
    CONVERSATION_OPENED = "conversation_opened"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
    NONE = "none"


class Actor(StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    BOT = "bot"
    SYSTEM = "system"


_STRICT = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)

EventId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
CustomerId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
OptionalRef = Annotated[str, StringConstraints(min_length=1, max_length=256)] | None
AttributeKey = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ATTRIBUTE_KEY_CHARS)]
AttributeValue = Annotated[str, StringConstraints(max_length=MAX_ATTRIBUTE_VALUE_CHARS)]


#: Answer classes (SPEC §5 "Experience signals", §5b outcomes): NPS promoters 9-10 and
#: detractors 0-6, CSAT satisfied 4-5 and dissatisfied 1-2; the one place these bounds live
#: (SQL views and panels use them).
PROMOTER_MIN, DETRACTOR_MAX, SATISFIED_MIN, DISSATISFIED_MAX = 9, 6, 4, 2


def _survey_scales(schema: dict[str, Any]) -> None:
    """The score range by type, in the JSON Schema as in validation."""
    schema["oneOf"] = [
        {"properties": {"type": {"const": kind}, "score": {"minimum": low, "maximum": high}}}
        for kind, (low, high) in SURVEY_SCALES.items()
    ]


#: Survey scales: NPS 0-10, CSAT 1-5.
SURVEY_SCALES: Final = {"nps": (0, 10), "csat": (1, 5)}


class Survey(BaseModel):
    """A survey answer: NPS is scored 0-10, CSAT 1-5."""

    model_config = ConfigDict(**_STRICT, json_schema_extra=_survey_scales)

    type: Literal["nps", "csat"]
    score: int

    @model_validator(mode="after")
    def _score_in_scale(self) -> Self:
        low, high = SURVEY_SCALES[self.type]
        if not low <= self.score <= high:
            raise ValueError(f"{self.type} score must be between {low} and {high}, got {self.score}")
        return self


class Consent(BaseModel):
    model_config = _STRICT

    analytics: bool


def _event_schema(schema: dict[str, Any]) -> None:
    """The schema's id, and `survey` exactly on survey_response and `consent` exactly on
    consent_updated events, and `attributes.until` on conversation_snoozed ones, in the
    JSON Schema as in validation (`_consistent`)."""
    schema["$id"] = "https://touchstream.dev/schemas/touchpoint-event-v1.json"
    schema["allOf"] = [
        {
            "if": {"properties": {"kind": {"const": kind}}, "required": ["kind"]},
            "then": {"properties": {field: {"type": "object"}}, "required": [field]},
            "else": {"properties": {field: {"type": "null"}}},
        }
        for kind, field in (("survey_response", "survey"), ("consent_updated", "consent"))
    ] + [
        {
            "if": {"properties": {"kind": {"const": "conversation_snoozed"}}, "required": ["kind"]},
            "then": {
                "properties": {
                    "attributes": {"required": ["until"], "properties": {"until": {"format": "date-time"}}}
                },
                "required": ["attributes"],
            },
        }
    ]


class TouchpointEvent(BaseModel):
    """One touchpoint of a customer journey.

    Timestamps must carry a timezone: a naive datetime is rejected rather than
    guessed. `survey` is required exactly on `survey_response` events and
    `consent` exactly on `consent_updated` events.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        title="TouchpointEvent",
        json_schema_extra=_event_schema,
    )

    event_id: EventId
    schema_version: Literal[1] = SCHEMA_VERSION
    occurred_at: AwareDatetime
    received_at: AwareDatetime
    customer_id: CustomerId
    channel: Channel
    kind: Kind
    direction: Direction
    actor: Actor
    conversation_id: OptionalRef = None
    agent_id: OptionalRef = None
    #: The team, inbox or queue the conversation is routed to (a help desk's group, a chat
    #: platform's team); a conversation's team is the latest one seen in it.
    team_id: OptionalRef = None
    survey: Survey | None = None
    consent: Consent | None = None
    attributes: Annotated[dict[AttributeKey, AttributeValue], Field(max_length=MAX_ATTRIBUTES)] = {}

    @field_validator("occurred_at", "received_at", mode="before")
    @classmethod
    def _text_or_datetime(cls, value: object) -> object:
        # Lax validation would read a number as seconds since the epoch; the contract (and the
        # JSON Schema) says an ISO 8601 string with a timezone.
        if isinstance(value, int | float):
            raise ValueError("must be an ISO 8601 date-time string with a timezone, not a number")
        return value

    @field_validator("occurred_at", "received_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        # The same instant with the one `UTC` tzinfo: two datetimes that share a tzinfo
        # compare without asking each for its UTC offset, which the metric core would do
        # many times per event (an offset parsed from JSON is a tzinfo object of its own).
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> Self:
        """The payload matches the kind, then the times are possible (one validator: each
        Python validator costs a call per event on the worker's hot path)."""
        kind = self.kind
        if (kind is _SURVEY_RESPONSE) != (self.survey is not None):
            raise ValueError("survey is required on survey_response events and allowed only there")
        if (kind is _CONSENT_UPDATED) != (self.consent is not None):
            raise ValueError("consent is required on consent_updated events and allowed only there")
        if kind is _CONVERSATION_SNOOZED:
            snoozed_until(self)
        occurred, received = self.occurred_at, self.received_at
        for name, moment in (("occurred_at", occurred), ("received_at", received)):
            if moment < EARLIEST:
                raise ValueError(f"{name} {moment.isoformat()} is before 1970-01-01T00:00:00Z")
        bound = skew_bound(info.context)
        if occurred - received > bound:
            raise ValueError(
                f"occurred_at {occurred.isoformat()} is more than {_seconds(bound)} after "
                f"received_at {received.isoformat()} (the clock skew allowed)"
            )
        return self


_SURVEY_RESPONSE, _CONSENT_UPDATED, _CONVERSATION_SNOOZED = (
    Kind.SURVEY_RESPONSE, Kind.CONSENT_UPDATED, Kind.CONVERSATION_SNOOZED
)  # fmt: skip


def snoozed_until(event: TouchpointEvent) -> datetime:
    """Until when a `conversation_snoozed` event snoozes its conversation: its
    `attributes["until"]`, an ISO 8601 date-time with a timezone."""
    text = event.attributes.get("until")
    if text is None:
        raise ValueError(
            'conversation_snoozed needs attributes["until"], an ISO 8601 date-time with a timezone'
        )
    try:
        until = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f'attributes["until"] {text!r} is not an ISO 8601 date-time') from None
    if until.tzinfo is None:
        raise ValueError(f'attributes["until"] {text!r} has no timezone')
    return until


def skew_bound(context: object) -> timedelta:
    """The clock skew allowed by a validation context (`MAX_CLOCK_SKEW` without one)."""
    bound = context.get(MAX_SKEW) if isinstance(context, dict) else None
    return bound if isinstance(bound, timedelta) else MAX_CLOCK_SKEW


def _seconds(bound: timedelta) -> str:
    return f"{bound.total_seconds():g} s"
