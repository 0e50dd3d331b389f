"""Webhook requests and providers: the HTTP-free half of `/v1/webhooks/<kind>/<provider>`.

A `Provider` is a name, a signature check and a mapping. The collector finds the
provider, checks the signature with the provider's secret, and maps the request; both
steps are pure functions of a `WebhookRequest`, so they are tested and fuzzed without
a server.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qsl

from touchstream.producers.mapping import Mapped, MappingContext, PayloadError

Kind = Literal["chat", "email", "survey", "helpdesk"]


@dataclass(frozen=True)
class WebhookRequest:
    body: bytes
    #: Header names in lower case.
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    #: The full URL the platform called (some platforms sign it).
    url: str = ""
    #: Unix time when the request arrived: signature timestamps are checked against it.
    now: float = 0.0

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        if self.content_type != "application/json":
            raise PayloadError(
                f"Content-Type must be application/json, not {self.content_type or 'none'}",
                label="content_type",
            )
        try:
            return json.loads(self.body)
        except RecursionError:
            raise PayloadError("body is not valid JSON: nested too deeply", label="invalid_json") from None
        except (ValueError, UnicodeDecodeError) as error:
            raise PayloadError(f"body is not valid JSON: {error}", label="invalid_json") from None

    def form(self) -> dict[str, str]:
        """Fields of an `application/x-www-form-urlencoded` or `multipart/form-data` body.

        File parts (attachments) are skipped: Touchstream keeps metadata only. A field
        sent twice keeps its first value.
        """
        if self.content_type == "application/x-www-form-urlencoded":
            try:
                pairs = parse_qsl(self.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
            except UnicodeDecodeError:
                raise PayloadError("form body is not UTF-8", label="invalid_form") from None
            fields: dict[str, str] = {}
            for name, value in pairs:
                fields.setdefault(name, value)
            return fields
        if self.content_type == "multipart/form-data":
            return _multipart_fields(self.body, self.header("content-type") or "")
        raise PayloadError(
            "Content-Type must be multipart/form-data or application/x-www-form-urlencoded, "
            f"not {self.content_type or 'none'}",
            label="content_type",
        )


def _multipart_fields(body: bytes, content_type: str) -> dict[str, str]:
    if "boundary=" not in content_type:
        raise PayloadError("multipart body without a boundary in Content-Type", label="invalid_form")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("utf-8", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart() or message.defects:
        raise PayloadError("multipart body cannot be parsed", label="invalid_form")
    fields: dict[str, str] = {}
    for part in message.iter_parts():
        disposition = part.get("content-disposition", "")
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str) or "filename=" in disposition:
            continue
        payload = part.get_payload(decode=True)
        if not isinstance(payload, bytes):
            continue
        charset = part.get_content_charset() or "utf-8"
        try:
            value = payload.decode(charset, "replace")
        except LookupError:
            value = payload.decode("utf-8", "replace")
        fields.setdefault(name, value)
    return fields


class SignatureError(Exception):
    """The request is not proven to come from the platform; `label` is a short word for metrics."""

    def __init__(self, message: str, *, label: str = "bad_signature") -> None:
        super().__init__(message)
        self.label = label


Verify = Callable[[WebhookRequest, bytes, float], None]
Map = Callable[[WebhookRequest, MappingContext], Mapped]


@dataclass(frozen=True)
class Provider:
    kind: Kind
    name: str
    #: Raises SignatureError; arguments: request, secret, timestamp tolerance in seconds.
    verify: Verify
    #: Raises PayloadError for a payload that cannot be read at all.
    map: Map
    #: Which documentation the mapping follows.
    source: str
    #: The body types the platform posts, and what the body must hold for the signature to
    #: be checked at all (the collector's OpenAPI document lists them).
    media_types: tuple[str, ...] = ("application/json",)
    body_schema: Mapping[str, Any] = field(default_factory=dict)

    @property
    def route(self) -> str:
        return f"{self.kind}/{self.name}"
