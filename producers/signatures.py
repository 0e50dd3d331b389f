"""HMAC signature schemes of the webhook providers, compared in constant time.

Each platform signs differently; the schemes here follow their documentation:

- Touchstream (generic formats): `Touchstream-Signature: t=<unix seconds>,v1=<hex>`, where
  hex = HMAC-SHA256(secret, "<t>." + body). Several `v1=` values may be sent (secret
  rotation). The timestamp must be within the tolerance of the collector's clock.
- Intercom: `X-Hub-Signature: sha1=<hex>`, HMAC-SHA1(client secret, body).
- Messenger (Meta): `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256(app secret, body).
- Mailgun: form fields `timestamp`, `token`, `signature` = HMAC-SHA256(signing key,
  timestamp + token) in hex; the timestamp must be within the tolerance.
- SendGrid Inbound Parse does not sign: the Parse URL carries HTTP basic credentials
  (`https://touchstream:<secret>@host/...`), checked here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from touchstream.producers.webhook import SignatureError, Verify, WebhookRequest

SIGNATURE_HEADER = "Touchstream-Signature"


def digest(secret: bytes, message: bytes, algorithm: str = "sha256") -> str:
    return hmac.new(secret, message, getattr(hashlib, algorithm)).hexdigest()


def matches(expected: str, offered: str) -> bool:
    return hmac.compare_digest(expected.encode(), offered.strip().lower().encode("utf-8", "replace"))


def check_timestamp(timestamp: str, now: float, tolerance: float) -> None:
    try:
        sent = int(timestamp)
    except ValueError:
        raise SignatureError(
            f"signature timestamp must be unix seconds, got {timestamp[:40]!r}", label="bad_signature"
        ) from None
    if abs(now - sent) > tolerance:
        raise SignatureError(
            f"signature timestamp is {abs(now - sent):.0f}s away from the collector's clock "
            f"(tolerance {tolerance:.0f}s): stale or replayed request",
            label="stale_timestamp",
        )


def verify_touchstream(request: WebhookRequest, secret: bytes, tolerance: float) -> None:
    header = request.header(SIGNATURE_HEADER)
    if not header:
        raise SignatureError(
            f"missing {SIGNATURE_HEADER} header (t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'>)",
            label="missing_signature",
        )
    pairs = [part.strip().partition("=") for part in header.split(",")]
    timestamps = [value for key, _, value in pairs if key == "t"]
    offered = [value for key, _, value in pairs if key == "v1"]
    if len(timestamps) != 1 or not offered:
        raise SignatureError(f"{SIGNATURE_HEADER} must be t=<unix seconds>,v1=<hex>", label="bad_signature")
    check_timestamp(timestamps[0], request.now, tolerance)
    expected = digest(secret, timestamps[0].encode() + b"." + request.body)
    if not any([matches(expected, value) for value in offered]):
        raise SignatureError("signature does not match the body and secret", label="bad_signature")


def verify_hub(header: str, algorithm: str) -> Verify:
    """The `X-Hub-Signature[-256]: <algorithm>=<hex>` scheme (Intercom, Meta)."""

    def verify(request: WebhookRequest, secret: bytes, tolerance: float) -> None:
        offered = request.header(header)
        if not offered:
            raise SignatureError(f"missing {header} header", label="missing_signature")
        scheme, _, value = offered.partition("=")
        if scheme.strip().lower() != algorithm:
            raise SignatureError(f"{header} must be {algorithm}=<hex>", label="bad_signature")
        if not matches(digest(secret, request.body, algorithm), value):
            raise SignatureError("signature does not match the body and secret", label="bad_signature")

    return verify


def verify_mailgun(request: WebhookRequest, secret: bytes, tolerance: float) -> None:
    fields = request.form()
    timestamp, token, signature = (fields.get(name, "") for name in ("timestamp", "token", "signature"))
    if not (timestamp and token and signature):
        raise SignatureError("missing timestamp, token or signature field", label="missing_signature")
    check_timestamp(timestamp, request.now, tolerance)
    if not matches(digest(secret, (timestamp + token).encode()), signature):
        raise SignatureError("signature does not match timestamp, token and secret", label="bad_signature")


def verify_basic_auth(request: WebhookRequest, secret: bytes, tolerance: float) -> None:
    header = request.header("authorization") or ""
    if not header.lower().startswith("basic "):
        raise SignatureError(
            "missing HTTP basic credentials: put them in the webhook URL "
            "(https://touchstream:<secret>@host/...)",
            label="missing_signature",
        )
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureError("malformed basic credentials", label="bad_signature") from None
    _user, _, password = decoded.partition(b":")
    if not hmac.compare_digest(password, secret):
        raise SignatureError("basic credentials do not match the secret", label="bad_signature")
