"""A customer's engine state as JSON records, and back.

One record per customer (state, buffered events, remembered event ids) is what a
changelog-backed table stores under the customer's key; the partition's horizon and
watermarks travel in a record of their own (`Engine.export_partition`). With a store
(the worker's table), a customer's closed conversations leave its record for records of
their own under keys that start with the customer's (`conversation_key`, `Engine.retire`).
`Engine.export_json` / `Engine.restore` use these; restoring and carrying on gives
exactly the results of never having stopped (property-tested).

A record is written for every customer a batch touches, so it is built cheaply: the
state is serialized by pydantic-core's `to_json` (datetimes included, no Python-level
`isoformat`), and each buffered event's JSON is made once, when the event is buffered,
and spliced in as it is (`pending_json`) however many records carry it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import fields as dataclass_fields
from datetime import date, datetime
from typing import Any

from pydantic_core import to_json

from touchstream.schemas.touchpoint import TouchpointEvent
from touchstream.streams.metrics.customer import CustomerState
from touchstream.streams.metrics.engagement import Engagement
from touchstream.streams.metrics.records import RowKey
from touchstream.streams.metrics.responses import Conversation, SlaTarget

_TARGET_FIELDS = tuple(spec.name for spec in dataclass_fields(SlaTarget))
_TARGET_TIMES = frozenset({"started_at", "due_at", "ended_at", "updated_at"})


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
        "erased_before": state.erased_before,
        "derived": dict(state.derived),
        "changed_by_time": state.changed_by_time,
        "retired": state.retired,
        "conversations": {key: _conversation_fields(c) for key, c in state.conversations.items()},
        "engagement": {
            "score": engagement.score,
            "updated_at": engagement.updated_at,
            "level": engagement.level,
            "cap_day": engagement.cap_day,
            "cap_counts": dict(engagement.cap_counts),
            "recent": engagement.recent,
        },
    }


def _conversation_fields(c: Conversation) -> list[Any]:
    return [
        c.last_event_at,
        c.waiting_since,
        c.waiting_channel,
        c.responded,
        c.changed_at,
        c.status,
        c.closed_at,
        c.snoozed_until,
        c.abandoned,
        c.closed_without_reply,
        c.channel,
        c.opened_at,
        c.team_id,
        c.last_agent_id,
        c.updated_at,
        c.priority,
        c.resolution_business_seconds,
        [[getattr(t, name) for name in _TARGET_FIELDS] for t in c.targets],
    ]


#: Separates a customer's id from what follows in the keys of its other records: a byte
#: that UTF-8 never holds, so no customer id (any string) is such a key or starts one.
SIDE = b"\xff"


def conversation_key(customer_id: str, conversation_id: str) -> bytes:
    """The key of a conversation kept out of its customer's record (`Engine.retire`)."""
    return customer_id.encode() + SIDE + b"c" + conversation_id.encode()


def customer_of(key: bytes) -> bytes:
    """The customer id (UTF-8) a record's key belongs to."""
    return key.partition(SIDE)[0]


def conversation_json(conversation: Conversation) -> bytes:
    """A conversation kept out of its customer's record (`Engine.retire`), as its own record."""
    return to_json(_conversation_fields(conversation))


def conversation_from_json(conversation_id: str, value: bytes) -> Conversation:
    return _conversation(conversation_id, json.loads(value))


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
    conversations = {key: _conversation(key, fields) for key, fields in data["conversations"].items()}
    erased = data.get("erased_before")
    return CustomerState(
        customer_id=data["customer_id"],
        consent=data["consent"],
        conversations=conversations,
        derived=dict(data["derived"]),
        engagement=engagement,
        erased_before=(_required(erased[0]), erased[1]) if erased else None,
        changed_by_time=_parse(data.get("changed_by_time")),
        retired=data.get("retired", False),
    )


def _conversation(key: str, fields: list[Any]) -> Conversation:
    last, since, channel, responded, changed = fields[:5]
    conversation = Conversation(key, _required(last), _parse(since), channel, responded, _parse(changed))
    if len(fields) > 5:  # a record of a version with conversation status
        (status, closed, snoozed, abandoned, unreplied, first_channel, opened, team, agent, updated) = fields[
            5:15
        ]
        conversation.status, conversation.closed_at, conversation.snoozed_until = (
            status,
            _parse(closed),
            _parse(snoozed),
        )
        conversation.abandoned, conversation.closed_without_reply = abandoned, unreplied
        conversation.channel, conversation.opened_at = first_channel, _parse(opened)
        conversation.team_id, conversation.last_agent_id, conversation.updated_at = (
            team,
            agent,
            _parse(updated),
        )
    if len(fields) > 15:  # a record of a version with SLA targets
        conversation.priority, conversation.resolution_business_seconds = fields[15], fields[16]
        conversation.targets = [_target(saved) for saved in fields[17]]
        conversation.refresh_due()
    return conversation


def _target(saved: list[Any]) -> SlaTarget:
    values: dict[str, Any] = dict(zip(_TARGET_FIELDS, saved, strict=True))
    for name in _TARGET_TIMES:
        values[name] = _parse(values[name])
    return SlaTarget(**values)


def pending_json(event: TouchpointEvent) -> str:
    """A buffered event as it travels in its customer's record (unset optional fields left out)."""
    return event.model_dump_json(exclude_defaults=True)


def state_json(state: CustomerState | None) -> bytes:
    """A folded state as it travels in its customer's record (`record_json`)."""
    return to_json(customer_to_dict(state) if state is not None else None)


def record_json(
    crossing: float | None,
    state: bytes,
    pending: Iterable[str],
    seen: dict[str, datetime],
    customer_id: str,
    provisional: Iterable[RowKey] = (),
) -> bytes:
    """The customer's record; `crossing` is its folded state's next decay crossing (POSIX
    seconds), `state` the folded state's `state_json`, `pending` holds the buffered
    events' `pending_json`, `seen` the remembered event ids but the buffered events'
    (which carry theirs), `provisional` the keys of its provisional rows in the tables.
    The record opens with the crossing and the number of buffered events (`record_head`),
    so a restart reads those without parsing the rest."""
    pending = list(pending)
    head = to_json({"next": crossing, "buffered": len(pending), "customer_id": customer_id})
    rest = to_json({"seen": seen, "provisional": sorted([table, list(key)] for table, key in provisional)})
    return b"".join((head[:-1], b',"state":', state, b",", rest[1:-1], b',"pending":[',
                     ",".join(pending).encode(), b"]}"))  # fmt: skip


_HEAD = re.compile(rb'\{"next":(null|[-+.eE0-9]+),"buffered":([0-9]+),')


def record_head(value: bytes) -> tuple[float | None, int] | None:
    """A record's next decay crossing and number of buffered events, read from its opening
    bytes; None for a record without them."""
    found = _HEAD.match(value)
    if found is None:
        return None
    crossing, buffered = found.groups()
    return (None if crossing == b"null" else float(crossing)), int(buffered)


def _row_key(table: str, key: list[Any]) -> RowKey:
    if table == "engagement_changes":  # (customer_id, changed_at, previous_level, level)
        return table, (key[0], _required(key[1]), key[2], key[3])
    return table, tuple(key)


def record_from_dict(
    data: dict[str, Any],
) -> tuple[CustomerState | None, list[TouchpointEvent], dict[str, datetime], set[RowKey]]:
    state = customer_from_dict(data["state"]) if data["state"] is not None else None
    pending = [TouchpointEvent.model_validate(item) for item in data["pending"]]
    seen = {event_id: _required(when) for event_id, when in data["seen"].items()}
    seen |= {event.event_id: event.occurred_at for event in pending}  # left out of `seen` as written
    provisional = {_row_key(table, key) for table, key in data.get("provisional", ())}
    return state, pending, seen, provisional
