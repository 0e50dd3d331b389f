"""The Touchstream generic chat webhook: for chat systems without a dedicated adapter.

`POST /v1/webhooks/chat/generic`, signed with `Touchstream-Signature` (see
`producers/signatures.py`). Body: one message, an array, or `{"messages": [...]}`:

    {
      "id": "msg-8812",                 # the chat system's message id (required)
      "platform": "livechat",           # namespaces the id; default "chat"
      "conversation_id": "conv-311",    # required
      "customer_id": "cust-42",         # required
      "sender": "customer",             # customer | agent | bot | system
      "agent_id": "agent-7",            # for agent messages
      "sent_at": "2026-05-01T09:30:00+02:00",   # ISO 8601 with an offset
      "channel": "chat",                # optional, any Touchstream channel
      "team_id": "billing",             # optional: the team or queue it is routed to
      "type": "message",                # optional: message (default), closed, snoozed, opened
      "snoozed_until": "2026-05-02T09:00:00+02:00",   # with "type": "snoozed"
      "attributes": {"queue": "billing"}
    }

`event_id` is `<platform>:<id>`, so a resent message keeps its id. A `closed`, `snoozed`
or `opened` item is a status change of the conversation (`conversation_closed`,
`conversation_snoozed` until `snoozed_until`, `conversation_opened`; SPEC §5), by its
sender, direction none.
"""

from __future__ import annotations

from typing import Any

from touchstream.producers.generic import map_items, optional_attributes
from touchstream.producers.mapping import Mapped, MappingContext, choice, stable_id, text
from touchstream.producers.signatures import verify_touchstream
from touchstream.producers.webhook import Provider, WebhookRequest

DIRECTIONS = {"customer": "inbound", "agent": "outbound", "bot": "outbound", "system": "none"}


#: Item types and the kinds they are.
TYPES = {
    "message": "message",
    "closed": "conversation_closed",
    "snoozed": "conversation_snoozed",
    "opened": "conversation_opened",
}


def message_fields(item: dict[str, Any]) -> dict[str, Any]:
    sender = choice(item, "sender", DIRECTIONS)
    platform = text(item, "platform", required=False) or "chat"
    kind = TYPES[choice(item, "type", TYPES)] if "type" in item else "message"
    attributes = optional_attributes(item)
    if kind == "conversation_snoozed" and isinstance(attributes, dict):
        attributes = {**attributes, "until": text(item, "snoozed_until") or ""}
    return {
        "event_id": stable_id(platform, text(item, "id") or ""),
        "occurred_at": item.get("sent_at"),
        "customer_id": text(item, "customer_id"),
        "channel": item.get("channel", "chat"),
        "kind": kind,
        "direction": DIRECTIONS[sender] if kind == "message" else "none",
        "actor": sender,
        "conversation_id": text(item, "conversation_id"),
        "agent_id": text(item, "agent_id", required=False),
        "team_id": text(item, "team_id", required=False),
        "attributes": attributes,
    }


def map_request(request: WebhookRequest, context: MappingContext) -> Mapped:
    return map_items(request, context, "messages", message_fields)


PROVIDER = Provider(
    kind="chat",
    name="generic",
    verify=verify_touchstream,
    map=map_request,
    source="Touchstream generic chat format (docs/adapters.md)",
)
