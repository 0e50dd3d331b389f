"""Survey responses (NPS, CSAT): the Touchstream generic survey webhook.

`POST /v1/webhooks/survey/generic`, signed with `Touchstream-Signature`. Body: one
response, an array, or `{"responses": [...]}`:

    {
      "id": "resp-5521",                # the survey tool's response id (required)
      "platform": "delighted",          # namespaces the id; default "survey"
      "customer_id": "cust-42",
      "type": "nps",                    # nps (0-10) | csat (1-5)
      "score": 9,
      "answered_at": "2026-05-01T10:02:00Z",
      "channel": "chat",                # the channel whose touchpoint is rated (required)
      "conversation_id": "conv-311",    # optional: the conversation rated
      "agent_id": "agent-7",            # optional
      "attributes": {"campaign": "post-chat"}
    }

A response is a customer's inbound `survey_response` on the rated channel, so NPS and
CSAT land per channel (SPEC §5). event_id `<platform>:<id>`.
"""

from __future__ import annotations

from typing import Any

from touchstream.producers.generic import map_items, optional_attributes
from touchstream.producers.mapping import Mapped, MappingContext, stable_id, text
from touchstream.producers.signatures import verify_touchstream
from touchstream.producers.webhook import Provider, WebhookRequest


def response_fields(item: dict[str, Any]) -> dict[str, Any]:
    if "channel" not in item:
        raise ValueError("channel is required: the channel whose touchpoint the response rates")
    platform = text(item, "platform", required=False) or "survey"
    return {
        "event_id": stable_id(platform, text(item, "id") or ""),
        "occurred_at": item.get("answered_at"),
        "customer_id": text(item, "customer_id"),
        "channel": item.get("channel"),
        "kind": "survey_response",
        "direction": "inbound",
        "actor": "customer",
        "conversation_id": text(item, "conversation_id", required=False),
        "agent_id": text(item, "agent_id", required=False),
        "survey": {"type": item.get("type"), "score": item.get("score")},
        "attributes": optional_attributes(item),
    }


def map_request(request: WebhookRequest, context: MappingContext) -> Mapped:
    return map_items(request, context, "responses", response_fields)


PROVIDER = Provider(
    kind="survey",
    name="generic",
    verify=verify_touchstream,
    map=map_request,
    source="Touchstream generic survey format (docs/adapters.md)",
)
