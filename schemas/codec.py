"""Bytes <-> TouchpointEvent. Decoding never raises: a bad record yields a reason."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from schemas.touchpoint import TouchpointEvent

MAX_REASON_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that is not a valid TouchpointEvent, with a human-readable reason."""

    reason: str


def describe(error: ValidationError) -> str:
    """One line naming every failing field, e.g. `occurred_at: Input should have timezone info`."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "event"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)[:MAX_REASON_CHARS]


def decode(raw: bytes | None) -> TouchpointEvent | Rejected:
    if raw is None:
        return Rejected("empty record (no value)")
    try:
        return TouchpointEvent.model_validate_json(raw)
    except ValidationError as error:
        return Rejected(describe(error))


def encode(event: TouchpointEvent) -> bytes:
    return event.model_dump_json(exclude_defaults=False).encode()
