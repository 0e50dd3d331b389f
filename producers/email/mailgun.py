"""Mailgun inbound routes: `forward("https://host/v1/webhooks/email/mailgun")`.

Source: Mailgun docs, "Receiving Messages via HTTP through a forward() action"
(documentation.mailgun.com/docs/mailgun/user-manual/receive-forward-store/receive-http).
Both formats are read: fully parsed (`message-headers`, a JSON list of [name, value]
pairs) and raw MIME (`body-mime`, only its headers are parsed). The `recipient` field
(SMTP RCPT TO) is a brand address. Signed with `timestamp` + `token` + `signature`
(HMAC-SHA256 with the webhook signing key); the timestamp must be fresh.
Bodies (`body-plain`, `stripped-text`, attachments) are never read.
"""

from __future__ import annotations

import json

from touchstream.producers.email.inbound import headers_of, map_message
from touchstream.producers.mapping import Mapped, MappingContext, PayloadError
from touchstream.producers.signatures import verify_mailgun
from touchstream.producers.webhook import Provider, WebhookRequest


def header_block(fields: dict[str, str]) -> str:
    if "body-mime" in fields:
        return fields["body-mime"]
    raw = fields.get("message-headers")
    if raw is None:
        raise PayloadError("neither message-headers nor body-mime in the form")
    try:
        pairs = json.loads(raw)
    except ValueError:
        raise PayloadError("message-headers is not JSON") from None
    if not isinstance(pairs, list) or not all(
        isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)
        for pair in pairs
    ):
        raise PayloadError("message-headers must be a JSON list of [name, value] pairs")
    lines = []
    for name, value in pairs:
        if name and ":" not in name and "\n" not in name:
            folded = " ".join(value.splitlines())
            lines.append(f"{name}: {folded}")
    return "\r\n".join(lines) + "\r\n\r\n"


def map_request(request: WebhookRequest, context: MappingContext) -> Mapped:
    fields = request.form()
    return map_message(
        headers_of(header_block(fields)),
        context,
        platform="mailgun",
        receiving=[fields.get("recipient", "")],
    )


PROVIDER = Provider(
    kind="email",
    name="mailgun",
    verify=verify_mailgun,
    map=map_request,
    source="documentation.mailgun.com/docs/mailgun/user-manual/receive-forward-store/receive-http",
    media_types=("multipart/form-data", "application/x-www-form-urlencoded"),
    body_schema={
        "type": "object",
        "required": ["timestamp", "token", "signature"],
        "properties": {name: {"type": "string"} for name in ("timestamp", "token", "signature")},
    },
)
