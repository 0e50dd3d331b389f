"""Property-based fuzzing of every payload parser: each input is accepted or rejected with a reason.

No parser may raise anything but its documented errors (`PayloadError` for a payload
that cannot be read, `SignatureError` for an unproven one), whatever the bytes.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.webhooks import fixture, multipart
from touchstream.producers.email.files import parse_message
from touchstream.producers.mapping import MappingContext, PayloadError
from touchstream.producers.providers import PROVIDERS
from touchstream.producers.webhook import SignatureError, WebhookRequest

NOW = 1_780_000_000
CONTEXT = MappingContext(
    received_at=datetime.fromtimestamp(NOW, UTC), brand_domains=frozenset({"shop.example"})
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=25,
)
JSON_SAMPLES = {
    "chat/intercom": [
        fixture(name)
        for name in (
            "intercom-conversation.user.replied.json",
            "intercom-conversation.user.created.json",
            "intercom-conversation.admin.replied.json",
        )
    ],
    "chat/messenger": [fixture("messenger-messages.json")],
    "chat/generic": [
        {
            "messages": [
                {
                    "id": "m1",
                    "conversation_id": "c1",
                    "customer_id": "x",
                    "sender": "agent",
                    "agent_id": "a",
                    "sent_at": "2026-05-01T09:30:00Z",
                    "attributes": {"q": "b"},
                }
            ]
        }
    ],
    "survey/generic": [
        {
            "responses": [
                {
                    "id": "r",
                    "customer_id": "x",
                    "type": "nps",
                    "score": 7,
                    "channel": "web",
                    "answered_at": "2026-05-01T09:30:00Z",
                }
            ]
        }
    ],
    "helpdesk/generic": [
        {
            "events": [
                {
                    "id": "e",
                    "type": "agent_reply",
                    "ticket_id": "T",
                    "customer_id": "x",
                    "agent_id": "a",
                    "occurred_at": "2026-05-01T09:30:00Z",
                }
            ]
        }
    ],
}


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths(child, (*prefix, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths(child, (*prefix, index))
    return found


@st.composite
def mutated(draw: st.DrawFn, sample: Any) -> Any:
    """The sample with a few nested values replaced by arbitrary JSON (or removed)."""
    document = copy.deepcopy(sample)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(paths(document)))
        if not path:
            return draw(json_values)
        parent = document
        for step in path[:-1]:
            parent = parent[step]
        if isinstance(parent, dict) and draw(st.booleans()):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(json_values)
        document = document if isinstance(document, dict | list) else sample
    return document


def check_map(route: str, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
    hook = WebhookRequest(body=body, headers=headers or {}, content_type=content_type, now=NOW)
    try:
        mapped = PROVIDERS[route].map(hook, CONTEXT)
    except PayloadError as error:
        assert str(error) and error.label
        return
    assert all(error.reason for error in mapped.errors)
    assert all(event.received_at == CONTEXT.received_at for event in mapped.events)
    try:
        PROVIDERS[route].verify(hook, b"secret", 300)
    except (SignatureError, PayloadError) as error:
        assert str(error)


@FUZZ
@given(st.data(), st.sampled_from(sorted(JSON_SAMPLES)))
def test_json_providers_accept_or_reject_any_document(data: st.DataObject, route: str) -> None:
    sample = data.draw(st.sampled_from(JSON_SAMPLES[route]))
    document = data.draw(mutated(sample) | json_values)
    check_map(route, json.dumps(document).encode(), "application/json")


@FUZZ
@given(
    st.sampled_from(sorted(PROVIDERS)),
    st.binary(max_size=300),
    st.sampled_from(
        ["application/json", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain"]
    ),
)
def test_every_provider_survives_arbitrary_bytes(route: str, body: bytes, content_type: str) -> None:
    check_map(route, body, content_type, {"content-type": f"{content_type}; boundary=zz"})


header_names = st.sampled_from(
    ["Message-ID", "In-Reply-To", "References", "From", "To", "Cc", "Date", "Auto-Submitted", "Precedence"]
)
header_values = st.text(max_size=60) | st.sampled_from(
    [
        "<a@b>",
        "<root@shop.example> <x@y>",
        "Bob <bob@customer.example>",
        "support@shop.example",
        "Fri, 03 May 2013 19:26:27 +0100",
        "Mon, 99 Foo 2013 99:99:99",
        "auto-replied",
        "bulk",
        "<>",
        "@",
        "",
    ]
)
header_lists = st.lists(st.tuples(header_names | st.text(max_size=10), header_values), max_size=10)


@FUZZ
@given(header_lists, st.data())
def test_email_webhooks_accept_or_reject_any_headers(
    pairs: list[tuple[str, str]], data: st.DataObject
) -> None:
    sample = fixture("mailgun-parsed.json")
    fields = {**sample, "message-headers": json.dumps([list(pair) for pair in pairs])}
    fields = data.draw(mutated(fields)) if data.draw(st.booleans()) else fields
    if isinstance(fields, dict):
        from urllib.parse import urlencode

        form = {str(key): str(value) for key, value in fields.items()}
        check_map("email/mailgun", urlencode(form).encode(), "application/x-www-form-urlencoded")
    header_text = "".join(f"{name}: {value}\r\n" for name, value in pairs)
    body, content_type = multipart({"headers": header_text, "envelope": data.draw(st.text(max_size=40))})
    check_map("email/sendgrid", body, "multipart/form-data", {"content-type": content_type})


@FUZZ
@given(
    st.binary(max_size=400)
    | header_lists.map(lambda pairs: "".join(f"{n}: {v}\n" for n, v in pairs).encode())
)
def test_email_files_accept_or_reject_any_bytes(raw: bytes) -> None:
    try:
        parsed = parse_message(raw, CONTEXT, platform="file")
    except ValueError as error:
        assert str(error)
    else:
        assert isinstance(parsed, str | dict)
