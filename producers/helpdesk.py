"""Help-desk tickets: the Touchstream generic help-desk webhook.

`POST /v1/webhooks/helpdesk/generic`, signed with `Touchstream-Signature`. Body: one
ticket event, an array, or `{"events": [...]}`:

    {
      "id": "evt-9001",                 # the help desk's event/comment id (required)
      "platform": "freshdesk",          # namespaces the ids; default "helpdesk"
      "type": "agent_reply",            # ticket_opened | customer_reply | agent_reply | ticket_resolved
      "ticket_id": "T-1207",            # required: the ticket is the conversation
      "customer_id": "cust-42",
      "agent_id": "agent-7",            # for agent replies and resolutions
      "occurred_at": "2026-05-01T11:15:00Z",
      "channel": "helpdesk",            # optional (e.g. "email" for an emailed ticket)
      "category": "billing",            # optional, on ticket_opened: the ticket's category
      "priority": "high",               # optional, on ticket_opened: low | normal | high | urgent
      "attributes": {"plan": "pro"}
    }

Mapping: ticket_opened -> `ticket_opened`, the customer's, inbound (it opens the
conversation and waits for a reply); customer_reply -> inbound customer `message`;
agent_reply -> outbound agent `message`; ticket_resolved -> `ticket_resolved` by the
agent (or the system when no agent_id), direction none. conversation_id
`<platform>:ticket:<ticket_id>`, event_id `<platform>:<id>`. `category` and `priority`
become the attributes of the same names, which the tickets view reads from the opening
event (SPEC §5b; default `uncategorized` / `normal`).
"""

from __future__ import annotations

from typing import Any

from touchstream.producers.generic import map_items, optional_attributes
from touchstream.producers.mapping import Mapped, MappingContext, choice, stable_id, text
from touchstream.producers.signatures import verify_touchstream
from touchstream.producers.webhook import Provider, WebhookRequest

TYPES = {
    "ticket_opened": ("ticket_opened", "inbound", "customer"),
    "customer_reply": ("message", "inbound", "customer"),
    "agent_reply": ("message", "outbound", "agent"),
    "ticket_resolved": ("ticket_resolved", "none", "agent"),
}


def ticket_fields(item: dict[str, Any]) -> dict[str, Any]:
    event_type = choice(item, "type", TYPES)
    kind, direction, actor = TYPES[event_type]
    agent_id = text(item, "agent_id", required=False)
    if event_type == "ticket_resolved" and agent_id is None:
        actor = "system"
    platform = text(item, "platform", required=False) or "helpdesk"
    return {
        "event_id": stable_id(platform, text(item, "id") or ""),
        "occurred_at": item.get("occurred_at"),
        "customer_id": text(item, "customer_id"),
        "channel": item.get("channel", "helpdesk"),
        "kind": kind,
        "direction": direction,
        "actor": actor,
        "conversation_id": stable_id(platform, "ticket", text(item, "ticket_id") or ""),
        "agent_id": agent_id if actor == "agent" else None,
        "attributes": ticket_attributes(item),
    }


def ticket_attributes(item: dict[str, Any]) -> Any:
    """The attributes as sent, with the ticket's category and priority (lower case) when given."""
    attributes = optional_attributes(item)
    named = {key: text(item, key, required=False) for key in ("category", "priority")}
    if not isinstance(attributes, dict) or not any(named.values()):
        return attributes
    return {**attributes, **{key: value.lower() for key, value in named.items() if value}}


def map_request(request: WebhookRequest, context: MappingContext) -> Mapped:
    return map_items(request, context, "events", ticket_fields)


PROVIDER = Provider(
    kind="helpdesk",
    name="generic",
    verify=verify_touchstream,
    map=map_request,
    source="Touchstream generic help-desk format (docs/adapters.md)",
)
