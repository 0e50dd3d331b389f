"""Item validation in the collector: every input is accepted or rejected with a reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.factories import event_data
from touchstream.producers.collector import map_events
from touchstream.producers.metrics import CollectorMetrics

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
# Near-valid events: a valid one with some fields replaced by arbitrary JSON values.
mutated_events = st.builds(
    lambda changes: {**event_data(), **changes},
    st.dictionaries(st.sampled_from(sorted(event_data())), json_values, max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(json_values | mutated_events, max_size=8))
def test_every_item_is_accepted_or_rejected_with_a_reason(items: list[Any]) -> None:
    mapped = map_events(items, NOW)
    accepted, errors = mapped.events, mapped.errors
    assert len(accepted) + len(errors) == len(items)
    assert all(error.reason for error in errors)
    assert sorted(error.index for error in errors) == [error.index for error in errors]
    assert all(event.received_at == NOW for event in accepted)


def test_received_at_is_the_collectors() -> None:
    mapped = map_events([event_data(received_at="1999-01-01T00:00:00+00:00")], NOW)
    assert mapped.errors == [] and mapped.events[0].received_at == NOW


def test_a_publishable_web_key_sends_only_web_page_views_and_clicks() -> None:
    items = [
        event_data(event_id="view", channel="web", kind="page_view"),
        event_data(event_id="tap", channel="web", kind="click"),
        event_data(event_id="chat", channel="chat", kind="message"),
        event_data(event_id="buy", channel="web", kind="purchase"),
        {"kind": ["unhashable"], "channel": "web"},
    ]
    mapped = map_events(items, NOW, web_only=True)
    assert [event.event_id for event in mapped.events] == ["view", "tap"]
    assert [(error.index, error.event_id) for error in mapped.errors] == [(2, "chat"), (3, "buy"), (4, None)]
    assert all("publishable web key" in error.reason for error in mapped.errors)


def test_metrics_render_prometheus_text() -> None:
    metrics = CollectorMetrics()
    metrics.accepted_events.inc("events", amount=3)
    metrics.rejected_requests.inc("chat/intercom", 'bad "quote"')
    metrics.publish_seconds.observe(0.02)
    metrics.publish_seconds.observe(20)
    text = metrics.render()
    assert 'touchstream_collector_events_accepted_total{source="events"} 3\n' in text
    assert (
        'touchstream_collector_requests_rejected_total{source="chat/intercom",reason="bad \\"quote\\""} 1'
        in text
    )
    assert "touchstream_collector_publish_failures_total 0" not in text  # labelled, so no bare zero
    assert 'touchstream_collector_publish_seconds_bucket{le="0.01"} 0' in text
    assert 'touchstream_collector_publish_seconds_bucket{le="0.025"} 1' in text
    assert 'touchstream_collector_publish_seconds_bucket{le="10"} 1' in text
    assert 'touchstream_collector_publish_seconds_bucket{le="+Inf"} 2' in text
    assert "touchstream_collector_publish_seconds_count 2" in text
