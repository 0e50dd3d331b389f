from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.factories import event, event_data
from touchstream.schemas import jsonschema
from touchstream.schemas.codec import Rejected, decode, encode
from touchstream.schemas.touchpoint import MAX_ATTRIBUTES, Channel, Kind, TouchpointEvent

ROOT = Path(__file__).resolve().parents[2]


def test_valid_event_round_trips_through_bytes() -> None:
    original = event(attributes={"page": "/pricing"})
    decoded = decode(encode(original))
    assert decoded == original


def test_times_with_an_offset_are_the_same_instants_in_utc() -> None:
    decoded = decode(json.dumps(event_data(occurred_at="2026-03-02T10:30:00.123456+01:30",
                                           received_at="2026-03-02T09:00:01-00:00")).encode())  # fmt: skip
    assert isinstance(decoded, TouchpointEvent)
    assert decoded.occurred_at == datetime(2026, 3, 2, 9, 0, 0, 123456, tzinfo=UTC)
    assert decoded.occurred_at.tzinfo is UTC and decoded.received_at.tzinfo is UTC
    assert decode(encode(decoded)) == decoded


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"occurred_at": "2026-03-02T09:00:00"}, "occurred_at"),
        ({"received_at": "2026-03-02T09:00:00"}, "received_at"),
        ({"channel": "carrier_pigeon"}, "channel"),
        ({"kind": "teleport"}, "kind"),
        ({"direction": "sideways"}, "direction"),
        ({"actor": "robot"}, "actor"),
        ({"event_id": ""}, "event_id"),
        ({"event_id": "x" * 129}, "event_id"),
        ({"customer_id": "c" * 257}, "customer_id"),
        ({"schema_version": 2}, "schema_version"),
        ({"unexpected": 1}, "unexpected"),
        ({"attributes": {"k": 1}}, "attributes"),
    ],
)
def test_invalid_field_is_rejected_with_its_name(overrides: dict[str, object], field: str) -> None:
    result = decode(json.dumps(event_data(**overrides)).encode())
    assert isinstance(result, Rejected)
    assert field in result.reason


def test_naive_datetime_reason_mentions_timezone() -> None:
    result = decode(json.dumps(event_data(occurred_at="2026-03-02T09:00:00")).encode())
    assert isinstance(result, Rejected)
    assert "timezone" in result.reason


def test_missing_field_and_bad_json_are_rejected() -> None:
    data = event_data()
    del data["customer_id"]
    missing = decode(json.dumps(data).encode())
    assert isinstance(missing, Rejected) and "customer_id" in missing.reason
    garbage = decode(b"{not json")
    assert isinstance(garbage, Rejected) and "json" in garbage.reason.lower()
    assert isinstance(decode(None), Rejected)


def test_attributes_are_bounded() -> None:
    too_many = {f"k{i}": "v" for i in range(MAX_ATTRIBUTES + 1)}
    with pytest.raises(ValidationError):
        event(attributes=too_many)
    with pytest.raises(ValidationError):
        event(attributes={"k": "v" * 2000})
    assert len(event(attributes={f"k{i}": "v" for i in range(MAX_ATTRIBUTES)}).attributes) == 32


@pytest.mark.parametrize(
    ("survey", "ok"),
    [
        ({"type": "nps", "score": 0}, True),
        ({"type": "nps", "score": 10}, True),
        ({"type": "nps", "score": 11}, False),
        ({"type": "csat", "score": 1}, True),
        ({"type": "csat", "score": 5}, True),
        ({"type": "csat", "score": 0}, False),
        ({"type": "ces", "score": 3}, False),
    ],
)
def test_survey_scales(survey: dict[str, object], ok: bool) -> None:
    data = event_data(kind="survey_response", survey=survey)
    if ok:
        assert TouchpointEvent.model_validate(data).survey is not None
    else:
        with pytest.raises(ValidationError):
            TouchpointEvent.model_validate(data)


def test_survey_and_consent_belong_to_their_kinds() -> None:
    with pytest.raises(ValidationError, match="survey is required"):
        event(kind="survey_response")
    with pytest.raises(ValidationError, match="survey is required"):
        event(survey={"type": "nps", "score": 9})
    with pytest.raises(ValidationError, match="consent is required"):
        event(kind="consent_updated")
    assert event(kind="consent_updated", consent={"analytics": False}).consent is not None


def test_enums_cover_the_spec() -> None:
    assert {c.value for c in Channel} == {
        "web", "chat", "email", "social", "phone", "mobile_app",
        "forum", "helpdesk", "messaging", "in_store",
    }  # fmt: skip
    assert {"page_view", "click", "message", "call", "ticket_opened", "ticket_resolved",
            "survey_response", "purchase", "consent_updated", "erasure_requested"} <= {
        k.value for k in Kind
    }  # fmt: skip


def test_exported_json_schema_is_up_to_date() -> None:
    committed = (ROOT / jsonschema.SCHEMA_FILE).read_text(encoding="utf-8")
    assert committed == jsonschema.render(), "run `touchstream schema` and commit the result"
