"""Bytes <-> TouchpointEvent. Decoding never raises: a bad record yields a reason."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from touchstream.schemas.touchpoint import MAX_CLOCK_SKEW, MAX_SKEW, TouchpointEvent

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


def decode(
    raw: bytes | None, *, max_skew: timedelta = MAX_CLOCK_SKEW, now: datetime | None = None
) -> TouchpointEvent | Rejected:
    """The event in `raw`, or why it is not one. With `now` (the reader's wall clock), an
    event whose `occurred_at` (or `received_at`) is more than `max_skew` after it is
    rejected too, whatever its `received_at` says: no single record can carry its
    partition's event time, and so its horizon, beyond the wall clock plus the skew."""
    if raw is None:
        return Rejected("empty record (no value)")
    try:
        event = TouchpointEvent.model_validate_json(raw, context={MAX_SKEW: max_skew})
    except ValidationError as error:
        return Rejected(describe(error))
    if now is not None:
        for name, moment in (("occurred_at", event.occurred_at), ("received_at", event.received_at)):
            if moment - now > max_skew:
                return Rejected(
                    f"{name}: {moment.isoformat()} is more than {max_skew.total_seconds():g} s "
                    f"after the wall clock ({now.isoformat()}); the clock skew allowed"
                )
    return event


def encode(event: TouchpointEvent) -> bytes:
    return event.model_dump_json(exclude_defaults=False).encode()
