"""Zendesk ticket events (webhooks connected to event subscriptions).

Source: Zendesk developer docs, "Ticket events" (developer.zendesk.com/api-reference/
webhooks/event-types/ticket-events): the envelope `{type, account_id, id, time,
zendesk_event_version, subject: "zen:ticket:<id>", detail: {ticket}, event: {...}}`,
`detail` with `id`, `requester_id`, `actor_id`, `priority`, `status`, `type`, `tags`,
`created_at`, `via.channel`; and "Verifying webhook authenticity": the headers
`X-Zendesk-Webhook-Signature` = base64(HMAC-SHA256(signing secret, timestamp + body)) and
`X-Zendesk-Webhook-Signature-Timestamp` (ISO 8601), checked against the tolerance.

Mapping (`POST /v1/webhooks/helpdesk/zendesk`), conversation_id `zendesk:ticket:<id>`,
event_id `zendesk:<event id>`, customer_id `zendesk:<requester_id>`, channel helpdesk:
- `zen:event-type:ticket.created`: `ticket_opened`, the customer's, inbound, at the
  ticket's `created_at`; attributes `priority` (low, normal, high, urgent; lower case),
  `category` (the first tag `category_<name>`, else the ticket type: question, incident,
  problem, task), `via` (the channel it came through).
- `zen:event-type:ticket.comment_added`: a public comment by staff (`author.is_staff`) is
  an outbound agent `message` (agent `zendesk:<author id>`); by anyone else an inbound
  customer `message`; an internal note (not public) carries no touchpoint. Zendesk also
  sends this event for the description of a new ticket: a customer message at the
  opening's instant, which changes no response time.
- `zen:event-type:ticket.status_changed` to SOLVED (or to CLOSED from anything but
  SOLVED): `ticket_resolved` by the agent who changed it (`detail.actor_id`), direction
  none; from SOLVED or CLOSED back to NEW, OPEN, PENDING or HOLD: `conversation_opened` by
  that agent (a later customer comment reopens the ticket too, SPEC §5).
- team_id: `zendesk:group:<detail.group_id>`, on every event of a ticket with a group.
- every other event type carries no touchpoint.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime
from typing import Any

from touchstream.producers.mapping import Mapped, MappingContext, PayloadError, obj, stable_id, text
from touchstream.producers.webhook import Provider, SignatureError, WebhookRequest

SIGNATURE = "x-zendesk-webhook-signature"
TIMESTAMP = "x-zendesk-webhook-signature-timestamp"
CREATED, COMMENT, STATUS = (f"zen:event-type:ticket.{name}" for name in ("created", "comment_added",
                                                                          "status_changed"))  # fmt: skip
#: Zendesk writes times with nanoseconds (`2024-05-10T15:39:42.434823248Z`); Python reads micro.
_NANOS = re.compile(r"(\.\d{6})\d+")


def verify(request: WebhookRequest, secret: bytes, tolerance: float) -> None:
    offered, timestamp = request.header(SIGNATURE), request.header(TIMESTAMP)
    if not offered or not timestamp:
        raise SignatureError(f"missing {SIGNATURE} or {TIMESTAMP} header", label="missing_signature")
    try:
        sent = datetime.fromisoformat(timestamp.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SignatureError(f"{TIMESTAMP} must be an ISO 8601 time", label="bad_signature") from None
    if abs(request.now - sent) > tolerance:  # the scheme of `signatures.check_timestamp`, in ISO 8601
        raise SignatureError(
            f"signature timestamp is {abs(request.now - sent):.0f}s away from the collector's clock "
            f"(tolerance {tolerance:.0f}s): stale or replayed request",
            label="stale_timestamp",
        )
    mac = hmac.new(secret, timestamp.encode() + request.body, hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode()
    if not hmac.compare_digest(expected.encode(), offered.strip().encode("utf-8", "replace")):
        raise SignatureError("signature does not match the timestamp, body and secret", label="bad_signature")


def zendesk_time(value: object, what: str) -> str:
    """An ISO 8601 time as Zendesk writes it, cut to microseconds (the schema checks the rest)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an ISO 8601 time")
    return _NANOS.sub(r"\1", value)


def category_of(ticket: dict[str, Any]) -> str | None:
    tags = ticket.get("tags")
    for tag in tags if isinstance(tags, list) else []:
        if isinstance(tag, str) and tag.startswith("category_") and len(tag) > len("category_"):
            return tag.removeprefix("category_")
    kind = ticket.get("type")
    return kind.lower() if isinstance(kind, str) and kind else None


def event_fields(payload: dict[str, Any]) -> dict[str, Any] | str:
    """The touchpoint's fields, or why the event carries none."""
    event_type = text(payload, "type") or ""
    ticket = obj(payload, "detail")
    ticket_id = text(ticket, "id") or ""
    base = {
        "event_id": stable_id("zendesk", text(payload, "id") or ""),
        "customer_id": stable_id("zendesk", text(ticket, "requester_id") or ""),
        "channel": "helpdesk",
        "conversation_id": stable_id("zendesk", "ticket", ticket_id),
        "team_id": stable_id("zendesk", "group", group)
        if (group := text(ticket, "group_id", required=False))
        else None,
    }
    change = obj(payload, "event", required=False)
    if event_type == CREATED:
        via = ticket["via"] if isinstance(ticket.get("via"), dict) else {}
        opened = ticket.get("created_at") or payload.get("time")
        attributes = {
            key: value
            for key, value in (
                ("priority", str(ticket.get("priority") or "").lower() or None),
                ("category", category_of(ticket)),
                ("via", via.get("channel") if isinstance(via.get("channel"), str) else None),
            )
            if value
        }
        return {**base, "kind": "ticket_opened", "direction": "inbound", "actor": "customer",
                "occurred_at": zendesk_time(opened, "detail.created_at"),
                "attributes": attributes}  # fmt: skip
    occurred_at = zendesk_time(payload.get("time"), "time")
    if event_type == COMMENT:
        comment = obj(change, "comment")
        if comment.get("is_public") is False:
            return "an internal note carries no touchpoint"
        author = obj(comment, "author")
        staff = author.get("is_staff") is True
        return {**base, "kind": "message", "occurred_at": occurred_at,
                "direction": "outbound" if staff else "inbound", "actor": "agent" if staff else "customer",
                "agent_id": stable_id("zendesk", text(author, "id") or "") if staff else None}  # fmt: skip
    if event_type == STATUS:
        current, previous = (str(change.get(key) or "").upper() for key in ("current", "previous"))
        if current == "SOLVED" or (current == "CLOSED" and previous != "SOLVED"):
            actor = text(ticket, "actor_id", required=False)
            return {**base, "kind": "ticket_resolved", "occurred_at": occurred_at, "direction": "none",
                    "actor": "agent" if actor else "system",
                    "agent_id": stable_id("zendesk", actor) if actor else None}  # fmt: skip
        if previous in ("SOLVED", "CLOSED") and current in ("NEW", "OPEN", "PENDING", "HOLD"):
            actor = text(ticket, "actor_id", required=False)
            return {**base, "kind": "conversation_opened", "occurred_at": occurred_at, "direction": "none",
                    "actor": "agent" if actor else "system",
                    "agent_id": stable_id("zendesk", actor) if actor else None}  # fmt: skip
        return f"status {previous or '?'} -> {current or '?'} carries no touchpoint"
    return f"{event_type or 'an untyped event'} carries no touchpoint"


def map_request(request: WebhookRequest, context: MappingContext) -> Mapped:
    payload = request.json()
    if not isinstance(payload, dict) or not str(payload.get("type", "")).startswith("zen:event-type:"):
        raise PayloadError('not a Zendesk event (type must be "zen:event-type:...")')
    mapped = Mapped(context.received_at, max_skew=context.max_skew)
    mapped.take(0, lambda: event_fields(payload))
    return mapped


PROVIDER = Provider(
    kind="helpdesk",
    name="zendesk",
    verify=verify,
    map=map_request,
    source="developer.zendesk.com/api-reference/webhooks/event-types/ticket-events (ticket.created, "
    "ticket.comment_added, ticket.status_changed); developer.zendesk.com/documentation/webhooks/verifying",
    body_schema={"type": "object", "required": ["type"], "properties": {"type": {"type": "string"}}},
)
