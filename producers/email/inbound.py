"""What the inbound-parse webhooks share: headers in, one mapped message out."""

from __future__ import annotations

import email.parser
import email.policy
from dataclasses import replace
from email.message import Message
from functools import partial

from touchstream.producers.email.headers import domain_of, email_fields, read_headers
from touchstream.producers.mapping import Mapped, MappingContext


def headers_of(raw: str | bytes) -> Message:
    """Parse a header block (or a whole message; the body is not read)."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    return email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)


def map_message(message: Message, context: MappingContext, *, platform: str, receiving: list[str]) -> Mapped:
    """One inbound-parse delivery: the receiving addresses' domains count as the brand's."""
    mapped = Mapped(context.received_at, max_skew=context.max_skew)
    brand = context.brand_domains | {domain_of(address) for address in receiving if "@" in address}
    context = replace(context, brand_domains=frozenset(brand))
    headers = read_headers(message)
    build = partial(email_fields, headers, context, platform=platform, fallback_time=context.received_at)
    mapped.take(0, build, event_id=headers.event_id)
    return mapped
