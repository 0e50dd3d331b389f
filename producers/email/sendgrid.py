"""SendGrid (Twilio) Inbound Parse webhook.

Source: Twilio SendGrid docs, "Inbound Email Parse Webhook"
(twilio.com/docs/sendgrid/for-developers/parsing-email/inbound-email). Both settings
are read: default (the `headers` field holds the raw header block) and "POST the raw,
full MIME message" (`email`, only its headers are parsed). `envelope` (JSON, `to`
is the receiving address) names a brand address.

SendGrid does not sign Inbound Parse posts. Put basic credentials in the Parse URL
(`https://touchstream:<secret>@host/v1/webhooks/email/sendgrid`); the password must
equal the provider's secret. There is no timestamp to check: a replayed post has the
same Message-ID, so the same event_id, and is deduplicated downstream.
Bodies (`text`, `html`, attachments) are never read.
"""

from __future__ import annotations

import json

from touchstream.producers.email.inbound import headers_of, map_message
from touchstream.producers.mapping import Mapped, MappingContext, PayloadError
from touchstream.producers.signatures import verify_basic_auth
from touchstream.producers.webhook import Provider, WebhookRequest


def receiving_addresses(fields: dict[str, str]) -> list[str]:
    try:
        envelope = json.loads(fields.get("envelope") or "{}")
    except ValueError:
        raise PayloadError("envelope is not JSON") from None
    to = envelope.get("to") if isinstance(envelope, dict) else None
    return [address for address in to if isinstance(address, str)] if isinstance(to, list) else []


def map_request(request: WebhookRequest, context: MappingContext) -> Mapped:
    fields = request.form()
    raw = fields.get("email") or fields.get("headers")
    if raw is None:
        raise PayloadError("neither headers nor email in the form")
    return map_message(headers_of(raw), context, platform="sendgrid", receiving=receiving_addresses(fields))


PROVIDER = Provider(
    kind="email",
    name="sendgrid",
    verify=verify_basic_auth,
    map=map_request,
    source="twilio.com/docs/sendgrid/for-developers/parsing-email/inbound-email",
    media_types=("multipart/form-data", "application/x-www-form-urlencoded"),
)
