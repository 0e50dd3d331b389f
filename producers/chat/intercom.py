"""Intercom conversation webhooks (API 2.x notification_event; 1.x `user` shape also read).

Source: Intercom developer docs, "Webhook models" and "Webhook topics"
(developers.intercom.com/docs/references/2.x/webhooks/webhook-models).
Signed with `X-Hub-Signature: sha1=<hex>` over the body with the app's client secret.

Mapping:
- `conversation.user.created` / `conversation.admin.single.created`: the conversation's
  opening message (`source`, 1.x `conversation_message`), at the conversation's
  `created_at`.
- Every topic: each `conversation_parts` part of type `comment` is a message; a close,
  open or assignment part that carries a reply body is one too. Notes are internal and
  ignored, as are parts without a body and topics that are not about conversations.
- Author `user`/`lead`/`contact` is the customer (inbound); `admin` an agent (outbound,
  `agent_id` = admin id); `bot` a bot (outbound); `team` the system.
- customer_id is the contact's `external_id` (the brand's own user id) when set, else
  `intercom:<contact id>`; conversation_id `intercom:<conversation id>`; event_id
  `intercom:<part or message id>`.

Intercom signs the body only (no timestamp): a replayed delivery carries the same
part ids, so it maps to the same event_ids and is deduplicated downstream.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from producers.mapping import (
    Mapped,
    MappingContext,
    PayloadError,
    choice,
    from_unix,
    obj,
    stable_id,
    text,
)
from producers.signatures import verify_hub
from producers.webhook import Provider, WebhookRequest

OPENING_TOPICS = {"conversation.user.created", "conversation.admin.single.created"}
REPLY_PART_TYPES = {"close", "open", "assignment", "assign_and_reopen", "away_mode_assignment"}
AUTHORS = {
    "user": ("customer", "inbound"),
    "lead": ("customer", "inbound"),
    "contact": ("customer", "inbound"),
    "admin": ("agent", "outbound"),
    "bot": ("bot", "outbound"),
    "team": ("system", "none"),
}


def customer_of(conversation: dict[str, Any]) -> str:
    contacts = obj(conversation, "contacts", required=False).get("contacts")
    if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict):
        contact = contacts[0]
    else:
        contact = obj(conversation, "user", required=False)  # API 1.x
    external = text(contact, "external_id", required=False) or text(contact, "user_id", required=False)
    if external:
        return external
    contact_id = text(contact, "id", required=False)
    if not contact_id:
        raise ValueError("conversation names no contact (contacts.contacts[0] or user)")
    return stable_id("intercom", contact_id)


def message_fields(
    conversation: dict[str, Any], message: dict[str, Any], created_at: object, topic: str
) -> dict[str, Any]:
    author = obj(message, "author")
    actor, direction = AUTHORS[choice(author, "type", AUTHORS)]
    return {
        "event_id": stable_id("intercom", text(message, "id") or ""),
        "occurred_at": from_unix(created_at, what="created_at"),
        "customer_id": customer_of(conversation),
        "channel": "chat",
        "kind": "message",
        "direction": direction,
        "actor": actor,
        "conversation_id": stable_id("intercom", text(conversation, "id") or ""),
        "agent_id": text(author, "id", required=False) if actor == "agent" else None,
        "attributes": {"platform": "intercom", "topic": topic},
    }


def map_request(request: WebhookRequest, context: MappingContext) -> Mapped:
    payload = request.json()
    if not isinstance(payload, dict) or payload.get("type") != "notification_event":
        raise PayloadError("not an Intercom notification_event")
    mapped = Mapped(context.received_at)
    topic = payload.get("topic")
    if not isinstance(topic, str):
        raise PayloadError("notification_event without a topic")
    if not topic.startswith("conversation."):
        mapped.ignore(0, f"topic {topic[:60]} carries no conversation message")
        return mapped
    try:
        conversation = obj(obj(payload, "data"), "item")
    except ValueError as error:
        raise PayloadError(f"data.item: {error}") from None

    candidates: list[tuple[dict[str, Any], object]] = []
    if topic in OPENING_TOPICS:
        opening = conversation.get("source") or conversation.get("conversation_message")
        if isinstance(opening, dict):
            candidates.append((opening, conversation.get("created_at")))
    try:
        parts = obj(conversation, "conversation_parts", required=False).get("conversation_parts") or []
    except ValueError as error:
        raise PayloadError(f"data.item: {error}") from None
    if not isinstance(parts, list):
        raise PayloadError("data.item.conversation_parts.conversation_parts must be an array")
    for part in parts:
        if not isinstance(part, dict):
            candidates.append(({}, None))
            continue
        part_type, body = part.get("part_type"), part.get("body")
        if part_type == "comment" or (isinstance(part_type, str) and part_type in REPLY_PART_TYPES and body):
            candidates.append((part, part.get("created_at")))
        else:
            why = f"{str(part_type)[:40]} part is not a message to or from the customer"
            mapped.ignore(len(candidates), why)

    if not candidates and not mapped.ignored:
        mapped.ignore(0, f"{topic} carries no message")
    for index, (message, created_at) in enumerate(candidates):
        mapped.take(index, partial(message_fields, conversation, message, created_at, topic))
    return mapped


PROVIDER = Provider(
    kind="chat",
    name="intercom",
    verify=verify_hub("x-hub-signature", "sha1"),
    map=map_request,
    source="developers.intercom.com/docs/references/2.11/webhooks/webhook-models",
)
