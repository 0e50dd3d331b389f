"""Building signed webhook requests the way each platform sends them (tests and bench)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"


def fixture(name: str) -> Any:
    path = FIXTURES / name
    return json.loads(path.read_text()) if path.suffix == ".json" else path.read_text()


def touchstream_signature(secret: str, body: bytes, timestamp: int) -> dict[str, str]:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"Touchstream-Signature": f"t={timestamp},v1={mac}"}


def hub_signature(secret: str, body: bytes, header: str, algorithm: str) -> dict[str, str]:
    mac = hmac.new(secret.encode(), body, getattr(hashlib, algorithm)).hexdigest()
    return {header: f"{algorithm}={mac}"}


def zendesk_signature(secret: str, body: bytes, now: int) -> dict[str, str]:
    """Zendesk's: base64(HMAC-SHA256(secret, timestamp + body)), the timestamp in ISO 8601."""
    stamp = datetime.fromtimestamp(now, UTC).isoformat().replace("+00:00", "Z")
    mac = hmac.new(secret.encode(), stamp.encode() + body, hashlib.sha256).digest()
    return {"X-Zendesk-Webhook-Signature": base64.b64encode(mac).decode(),
            "X-Zendesk-Webhook-Signature-Timestamp": stamp}  # fmt: skip


def signed_json(route: str, payload: Any, secret: str, now: int) -> tuple[bytes, dict[str, str]]:
    """Body and headers for a JSON webhook provider."""
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if route == "chat/intercom":
        headers |= hub_signature(secret, body, "X-Hub-Signature", "sha1")
    elif route == "chat/messenger":
        headers |= hub_signature(secret, body, "X-Hub-Signature-256", "sha256")
    elif route == "helpdesk/zendesk":
        headers |= zendesk_signature(secret, body, now)
    else:
        headers |= touchstream_signature(secret, body, now)
    return body, headers


def mailgun_form(fields: dict[str, str], secret: str, now: int) -> tuple[bytes, dict[str, str]]:
    token = fields.get("token") or uuid.uuid4().hex
    signature = hmac.new(secret.encode(), f"{now}{token}".encode(), hashlib.sha256).hexdigest()
    signed = {**fields, "timestamp": str(now), "token": token, "signature": signature}
    return urlencode(signed).encode(), {"Content-Type": "application/x-www-form-urlencoded"}


def multipart(fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "xYzZY" + uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="attachment1"; filename="a.pdf"\r\n'
        f"Content-Type: application/pdf\r\n\r\n%PDF-1.4 not read\r\n"
    )
    body = ("".join(parts) + f"--{boundary}--\r\n").encode()
    return body, f"multipart/form-data; boundary={boundary}"


def sendgrid_form(headers_text: str, secret: str, receiving: str) -> tuple[bytes, dict[str, str]]:
    body, content_type = multipart(
        {
            "headers": headers_text,
            "envelope": json.dumps({"to": [receiving], "from": "bounce@customer.example"}),
            "from": "Example User <test@customer.example>",
            "to": receiving,
            "text": "a body that must never reach Kafka",
            "charsets": json.dumps({"to": "UTF-8", "subject": "UTF-8", "from": "UTF-8", "text": "UTF-8"}),
        }
    )
    credentials = base64.b64encode(f"touchstream:{secret}".encode()).decode()
    return body, {"Content-Type": content_type, "Authorization": f"Basic {credentials}"}
