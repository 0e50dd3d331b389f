"""The one mechanism every channel adapter shares: a source payload in, events or reasons out.

A provider module (`producers/chat/intercom.py`, `producers/email/mailgun.py`, ...) reads
its platform's payload and calls `Mapped.add` with the canonical fields of each
touchpoint it finds. `Mapped` validates them against `TouchpointEvent` and keeps, per
item, either the event or the reason it was rejected; items that carry no touchpoint
(delivery receipts, internal notes, pings) are counted as ignored, never silently lost.

`event_id`s are derived from the source's own ids (`stable_id`), so a redelivered
webhook maps to the same ids and is deduplicated downstream.

Whole-payload problems (not JSON, not the platform's envelope) raise `PayloadError`.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import ValidationError

from touchstream.schemas.codec import describe
from touchstream.schemas.errors import TouchstreamError
from touchstream.schemas.touchpoint import MAX_CLOCK_SKEW, MAX_SKEW, TouchpointEvent

MAX_EVENT_ID_CHARS = 128


class PayloadError(TouchstreamError):
    """The payload as a whole cannot be read; `label` is a short word for metrics."""

    def __init__(self, message: str, *, label: str = "invalid_payload") -> None:
        super().__init__(message)
        self.label = label


@dataclass(frozen=True)
class ItemError:
    index: int
    reason: str
    event_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "reason": self.reason}


class Threads:
    """The authors of recent public comments (comment id -> (customer_id, conversation_id)),
    so that a page's reply, which names only the comment it answers, lands in that customer's
    conversation. Bounded: the oldest are forgotten first."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, tuple[str, str]] = OrderedDict()

    def remember(self, comment_id: str, customer_id: str, conversation_id: str) -> None:
        self._seen[comment_id] = (customer_id, conversation_id)
        self._seen.move_to_end(comment_id)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)

    def find(self, comment_id: str) -> tuple[str, str] | None:
        return self._seen.get(comment_id)


@dataclass(frozen=True)
class MappingContext:
    """What a mapping needs beyond the payload: the time it arrived, and the brand's identity."""

    received_at: datetime
    #: Domains whose senders are the brand (email direction). Subdomains count too.
    brand_domains: frozenset[str] = frozenset()
    #: Email addresses become `email:<sha256>` customer ids unless this is False.
    hash_email_addresses: bool = True
    #: Platform ids whose messages are a bot's (e.g. a Messenger app id).
    bot_ids: frozenset[str] = frozenset()
    #: How far occurred_at may lie after received_at.
    max_skew: timedelta = MAX_CLOCK_SKEW
    #: Authors of public comments seen so far (the collector keeps one for all requests).
    threads: Threads | None = None


@dataclass
class Mapped:
    """The outcome of mapping one payload."""

    received_at: datetime
    max_skew: timedelta = MAX_CLOCK_SKEW
    events: list[TouchpointEvent] = field(default_factory=list)
    errors: list[ItemError] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)

    def add(self, index: int, fields: dict[str, Any]) -> None:
        """Validate one touchpoint's canonical fields; keep the event or the reason."""
        event_id = fields.get("event_id") if isinstance(fields.get("event_id"), str) else None
        try:
            event = TouchpointEvent.model_validate(
                {**fields, "received_at": self.received_at}, context={MAX_SKEW: self.max_skew}
            )
            self.events.append(event)
        except ValidationError as error:
            self.errors.append(ItemError(index, describe(error), event_id))

    def take(
        self, index: int, build: Callable[[], dict[str, Any] | str], *, event_id: str | None = None
    ) -> None:
        """Build one item's fields and keep the outcome: its event, or the reason it is
        rejected (`build` raised ValueError), or why it carries no touchpoint (a string)."""
        try:
            fields = build()
        except ValueError as error:
            self.reject(index, str(error), event_id)
            return
        if isinstance(fields, str):
            self.ignore(index, fields)
        else:
            self.add(index, fields)

    def reject(self, index: int, reason: str, event_id: str | None = None) -> None:
        self.errors.append(ItemError(index, reason, event_id))

    def ignore(self, index: int, why: str) -> None:
        self.ignored.append(f"item {index}: {why}")

    def summary(self) -> dict[str, Any]:
        return {
            "accepted": len(self.events),
            "rejected": len(self.errors),
            "ignored": len(self.ignored),
            "errors": [error.as_dict() for error in self.errors],
            "notes": self.ignored[:20],
        }


def stable_id(source: str, *parts: str) -> str:
    """`source:part:part`, or `source:<sha256>` when that would exceed the event_id limit.

    Deterministic: the same source ids always give the same event_id.
    """
    plain = ":".join((source, *parts))
    if len(plain) <= MAX_EVENT_ID_CHARS and plain.isprintable():
        return plain
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"{source}:{digest[:48]}"


def from_unix(value: object, *, unit: float = 1.0, what: str = "timestamp") -> datetime:
    """A UTC datetime from epoch seconds (unit=1) or milliseconds (unit=1000)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{what} must be a number of seconds since the epoch, not {_kind(value)}")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{what} must be a number, got {str(value)[:40]!r}") from None
    seconds = number / unit
    if not math.isfinite(seconds) or not 0 <= seconds < 253402300800:  # before year 10000
        raise ValueError(f"{what} is out of range: {str(value)[:40]}")
    return datetime.fromtimestamp(seconds, UTC)


def text(item: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    """A string field of a JSON object (ints are accepted and turned into text: ids often are)."""
    value = item.get(key)
    if value is None or value == "":
        if required:
            raise ValueError(f"{key} is required")
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{key} must be a string, not {_kind(value)}")
    return str(value)


def choice(item: dict[str, Any], key: str, options: Iterable[str]) -> str:
    """A field that must be one of `options`."""
    value = item.get(key)
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{key} must be one of {', '.join(options)}, got {str(value)[:40]!r}")
    return value


def obj(item: object, key: str, *, required: bool = True) -> dict[str, Any]:
    """A nested JSON object field (an empty dict when absent and not required)."""
    value = item.get(key) if isinstance(item, dict) else None
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{key} must be an object, not {_kind(value)}")
    return value


def _kind(value: object) -> str:
    return {type(None): "null", bool: "boolean", int: "number", float: "number", str: "string",
            list: "array", dict: "object"}.get(type(value), type(value).__name__)  # fmt: skip
