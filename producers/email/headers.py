"""One email's headers -> one touchpoint. Bodies are never read into events (privacy).

- event_id: `email:<Message-ID>` (hashed when long); without a Message-ID, a hash of
  Date, From, To and Subject, so the same message still gets the same id.
- conversation_id: the thread's root. RFC 5322 keeps the thread's first message id as
  the first entry of `References`, so a reply names its root even when it arrives
  before the message it answers: root = References[0], else In-Reply-To, else the
  message's own id. `ingest-email` goes further and joins chains that lack
  `References` (see `Threads`).
- direction: outbound when the sender's domain is one of the brand's domains
  (subdomains included), inbound otherwise. The customer is the sender of inbound
  mail and the first non-brand recipient of outbound mail; mail between brand
  addresses carries no customer and is ignored.
- actor: automatic mail (`Auto-Submitted` other than `no`, `Precedence:
  bulk/junk/auto_reply`) is the system's; otherwise the customer's (inbound) or an
  agent's (outbound, `agent_id` = the sender's address). `Precedence: list` is what
  mailing lists put on people's posts: still a person. Mail with a null sender
  (`Return-Path: <>`, `From: MAILER-DAEMON <>`: bounces, delivery reports) is ignored.
- customer_id: `email:<sha256 of the lower-cased address>` by default (pseudonymous);
  the plain address when hashing is switched off.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from typing import Any

from touchstream.producers.mapping import MappingContext, stable_id

_MESSAGE_ID = re.compile(r"<([^<>\s]{1,998})>")
#: `Precedence` values of automatic mail. Not `list`: mailing-list software puts it on
#: every post people write to the list (RFC 3834 section 2 treats only `Auto-Submitted`
#: as authoritative; `bulk`, `junk` and `auto_reply` are what autoresponders send).
AUTOMATIC_PRECEDENCE = {"bulk", "junk", "auto_reply"}


@dataclass(frozen=True)
class EmailHeaders:
    message_id: str | None
    in_reply_to: str | None
    references: tuple[str, ...]
    sender: str | None
    recipients: tuple[str, ...]
    date: datetime | None
    automatic: bool
    fingerprint: str
    #: A null envelope sender (`Return-Path: <>`, or `From: MAILER-DAEMON <>`): a bounce or
    #: other delivery report (RFC 5321 section 4.5.5), automatic mail with no customer.
    null_sender: bool = False

    @property
    def event_id(self) -> str:
        if self.message_id:
            return stable_id("email", self.message_id)
        return f"email:nomsgid:{self.fingerprint}"

    @property
    def thread_root(self) -> str:
        if self.references:
            return self.references[0]
        return self.in_reply_to or self.message_id or f"nomsgid:{self.fingerprint}"

    @property
    def parents(self) -> tuple[str, ...]:
        return (*self.references, *([self.in_reply_to] if self.in_reply_to else []))


def message_ids(value: str | None) -> list[str]:
    return _MESSAGE_ID.findall(value or "")


def read_headers(message: Message) -> EmailHeaders:
    """The threading and addressing headers of a parsed message (header values as text)."""

    def get(name: str) -> str:
        value = message.get(name)
        return str(value) if value is not None else ""

    own = message_ids(get("Message-ID"))
    parents = message_ids(get("In-Reply-To"))
    senders = [address for _, address in email.utils.getaddresses([get("From")]) if "@" in address]
    recipients = [
        address.lower() for _, address in email.utils.getaddresses([get("To"), get("Cc")]) if "@" in address
    ]
    null_sender = get("Return-Path").strip() == "<>" or "<>" in get("From").replace(" ", "")
    auto = get("Auto-Submitted").strip().lower()
    precedence = get("Precedence").strip().lower()
    fingerprint = hashlib.sha256(
        "\x1f".join(get(name) for name in ("Date", "From", "To", "Subject")).encode("utf-8", "replace")
    ).hexdigest()[:40]
    return EmailHeaders(
        message_id=own[0] if own else None,
        in_reply_to=parents[-1] if parents else None,
        references=tuple(message_ids(get("References"))),
        sender=senders[0].lower() if senders else None,
        recipients=tuple(recipients),
        date=_date(get("Date")),
        automatic=(bool(auto) and auto != "no") or precedence in AUTOMATIC_PRECEDENCE or null_sender,
        fingerprint=fingerprint,
        null_sender=null_sender,
    )


def _date(value: str) -> datetime | None:
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # "-0000" means "UTC, local zone unknown" (RFC 5322 3.3): the instant is still UTC.
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower().rstrip(".")


def is_brand(address: str, brand_domains: Iterable[str]) -> bool:
    domain = domain_of(address)
    return any(domain == brand or domain.endswith("." + brand) for brand in brand_domains)


def customer_id(address: str, context: MappingContext) -> str:
    address = address.lower()
    if not context.hash_email_addresses:
        return address
    return "email:" + hashlib.sha256(address.encode("utf-8", "replace")).hexdigest()[:40]


def email_fields(
    headers: EmailHeaders,
    context: MappingContext,
    *,
    platform: str,
    conversation_root: str | None = None,
    fallback_time: datetime | None = None,
) -> dict[str, Any] | str:
    """The touchpoint's canonical fields; a string says why the mail carries none.

    Raises ValueError for mail that cannot be mapped (no sender, no date).
    """
    if not context.brand_domains:
        raise ValueError("no brand domains configured (TOUCHSTREAM_EMAIL_BRAND_DOMAINS)")
    if headers.null_sender:
        return "a bounce or delivery report (null sender) is automatic mail without a customer"
    if headers.sender is None:
        raise ValueError("no sender address in From")
    occurred_at = headers.date or fallback_time
    if occurred_at is None:
        raise ValueError("no valid Date header")
    outbound = is_brand(headers.sender, context.brand_domains)
    if outbound:
        brand = context.brand_domains
        customers = [address for address in headers.recipients if not is_brand(address, brand)]
        if not customers:
            return "mail between brand addresses has no customer"
        customer = customers[0]
        actor = "system" if headers.automatic else "agent"
    else:
        customer = headers.sender
        actor = "system" if headers.automatic else "customer"
    return {
        "event_id": headers.event_id,
        "occurred_at": occurred_at,
        "customer_id": customer_id(customer, context),
        "channel": "email",
        "kind": "message",
        "direction": "outbound" if outbound else "inbound",
        "actor": actor,
        "conversation_id": stable_id("email-thread", conversation_root or headers.thread_root),
        "agent_id": headers.sender if actor == "agent" else None,
        "attributes": {"platform": platform},
    }
