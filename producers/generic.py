"""What the Touchstream generic webhook formats share: the envelope and the signature.

A generic payload is one item, a JSON array of items, or `{"<plural>": [items]}`
(`messages`, `responses`, `events`). Items map one to one to touchpoints; each is
checked on its own, so one bad item does not sink the others.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from touchstream.producers.mapping import Mapped, MappingContext, PayloadError
from touchstream.producers.webhook import WebhookRequest


def items(request: WebhookRequest, plural: str) -> list[Any]:
    payload = request.json()
    if isinstance(payload, dict) and plural in payload:
        payload = payload[plural]
        if not isinstance(payload, list):
            raise PayloadError(f"{plural} must be an array")
    found = payload if isinstance(payload, list) else [payload]
    if not found:
        raise PayloadError("empty batch: send one item or a non-empty array", label="empty_batch")
    return found


def map_items(
    request: WebhookRequest,
    context: MappingContext,
    plural: str,
    fields_of: Callable[[dict[str, Any]], dict[str, Any]],
) -> Mapped:
    mapped = Mapped(context.received_at, max_skew=context.max_skew)
    for index, item in enumerate(items(request, plural)):
        if isinstance(item, dict):
            mapped.take(index, partial(fields_of, item))
        else:
            mapped.reject(index, f"an item must be a JSON object, not {type(item).__name__}")
    return mapped


def optional_attributes(item: dict[str, Any]) -> Any:
    """Attributes as sent; the event model checks their shape and size."""
    return item.get("attributes") or {}
