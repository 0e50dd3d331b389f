"""Webhooks and email files end to end: a real collector on loopback, the real embedded broker."""

from __future__ import annotations

import json
import mailbox
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.integration.conftest import (
    WEBHOOK_SECRET,
    Collector,
    dlq_topic,
    published,
    read_topic,
)
from tests.webhooks import fixture, mailgun_form, sendgrid_form, signed_json
from touchstream.broker import EmbeddedBroker


def deliveries(now: int) -> dict[str, tuple[bytes, dict[str, str]]]:
    """One documented sample per provider, signed as the platform signs it."""
    return {
        "chat/intercom": signed_json(
            "chat/intercom", fixture("intercom-conversation.admin.replied.json"), WEBHOOK_SECRET, now
        ),
        "chat/messenger": signed_json(
            "chat/messenger", fixture("messenger-messages.json"), WEBHOOK_SECRET, now
        ),
        "chat/generic": signed_json(
            "chat/generic",
            {
                "messages": [
                    {
                        "id": "g1",
                        "conversation_id": "c1",
                        "customer_id": "cust-g",
                        "sender": "customer",
                        "sent_at": "2026-05-01T09:30:00+02:00",
                    },
                    {
                        "id": "g2",
                        "conversation_id": "c1",
                        "customer_id": "cust-g",
                        "sender": "bot",
                        "sent_at": "2026-05-01T09:30:02+02:00",
                    },
                ]
            },
            WEBHOOK_SECRET,
            now,
        ),
        "survey/generic": signed_json(
            "survey/generic",
            {
                "id": "r1",
                "customer_id": "cust-g",
                "type": "nps",
                "score": 10,
                "channel": "chat",
                "answered_at": "2026-05-01T10:00:00Z",
            },
            WEBHOOK_SECRET,
            now,
        ),
        "helpdesk/generic": signed_json(
            "helpdesk/generic",
            {
                "id": "h1",
                "type": "ticket_opened",
                "ticket_id": "T-1",
                "customer_id": "cust-g",
                "occurred_at": "2026-05-01T11:00:00Z",
            },
            WEBHOOK_SECRET,
            now,
        ),
        "helpdesk/zendesk": signed_json(
            "helpdesk/zendesk", fixture("zendesk-ticket.created.json"), WEBHOOK_SECRET, now
        ),
        "email/mailgun": mailgun_form(fixture("mailgun-parsed.json"), WEBHOOK_SECRET, now),
        "email/sendgrid": sendgrid_form(
            fixture("sendgrid-headers.txt"), WEBHOOK_SECRET, "in@parse.shop.example"
        ),
    }


EXPECTED = {
    "chat/intercom": ["intercom:6073800002"],
    "chat/messenger": [
        "messenger:mid.1457764197618:41d102a3e1ae206a38",
        "messenger:mid.1457764197618:41d102a3e1ae206a39",
        "messenger:m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P",
    ],
    "chat/generic": ["chat:g1", "chat:g2"],
    "survey/generic": ["survey:r1"],
    "helpdesk/generic": ["helpdesk:h1"],
    "helpdesk/zendesk": ["zendesk:cbe4028c-7239-495d-b020-f22348516046"],
    "email/mailgun": ["email:CAJ5ia2DsHgVzD@mail.customer.example"],
    "email/sendgrid": ["email:CAN_P_JMvV7ZpAQhOnDienypLrJmuhN=LQWweu4yScw4jQyXY2w@mail.customer.example"],
}


def post(collector: Collector, route: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    return collector.request(f"/v1/webhooks/{route}", body, headers=headers)


def test_every_provider_publishes_exactly_its_events_and_redelivery_keeps_ids(
    broker: EmbeddedBroker, collector_env: dict[str, str], start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector()
    now = int(time.time())
    for route, (body, headers) in deliveries(now).items():
        status, answer = post(collector, route, body, headers)
        assert (status, answer["accepted"], answer["rejected"]) == (200, len(EXPECTED[route]), 0), (
            route,
            answer,
        )
    # The platforms redeliver: same payloads again (Mailgun re-signs with a new token).
    for route, (body, headers) in deliveries(now).items():
        assert post(collector, route, body, headers)[0] == 200, route

    expected_ids = sorted(event_id for ids in EXPECTED.values() for event_id in ids)
    records = published(broker, collector_env, expected=2 * len(expected_ids))
    assert sorted(record["event_id"] for record in records) == sorted(expected_ids * 2)
    assert not any("never reach" in json.dumps(record) for record in records), "no email bodies in Kafka"
    assert {record["channel"] for record in records} == {"chat", "messaging", "email", "helpdesk"}

    metrics = collector.get("/metrics")[1]
    assert 'touchstream_collector_events_accepted_total{source="chat/messenger"} 6' in metrics
    assert 'touchstream_collector_items_ignored_total{source="chat/messenger"} 2' in metrics


def test_the_pages_reply_finds_the_customer_of_a_comment_from_an_earlier_delivery(
    broker: EmbeddedBroker, collector_env: dict[str, str], start_collector: Callable[..., Collector]
) -> None:
    """Meta delivers a customer's comment and the page's reply in separate requests; the
    collector remembers the comment's author, so the reply is in the customer's thread."""
    collector = start_collector()
    now = int(time.time())
    feed = fixture("facebook-page-feed.json")
    comment, reply = ({**feed, "entry": [{**feed["entry"][0], "changes": [change]}]}
                      for change in feed["entry"][0]["changes"][:2])  # fmt: skip
    for payload in (comment, reply):
        status, answer = post(
            collector, "chat/messenger", *signed_json("chat/messenger", payload, WEBHOOK_SECRET, now)
        )
        assert (status, answer["accepted"]) == (200, 1), answer
    records = published(broker, collector_env, expected=2)
    assert [(r["direction"], r["customer_id"], r["channel"]) for r in records] == [
        ("inbound", "facebook:987654321", "social"),
        ("outbound", "facebook:987654321", "social"),
    ]
    assert records[0]["conversation_id"] == records[1]["conversation_id"]


def test_bad_webhooks_get_the_right_4xx_and_publish_nothing(
    broker: EmbeddedBroker, collector_env: dict[str, str], start_collector: Callable[..., Collector]
) -> None:
    collector = start_collector()
    now = int(time.time())
    samples = deliveries(now)
    body, headers = samples["chat/generic"]
    forged = {**headers, "Touchstream-Signature": headers["Touchstream-Signature"][:-4] + "0000"}
    stale_body, stale_headers = signed_json("chat/generic", json.loads(body), WEBHOOK_SECRET, now - 3600)
    intercom_body, intercom_headers = samples["chat/intercom"]
    too_many = signed_json("chat/generic", [
        {"id": f"m{n}", "conversation_id": "c", "customer_id": "x", "sender": "customer",
         "sent_at": "2026-05-01T09:30:00Z"} for n in range(51)
    ], WEBHOOK_SECRET, now)  # fmt: skip
    all_invalid = signed_json("chat/generic", [{"id": "m", "sender": "martian"}], WEBHOOK_SECRET, now)
    not_json = signed_json("chat/generic", None, WEBHOOK_SECRET, now)[1]
    huge = signed_json("chat/generic", {"pad": "x" * 300_000}, WEBHOOK_SECRET, now)
    cases: list[tuple[str, bytes, dict[str, str], int, str]] = [
        ("chat/wechat", body, headers, 404, "unknown webhook provider"),
        ("chat/generic", body, {"Content-Type": "application/json"}, 401, "missing Touchstream-Signature"),
        ("chat/generic", body, forged, 401, "does not match"),
        ("chat/generic", stale_body, stale_headers, 401, "stale or replayed"),
        ("chat/intercom", intercom_body + b" ", intercom_headers, 401, "does not match"),
        ("chat/generic", b"{not json", not_json, 401, "does not match"),
        ("chat/generic", *too_many, 413, "over the limit of 50"),
        ("chat/generic", *huge, 413, "exceeds 262144 bytes"),
        ("chat/generic", *all_invalid, 422, "no valid event"),
    ]
    for route, case_body, case_headers, status, says in cases:
        answer_status, answer = post(collector, route, case_body, case_headers)
        assert (answer_status, says in answer["error"]) == (status, True), (route, says, answer)
    # Signed correctly but unreadable: 400 / 415.
    bad_json = b'{"messages": [}'
    assert post(collector, "chat/generic", bad_json, signed_headers(bad_json, now))[0] == 400
    text_body = b"hello"
    text_headers = {**signed_headers(text_body, now), "Content-Type": "text/plain"}
    status, answer = post(collector, "chat/generic", text_body, text_headers)
    assert status == 415 and "application/json" in answer["error"]
    # The all-invalid item's reason names the field.
    assert "sender must be one of" in post(collector, "chat/generic", *all_invalid)[1]["errors"][0]["reason"]

    assert published(broker, collector_env, expected=1, timeout=5) == []
    metrics = collector.get("/metrics")[1]
    assert (
        'touchstream_collector_requests_rejected_total{source="chat/generic",reason="stale_timestamp"} 1'
        in (metrics)
    )

    # A provider without a configured secret is not enabled.
    lonely = start_collector(TOUCHSTREAM_WEBHOOK_SECRETS=json.dumps({"intercom": WEBHOOK_SECRET}))
    status, answer = post(lonely, "chat/generic", body, headers)
    assert status == 403 and "TOUCHSTREAM_WEBHOOK_SECRETS" in answer["error"]


def signed_headers(body: bytes, now: int) -> dict[str, str]:
    from tests.webhooks import touchstream_signature

    return {"Content-Type": "application/json", **touchstream_signature(WEBHOOK_SECRET, body, now)}


def test_messenger_subscription_check(start_collector: Callable[..., Collector]) -> None:
    collector = start_collector()
    query = "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token="
    assert collector.get(f"/v1/webhooks/chat/messenger?{query}meta-verify-token") == (200, 1158201444)
    status, answer = collector.get(f"/v1/webhooks/chat/messenger?{query}guess")
    assert status == 403 and "verify_token" in answer["error"]


def write_mail(path: Path, headers: dict[str, str], body: str = "private words") -> None:
    lines = "".join(f"{name}: {value}\n" for name, value in headers.items())
    path.write_text(lines + "\n" + body + "\n")


def test_ingest_email_threads_files_and_mboxes(
    broker: EmbeddedBroker, collector_env: dict[str, str], tmp_path: Path
) -> None:
    mail = tmp_path / "mail"
    (mail / "nested").mkdir(parents=True)
    root = {
        "Message-ID": "<root@shop.example>",
        "From": "Support <help@shop.example>",
        "To": "Ann <ann@customer.example>",
        "Date": "Mon, 04 May 2026 09:00:00 +0000",
        "Subject": "Order",
    }
    # The reply is read first (file order), and names its root only in References.
    write_mail(
        mail / "a-reply.eml",
        {
            "Message-ID": "<r1@customer.example>",
            "From": "ann@customer.example",
            "To": "help@shop.example",
            "In-Reply-To": "<root@shop.example>",
            "References": "<root@shop.example>",
            "Date": "Mon, 04 May 2026 09:30:00 +0100",
        },
    )
    write_mail(mail / "b-root.eml", root)
    box = mailbox.mbox(mail / "nested" / "archive.mbox")
    # A reply to the reply that lost its References: joined by In-Reply-To over the run.
    box.add(
        mailbox.mboxMessage(
            "Message-ID: <r2@shop.example>\nFrom: agent.kim@mail.shop.example\n"
            "To: ann@customer.example\nIn-Reply-To: <r1@customer.example>\n"
            "Date: Mon, 04 May 2026 10:00:00 +0000\n\nbody\n"
        )
    )
    box.add(
        mailbox.mboxMessage(
            "Message-ID: <internal@shop.example>\nFrom: a@shop.example\n"
            "To: b@shop.example\nDate: Mon, 04 May 2026 10:00:00 +0000\n\nbody\n"
        )
    )
    box.add(
        mailbox.mboxMessage(
            "Message-ID: <nodate@customer.example>\nFrom: ann@customer.example\n"
            "To: help@shop.example\n\nsecret body\n"
        )
    )
    box.flush()
    (mail / "notes.txt").write_text("not mail")

    env = {**collector_env, "TOUCHSTREAM_EMAIL_BRAND_DOMAINS": ""}
    command = [
        sys.executable,
        "-m",
        "touchstream.cli",
        "ingest-email",
        str(mail),
        "--brand-domain",
        "shop.example",
    ]
    run = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert run.returncode == 1, run.stderr  # one message was rejected
    assert "published 3 emails in 3 threads, ignored 1 (brand-internal), rejected 1" in run.stdout
    assert "skipped 1 files" in run.stdout and "no valid Date header" in run.stderr

    records = {record["event_id"]: record for record in published(broker, collector_env, expected=3)}
    assert sorted(records) == [
        "email:r1@customer.example",
        "email:r2@shop.example",
        "email:root@shop.example",
    ]
    assert {record["conversation_id"] for record in records.values()} == {"email-thread:root@shop.example"}
    assert records["email:r1@customer.example"]["direction"] == "inbound"
    assert records["email:r2@shop.example"]["actor"] == "agent"
    assert records["email:r2@shop.example"]["agent_id"] == "agent.kim@mail.shop.example"
    assert len({record["customer_id"] for record in records.values()}) == 1

    (dead,) = read_topic(broker.bootstrap, dlq_topic(collector_env), expected=1, timeout=10)
    headers = dict(dead.headers() or [])
    assert headers["touchstream.reason"] == b"no valid Date header"
    source = headers["touchstream.source.file"]
    assert isinstance(source, bytes) and source.endswith(b"archive.mbox#3")
    assert b"nodate@customer.example" in (dead.value() or b"") and b"secret body" not in (dead.value() or b"")

    # Ingesting again gives the same ids (the sink collapses them).
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 1
    ids = [record["event_id"] for record in published(broker, collector_env, expected=6)]
    assert sorted(ids) == sorted(list(records) * 2)

    missing = subprocess.run([*command[:4], str(tmp_path / "nope")], env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1
