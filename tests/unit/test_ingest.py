from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from tests.factories import event, event_data
from touchstream.schemas.codec import encode
from touchstream.schemas.topics import Source, input_topic
from touchstream.schemas.touchpoint import Channel
from touchstream.streams.ingest import RawRecord, split

CHANNELS = {input_topic(channel): channel.value for channel in Channel}


def record(value: bytes | None, topic: str = "touchpoints.chat", offset: int = 0) -> RawRecord:
    return RawRecord(key=b"cust-1", value=value, source=Source(topic, 2, offset))


def test_split_keeps_valid_events_and_rejects_the_rest_with_raw_bytes() -> None:
    good = encode(event(event_id="a"))
    naive = json.dumps(event_data(event_id="b", occurred_at="2026-03-02T09:00:00")).encode()
    result = split(
        [
            record(good, offset=0),
            record(b"\xff\xfe", offset=1),
            record(naive, offset=2),
            record(None, offset=3),
        ],
        expected_channel=CHANNELS,
    )
    assert [e.event_id for e, _ in result.accepted] == ["a"]
    assert [letter.source.offset for letter in result.rejected] == [1, 2, 3]
    assert result.rejected[0].value == b"\xff\xfe"
    assert result.rejected[1].value == naive
    assert "occurred_at" in result.rejected[1].reason


def test_event_on_another_channels_topic_is_a_dead_letter() -> None:
    web_event = encode(event(channel="web", kind="page_view"))
    result = split([record(web_event, topic="touchpoints.email")], expected_channel=CHANNELS)
    assert not result.accepted
    assert "touchpoints.email" in result.rejected[0].reason


def test_dead_letter_headers_name_reason_and_source() -> None:
    result = split([record(b"nope", offset=41)], expected_channel=CHANNELS)
    headers = dict(result.rejected[0].headers(now=datetime(2026, 1, 1, tzinfo=UTC)))
    assert headers["touchstream.source.topic"] == b"touchpoints.chat"
    assert headers["touchstream.source.partition"] == b"2"
    assert headers["touchstream.source.offset"] == b"41"
    assert headers["touchstream.failed_at"] == b"2026-01-01T00:00:00+00:00"
    assert headers["touchstream.reason"].decode() == result.rejected[0].reason != ""


def test_an_event_dated_beyond_the_clock_skew_is_a_dead_letter() -> None:
    now = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    at = {
        "on time": now,
        "within the skew": now + timedelta(minutes=59),
        "ahead of its arrival": now + timedelta(hours=2),
    }
    records = [
        record(json.dumps(event_data(event_id=name, occurred_at=t.isoformat(), received_at=now.isoformat()))
               .encode(), offset=number)
        for number, (name, t) in enumerate(at.items())
    ]  # fmt: skip
    # received_at agrees with occurred_at, but both are in year 9999: the wall clock decides.
    far = datetime(9999, 12, 31, tzinfo=UTC).isoformat()
    records.append(
        record(json.dumps(event_data(event_id="y9999", occurred_at=far, received_at=far)).encode())
    )
    result = split(records, expected_channel=CHANNELS, now=now)
    assert [e.event_id for e, _ in result.accepted] == ["on time", "within the skew"]
    reasons = [letter.reason for letter in result.rejected]
    assert "more than 3600 s after received_at" in reasons[0]
    assert "after the wall clock" in reasons[1]

    tighter = split(records[:2], expected_channel=CHANNELS, now=now, max_skew=timedelta(minutes=30))
    assert [e.event_id for e, _ in tighter.accepted] == ["on time"]
    assert "more than 1800 s" in tighter.rejected[0].reason
