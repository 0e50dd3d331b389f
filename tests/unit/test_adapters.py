"""Channel adapters, without a server: documented payloads in, exactly the expected events out."""

from __future__ import annotations

import email
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.webhooks import fixture, mailgun_form, sendgrid_form, signed_json
from touchstream.producers.email.headers import email_fields, read_headers
from touchstream.producers.mapping import Mapped, MappingContext, PayloadError, stable_id
from touchstream.producers.providers import PROVIDERS
from touchstream.producers.webhook import SignatureError, WebhookRequest

NOW = 1_780_000_000
RECEIVED = datetime.fromtimestamp(NOW, UTC)
SECRET = "s3cret-for-tests"
CONTEXT = MappingContext(received_at=RECEIVED, brand_domains=frozenset({"shop.example"}))


def request(body: bytes, headers: dict[str, str], *, now: float = NOW) -> WebhookRequest:
    lowered = {name.lower(): value for name, value in headers.items()}
    content_type = lowered.get("content-type", "").split(";")[0].strip()
    return WebhookRequest(body=body, headers=lowered, content_type=content_type, now=now)


def deliver(route: str, body: bytes, headers: dict[str, str], context: MappingContext = CONTEXT) -> Mapped:
    provider = PROVIDERS[route]
    hook = request(body, headers)
    provider.verify(hook, SECRET.encode(), 300)
    return provider.map(hook, context)


def rows(mapped: Mapped) -> list[tuple[Any, ...]]:
    return [
        (
            e.event_id,
            e.kind.value,
            e.direction.value,
            e.actor.value,
            e.customer_id,
            e.conversation_id,
            e.agent_id,
            e.occurred_at.isoformat(),
        )
        for e in mapped.events
    ]


def test_intercom_customer_reply() -> None:
    body, headers = signed_json(
        "chat/intercom", fixture("intercom-conversation.user.replied.json"), SECRET, NOW
    )
    mapped = deliver("chat/intercom", body, headers)
    assert rows(mapped) == [
        (
            "intercom:6073788584",
            "message",
            "inbound",
            "customer",
            "234523452345345",
            "intercom:137324500000000",
            None,
            "2020-08-05T13:44:54+00:00",
        ),
    ]
    assert mapped.errors == [] and mapped.events[0].channel.value == "chat"
    assert mapped.events[0].received_at == RECEIVED


def test_intercom_opening_message_and_admin_reply_skip_notes() -> None:
    body, headers = signed_json(
        "chat/intercom", fixture("intercom-conversation.user.created.json"), SECRET, NOW
    )
    opening = deliver("chat/intercom", body, headers)
    assert [row[:4] for row in rows(opening)] == [("intercom:608953158", "message", "inbound", "customer")]
    assert opening.events[0].occurred_at == datetime.fromtimestamp(1596634805, UTC)

    body, headers = signed_json(
        "chat/intercom", fixture("intercom-conversation.admin.replied.json"), SECRET, NOW
    )
    reply = deliver("chat/intercom", body, headers)
    assert rows(reply) == [
        (
            "intercom:6073800002",
            "message",
            "outbound",
            "agent",
            "234523452345345",
            "intercom:137324500000000",
            "3330619",
            "2020-08-05T13:50:00+00:00",
        ),
    ]
    assert len(reply.ignored) == 1 and "note" in reply.ignored[0]


def test_intercom_close_snooze_and_open_are_status_events_of_the_team() -> None:
    """A close part with a reply body is the reply and the close; a snooze carries the
    conversation's `snoozed_until`; every event carries the team assignee."""
    delivered = {}
    for topic in ("closed", "snoozed", "opened"):
        body, headers = signed_json(
            "chat/intercom", fixture(f"intercom-conversation.admin.{topic}.json"), SECRET, NOW
        )
        delivered[topic] = deliver("chat/intercom", body, headers)
    closed = delivered["closed"]
    assert [row[:4] for row in rows(closed)] == [
        ("intercom:6073800010", "message", "outbound", "agent"),
        ("intercom:6073800010:conversation_closed", "conversation_closed", "none", "agent"),
    ]
    assert {event.team_id for event in closed.events} == {"4567"}
    assert {event.attributes["priority"] for event in closed.events} == {"high"}, "Intercom's priority flag"
    (snoozed,) = delivered["snoozed"].events
    assert (snoozed.kind.value, snoozed.attributes["until"]) == (
        "conversation_snoozed", datetime.fromtimestamp(1596722400, UTC).isoformat())  # fmt: skip
    (opened,) = delivered["opened"].events
    assert (opened.kind.value, opened.agent_id, opened.conversation_id) == (
        "conversation_opened", "3330619", "intercom:137324500000000")  # fmt: skip


def test_intercom_ping_and_contact_topics_are_ignored_not_rejected() -> None:
    body, headers = signed_json(
        "chat/intercom", {"type": "notification_event", "topic": "ping", "data": {"item": {}}}, SECRET, NOW
    )
    mapped = deliver("chat/intercom", body, headers)
    assert (mapped.events, mapped.errors, len(mapped.ignored)) == ([], [], 1)


def test_messenger_customer_echo_postback_and_receipts() -> None:
    body, headers = signed_json("chat/messenger", fixture("messenger-messages.json"), SECRET, NOW)
    page, psid = "682498302938465", "1254459154682919"
    conversation = f"messenger:{page}:{psid}"
    mapped = deliver("chat/messenger", body, headers)
    assert [row[:6] for row in rows(mapped)] == [
        (
            "messenger:mid.1457764197618:41d102a3e1ae206a38",
            "message",
            "inbound",
            "customer",
            f"messenger:{psid}",
            conversation,
        ),
        (
            "messenger:mid.1457764197618:41d102a3e1ae206a39",
            "message",
            "outbound",
            "agent",
            f"messenger:{psid}",
            conversation,
        ),
        (
            stable_id(
                "messenger",
                "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P",
            ),
            "click",
            "inbound",
            "customer",
            f"messenger:{psid}",
            conversation,
        ),
    ]
    assert all(event.channel.value == "messaging" for event in mapped.events)
    assert mapped.events[0].occurred_at == datetime(2016, 3, 23, 0, 25, 52, 478000, tzinfo=UTC)
    assert len(mapped.ignored) == 1 and "delivery" in mapped.ignored[0]

    as_bot = deliver(
        "chat/messenger", body, headers, replace(CONTEXT, bot_ids=frozenset({"1517776481860111"}))
    )
    assert as_bot.events[1].actor.value == "bot"


def test_mailgun_parsed_reply_joins_the_thread_of_its_root() -> None:
    fields = fixture("mailgun-parsed.json")
    body, headers = mailgun_form(fields, SECRET, NOW)
    mapped = deliver("email/mailgun", body, headers, replace(CONTEXT, brand_domains=frozenset()))
    (event,) = mapped.events
    assert event.event_id == "email:CAJ5ia2DsHgVzD@mail.customer.example"
    assert event.conversation_id == "email-thread:20130503182626.18666.16540@shop.example"
    assert (event.direction.value, event.actor.value, event.channel.value) == ("inbound", "customer", "email")
    assert event.customer_id.startswith("email:") and "bob" not in event.customer_id
    assert event.occurred_at == datetime(2013, 5, 3, 18, 26, 27, tzinfo=UTC)
    assert "nothing arrived" not in event.model_dump_json(), "bodies never reach the event"


def test_sendgrid_parse_reads_headers_and_ignores_bodies_and_attachments() -> None:
    body, headers = sendgrid_form(fixture("sendgrid-headers.txt"), SECRET, "support@parse.shop.example")
    mapped = deliver("email/sendgrid", body, headers, replace(CONTEXT, hash_email_addresses=False))
    (event,) = mapped.events
    assert event.event_id == stable_id(
        "email", "CAN_P_JMvV7ZpAQhOnDienypLrJmuhN=LQWweu4yScw4jQyXY2w@mail.customer.example"
    )
    assert (event.customer_id, event.direction.value) == ("test@customer.example", "inbound")
    assert event.occurred_at == datetime(2016, 7, 27, 20, 53, 5, tzinfo=UTC)
    assert "never reach" not in event.model_dump_json()


def generic(route: str, payload: Any) -> Mapped:
    body, headers = signed_json(route, payload, SECRET, NOW)
    return deliver(route, body, headers)


def test_generic_chat_status_items_and_team() -> None:
    base = {"platform": "livechat", "conversation_id": "c1", "customer_id": "cust-1", "team_id": "billing"}
    chat = generic(
        "chat/generic",
        [
            {**base, "id": "s1", "type": "snoozed", "sender": "agent", "agent_id": "a7",
             "sent_at": "2026-05-01T09:30:00Z", "snoozed_until": "2026-05-02T09:00:00Z"},
            {**base, "id": "s2", "type": "opened", "sender": "system", "sent_at": "2026-05-02T09:00:00Z"},
            {**base, "id": "s3", "type": "closed", "sender": "agent", "sent_at": "2026-05-02T10:00:00Z"},
            {**base, "id": "s4", "type": "snoozed", "sender": "agent", "sent_at": "2026-05-02T10:00:00Z"},
            {**base, "id": "s5", "type": "archived", "sender": "agent", "sent_at": "2026-05-02T10:00:00Z"},
        ],
    )  # fmt: skip
    assert [row[:4] for row in rows(chat)] == [
        ("livechat:s1", "conversation_snoozed", "none", "agent"),
        ("livechat:s2", "conversation_opened", "none", "system"),
        ("livechat:s3", "conversation_closed", "none", "agent"),
    ]
    assert chat.events[0].attributes["until"] == "2026-05-02T09:00:00Z"
    assert {event.team_id for event in chat.events} == {"billing"}
    reasons = {error.index: error.reason for error in chat.errors}
    assert "snoozed_until" in reasons[3] and "type must be one of" in reasons[4]


def test_generic_chat_survey_and_helpdesk_formats() -> None:
    chat = generic(
        "chat/generic",
        {
            "messages": [
                {
                    "id": "m1",
                    "platform": "livechat",
                    "conversation_id": "c1",
                    "customer_id": "cust-1",
                    "sender": "customer",
                    "sent_at": "2026-05-01T09:30:00+02:00",
                },
                {
                    "id": "m2",
                    "platform": "livechat",
                    "conversation_id": "c1",
                    "customer_id": "cust-1",
                    "sender": "agent",
                    "agent_id": "a7",
                    "sent_at": "2026-05-01T09:31:10+02:00",
                },
                {
                    "id": "m3",
                    "conversation_id": "c1",
                    "customer_id": "cust-1",
                    "sender": "wizard",
                    "sent_at": "2026-05-01T09:32:00Z",
                },
                {
                    "id": "m4",
                    "conversation_id": "c1",
                    "customer_id": "cust-1",
                    "sender": "bot",
                    "sent_at": "2026-05-01T09:32:00",
                },
            ]
        },
    )
    assert [row[:4] for row in rows(chat)] == [
        ("livechat:m1", "message", "inbound", "customer"),
        ("livechat:m2", "message", "outbound", "agent"),
    ]
    reasons = {error.index: error.reason for error in chat.errors}
    assert "sender must be one of" in reasons[2] and "timezone" in reasons[3]

    survey = generic(
        "survey/generic",
        [
            {
                "id": "r1",
                "customer_id": "cust-1",
                "type": "nps",
                "score": 9,
                "answered_at": "2026-05-01T10:00:00Z",
                "channel": "chat",
                "conversation_id": "c1",
            },
            {
                "id": "r2",
                "customer_id": "cust-1",
                "type": "csat",
                "score": 9,
                "answered_at": "2026-05-01T10:00:00Z",
                "channel": "chat",
            },
            {
                "id": "r3",
                "customer_id": "cust-1",
                "type": "nps",
                "score": 3,
                "answered_at": "2026-05-01T10:00:00Z",
            },
        ],
    )
    assert [(e.event_id, e.kind.value, e.survey and e.survey.score) for e in survey.events] == [
        ("survey:r1", "survey_response", 9)
    ]
    assert "csat score must be between 1 and 5" in survey.errors[0].reason
    assert "channel is required" in survey.errors[1].reason

    desk = generic(
        "helpdesk/generic",
        {
            "events": [
                {
                    "id": "e1",
                    "type": "ticket_opened",
                    "ticket_id": "T-1",
                    "customer_id": "cust-1",
                    "occurred_at": "2026-05-01T11:00:00Z",
                    "category": "billing",
                    "priority": "High",
                    "attributes": {"plan": "pro"},
                },
                {
                    "id": "e2",
                    "type": "agent_reply",
                    "ticket_id": "T-1",
                    "customer_id": "cust-1",
                    "agent_id": "a7",
                    "occurred_at": "2026-05-01T11:20:00Z",
                },
                {
                    "id": "e3",
                    "type": "ticket_resolved",
                    "ticket_id": "T-1",
                    "customer_id": "cust-1",
                    "occurred_at": "2026-05-01T12:00:00Z",
                },
            ]
        },
    )
    assert [row[:6] for row in rows(desk)] == [
        ("helpdesk:e1", "ticket_opened", "inbound", "customer", "cust-1", "helpdesk:ticket:T-1"),
        ("helpdesk:e2", "message", "outbound", "agent", "cust-1", "helpdesk:ticket:T-1"),
        ("helpdesk:e3", "ticket_resolved", "none", "system", "cust-1", "helpdesk:ticket:T-1"),
    ]
    assert all(event.channel.value == "helpdesk" for event in desk.events)
    assert desk.events[0].attributes == {"plan": "pro", "category": "billing", "priority": "high"}


@pytest.mark.parametrize("route", sorted(PROVIDERS))
def test_redelivery_maps_to_the_same_event_ids(route: str) -> None:
    body, headers = sample(route)
    first = deliver(route, body, headers)
    again = deliver(route, body, headers, replace(CONTEXT, received_at=datetime(2031, 1, 1, tzinfo=UTC)))
    assert first.events and [e.event_id for e in first.events] == [e.event_id for e in again.events]


def sample(route: str) -> tuple[bytes, dict[str, str]]:
    if route == "email/mailgun":
        return mailgun_form({**fixture("mailgun-parsed.json"), "token": "fixed-token"}, SECRET, NOW)
    if route == "email/sendgrid":
        return sendgrid_form(fixture("sendgrid-headers.txt"), SECRET, "support@parse.shop.example")
    payloads = {
        "chat/intercom": fixture("intercom-conversation.user.replied.json"),
        "chat/messenger": fixture("messenger-messages.json"),
        "chat/generic": {
            "id": "m1",
            "conversation_id": "c1",
            "customer_id": "x",
            "sender": "customer",
            "sent_at": "2026-05-01T09:30:00Z",
        },
        "survey/generic": {
            "id": "r1",
            "customer_id": "x",
            "type": "csat",
            "score": 5,
            "channel": "email",
            "answered_at": "2026-05-01T09:30:00Z",
        },
        "helpdesk/zendesk": fixture("zendesk-ticket.created.json"),
        "helpdesk/generic": {
            "id": "e1",
            "type": "customer_reply",
            "ticket_id": "T",
            "customer_id": "x",
            "occurred_at": "2026-05-01T09:30:00Z",
        },
    }
    return signed_json(route, payloads[route], SECRET, NOW)


@pytest.mark.parametrize("route", sorted(PROVIDERS))
def test_missing_and_forged_signatures_are_refused(route: str) -> None:
    body, headers = sample(route)
    provider = PROVIDERS[route]
    provider.verify(request(body, headers), SECRET.encode(), 300)
    with pytest.raises(SignatureError):
        provider.verify(request(body, headers), b"another secret", 300)
    if route != "email/mailgun":  # Mailgun's signature travels in the form, with the body
        unsigned = {name: value for name, value in headers.items() if name == "Content-Type"}
        with pytest.raises(SignatureError) as missing:
            provider.verify(request(body, unsigned), SECRET.encode(), 300)
        assert missing.value.label == "missing_signature"
    tampered = body.replace(b"customer", b"cust0mer", 1) if b"customer" in body else body + b" "
    if route not in {"email/mailgun", "email/sendgrid"}:  # these two do not sign the body
        with pytest.raises(SignatureError):
            provider.verify(request(tampered, headers), SECRET.encode(), 300)


@pytest.mark.parametrize("route", ["chat/generic", "email/mailgun", "survey/generic", "helpdesk/generic"])
def test_stale_timestamps_are_refused(route: str) -> None:
    body, headers = sample(route)
    provider = PROVIDERS[route]
    for skew in (-301, 301):
        with pytest.raises(SignatureError) as stale:
            provider.verify(request(body, headers, now=NOW + skew), SECRET.encode(), 300)
        assert stale.value.label == "stale_timestamp"
    provider.verify(request(body, headers, now=NOW + 299), SECRET.encode(), 300)


def test_whole_payload_problems_are_payload_errors() -> None:
    for route, body, content_type in [
        ("chat/intercom", b"{not json", "application/json"),
        ("chat/intercom", b'{"type": "something_else"}', "application/json"),
        ("chat/messenger", b'{"object": "instagram", "entry": []}', "application/json"),
        ("chat/generic", b"[]", "application/json"),
        ("chat/generic", b"{}", "text/plain"),
        ("email/mailgun", b"recipient=a%40b.c", "application/x-www-form-urlencoded"),
        ("email/sendgrid", b"--x--", "multipart/form-data"),
    ]:
        with pytest.raises(PayloadError):
            PROVIDERS[route].map(WebhookRequest(body=body, content_type=content_type, now=NOW), CONTEXT)


def test_long_source_ids_are_hashed_deterministically() -> None:
    long_id = "x" * 300
    assert stable_id("chat", long_id) == stable_id("chat", long_id)
    assert len(stable_id("chat", long_id)) <= 128 and stable_id("chat", long_id) != stable_id(
        "chat", "y" * 300
    )
    assert json.dumps(stable_id("chat", "m1")) == '"chat:m1"'


EMAIL_FILES = Path(__file__).parents[1] / "fixtures" / "email"


def email_outcome(name: str) -> dict[str, Any] | str:
    message = email.message_from_bytes((EMAIL_FILES / name).read_bytes())
    context = replace(CONTEXT, brand_domains=frozenset({"brand.example"}))
    return email_fields(read_headers(message), context, platform="file")


def test_a_mailing_list_post_is_a_person_not_automatic_mail() -> None:
    fields = email_outcome("mailing-list-post.eml")
    assert isinstance(fields, dict)
    assert (fields["actor"], fields["direction"]) == ("customer", "inbound"), (
        "Precedence: list is a person's post"
    )


@pytest.mark.parametrize("name", ["exim-bounce.eml", "null-from-bounce.eml"])
def test_a_null_sender_bounce_is_ignored_not_a_dead_letter(name: str) -> None:
    outcome = email_outcome(name)
    assert isinstance(outcome, str) and "null sender" in outcome


def test_messenger_user_ref_senders_and_timestamps_in_seconds_or_strings() -> None:
    body, headers = signed_json("chat/messenger", fixture("messenger-user-ref.json"), SECRET, NOW)
    mapped = deliver("chat/messenger", body, headers)
    assert mapped.errors == []
    postback, message = mapped.events
    assert postback.customer_id == "messenger:user_ref:ref-9f2c41b0" and postback.kind.value == "click"
    assert postback.occurred_at == datetime(2016, 3, 23, 0, 25, 52, 478000, tzinfo=UTC), "milliseconds"
    assert message.occurred_at == datetime(2016, 3, 23, 0, 26, tzinfo=UTC), "a string of seconds"


def test_an_intercom_lead_is_known_by_its_contact_id_not_a_generated_user_id() -> None:
    payload = fixture("intercom-conversation.user.replied.json")
    lead = {
        "type": "lead",
        "id": "5d8f2a1b9c3e4f0012ab34cd",
        "user_id": "7a9c1e5e-0b8e-4a53-9d1f-2f6b0c8a1e11",
    }
    payload["data"]["item"].pop("contacts", None)
    payload["data"]["item"]["user"] = lead  # the API 1.x shape names the contact `user`
    body, headers = signed_json("chat/intercom", payload, SECRET, NOW)
    mapped = deliver("chat/intercom", body, headers)
    assert {event.customer_id for event in mapped.events} == {"intercom:5d8f2a1b9c3e4f0012ab34cd"}


def test_intercom_bot_parts_read_receipts_and_ticket_replies() -> None:
    payload = fixture("intercom-conversation.admin.replied.json")
    bot_part = {**payload["data"]["item"]["conversation_parts"]["conversation_parts"][1], "id": "6073800003",
                "part_type": "quick_reply", "body": "<p>Is there anything else I can help with?</p>",
                "author": {"type": "bot", "id": "5120133", "name": "Fin"}}  # fmt: skip
    payload["data"]["item"]["conversation_parts"]["conversation_parts"].append(bot_part)
    body, headers = signed_json("chat/intercom", payload, SECRET, NOW)
    mapped = deliver("chat/intercom", body, headers)
    assert [(e.event_id, e.actor.value) for e in mapped.events] == [
        ("intercom:6073800002", "agent"), ("intercom:6073800003", "bot")]  # fmt: skip

    read = {**payload, "topic": "conversation.read"}
    body, headers = signed_json("chat/intercom", read, SECRET, NOW)
    receipt = deliver("chat/intercom", body, headers)
    assert (receipt.events, len(receipt.ignored)) == ([], 1), "a read receipt is no message"

    body, headers = signed_json("chat/intercom", fixture("intercom-ticket.admin.replied.json"), SECRET, NOW)
    ticket = deliver("chat/intercom", body, headers)
    shown = [(e.event_id, e.customer_id, e.conversation_id, e.direction.value, e.agent_id)
             for e in ticket.events]  # fmt: skip
    assert shown == [("intercom:7420100001", "cust-1042", "intercom:1295", "outbound", "3330619")]

    # Assign and reply, then reply with a state change: the bodies are what the customer
    # reads, whatever the part's type; the note is not.
    body, headers = signed_json("chat/intercom", fixture("intercom-ticket.admin.assigned.json"), SECRET, NOW)
    assigned = deliver("chat/intercom", body, headers)
    replies = [(e.event_id, e.kind.value, e.direction.value, e.actor.value, e.agent_id, e.team_id)
               for e in assigned.events]  # fmt: skip
    assert replies == [("intercom:7420100002", "message", "outbound", "agent", "3330619", "814"),
                     ("intercom:7420100004", "message", "outbound", "agent", "3330619", "814")]  # fmt: skip
    assert len(assigned.ignored) == 1 and "note_and_reopen part" in assigned.ignored[0]


def test_zendesk_ticket_created_comment_and_solved() -> None:
    ticket = "zendesk:ticket:5158"
    mapped = [deliver("helpdesk/zendesk", *zendesk_signed(fixture(f"zendesk-ticket.{name}.json")))
              for name in ("created", "comment_added", "status_changed")]  # fmt: skip
    assert [rows(found) for found in mapped] == [
        [("zendesk:cbe4028c-7239-495d-b020-f22348516046", "ticket_opened", "inbound", "customer",
          "zendesk:8447388090494", ticket, None, "2024-05-10T15:39:42+00:00")],
        [("zendesk:d4f5c389-8f4a-4c2e-a1b9-8e4f39c71d52", "message", "outbound", "agent",
          "zendesk:8447388090494", ticket, "zendesk:8447388090495", "2024-05-10T16:02:11.120934+00:00")],
        [("zendesk:0b7e5a2e-3c1d-4f7a-9d8e-6a5b4c3d2e1f", "ticket_resolved", "none", "agent",
          "zendesk:8447388090494", ticket, "zendesk:8447388090495", "2024-05-10T16:30:05.001000+00:00")],
    ]  # fmt: skip
    assert mapped[0].events[0].attributes == {"priority": "high", "category": "login", "via": "web_form"}
    assert all(found.events[0].channel.value == "helpdesk" for found in mapped)


def test_zendesk_reopening_by_an_agent_and_the_group_as_team() -> None:
    reopened = fixture("zendesk-ticket.status_changed.json")
    reopened["event"] |= {"current": "OPEN", "previous": "SOLVED"}
    (event,) = deliver("helpdesk/zendesk", *zendesk_signed(reopened)).events
    assert (event.kind.value, event.direction.value, event.agent_id) == (
        "conversation_opened", "none", "zendesk:8447388090495")  # fmt: skip
    (created,) = deliver("helpdesk/zendesk", *zendesk_signed(fixture("zendesk-ticket.created.json"))).events
    assert created.team_id == "zendesk:group:8447153466430"


def test_zendesk_notes_and_other_events_carry_no_touchpoint() -> None:
    note = fixture("zendesk-ticket.comment_added.json")
    note["event"]["comment"]["is_public"] = False
    reopened = fixture("zendesk-ticket.status_changed.json")
    reopened["event"] |= {"current": "PENDING", "previous": "OPEN"}
    closed = fixture("zendesk-ticket.status_changed.json")
    closed["event"] |= {"current": "CLOSED", "previous": "SOLVED"}
    untagged = fixture("zendesk-ticket.created.json")
    untagged["detail"]["tags"] = []
    customer = fixture("zendesk-ticket.comment_added.json")
    customer["event"]["comment"]["author"]["is_staff"] = False
    for payload in (note, reopened, closed):
        found = deliver("helpdesk/zendesk", *zendesk_signed(payload))
        assert not found.events and len(found.ignored) == 1, found.summary()
    assert (
        deliver("helpdesk/zendesk", *zendesk_signed(untagged)).events[0].attributes["category"] == "incident"
    )
    reply = deliver("helpdesk/zendesk", *zendesk_signed(customer)).events[0]
    assert (reply.direction.value, reply.actor.value, reply.agent_id) == ("inbound", "customer", None)


def test_zendesk_signature_is_base64_hmac_of_timestamp_and_body() -> None:
    body, headers = zendesk_signed(fixture("zendesk-ticket.created.json"))
    provider = PROVIDERS["helpdesk/zendesk"]
    provider.verify(request(body, headers), SECRET.encode(), 300)
    for changed in ({"X-Zendesk-Webhook-Signature": headers["X-Zendesk-Webhook-Signature"][:-4] + "AAA="},
                    {"X-Zendesk-Webhook-Signature-Timestamp": "2026-05-28T20:26:41Z"}):  # fmt: skip
        with pytest.raises(SignatureError):
            provider.verify(request(body, headers | changed), SECRET.encode(), 300)
    with pytest.raises(SignatureError, match="stale or replayed"):
        provider.verify(request(body, headers, now=NOW + 3600), SECRET.encode(), 300)


def test_facebook_page_feed_comments_replies_and_mentions() -> None:
    body, headers = signed_json("chat/messenger", fixture("facebook-page-feed.json"), SECRET, NOW)
    mapped = deliver("chat/messenger", body, headers)
    page, thread = "101259571653026", "101259571653026_111111111_222222222"
    conversation = f"facebook:{page}:{thread}:987654321"
    assert rows(mapped) == [
        (f"facebook:{thread}", "message", "inbound", "customer", "facebook:987654321", conversation, None,
         "2023-12-23T12:00:00+00:00"),
        ("facebook:101259571653026_111111111_333333333", "message", "outbound", "agent", "facebook:987654321",
         conversation, None, "2023-12-23T12:15:00+00:00"),
        ("facebook:mention:777888999_123123123", "message", "inbound", "customer", "facebook:777888999",
         f"facebook:{page}:mention:777888999_123123123", None, "2023-12-23T12:00:05+00:00"),
    ]  # fmt: skip
    assert all(e.channel.value == "social" and e.attributes == {"network": "facebook"} for e in mapped.events)
    assert len(mapped.ignored) == 2 and not mapped.errors  # the like and the page's own post
    # A reply to a comment this collector never saw cannot be attributed to a customer.
    alone = fixture("facebook-page-feed.json")
    alone["entry"][0]["changes"] = alone["entry"][0]["changes"][1:2]
    found = deliver("chat/messenger", *signed_json("chat/messenger", alone, SECRET, NOW))
    assert not found.events and "not among the comments seen here" in found.ignored[0]


def zendesk_signed(payload: Any) -> tuple[bytes, dict[str, str]]:
    return signed_json("helpdesk/zendesk", payload, SECRET, NOW)
