"""Item validation in the collector: every input is accepted or rejected with a reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from producers.collector import validate_items
from producers.metrics import CollectorMetrics
from tests.factories import event_data

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
    accepted, errors = validate_items(items, NOW)
    assert len(accepted) + len(errors) == len(items)
    assert all(error.reason for error in errors)
    assert sorted(error.index for error in errors) == [error.index for error in errors]
    assert all(event.received_at == NOW for event in accepted)


def test_received_at_is_the_collectors() -> None:
    accepted, errors = validate_items([event_data(received_at="1999-01-01T00:00:00+00:00")], NOW)
    assert errors == [] and accepted[0].received_at == NOW


def test_metrics_render_prometheus_text() -> None:
    metrics = CollectorMetrics()
    metrics.accepted_events.inc(amount=3)
    metrics.rejected_requests.inc('bad "quote"')
    metrics.publish_seconds.observe(0.02)
    metrics.publish_seconds.observe(20)
    text = metrics.render()
    assert "touchstream_collector_events_accepted_total 3\n" in text
    assert 'touchstream_collector_requests_rejected_total{reason="bad \\"quote\\""} 1' in text
    assert 'touchstream_collector_publish_seconds_bucket{le="0.01"} 0' in text
    assert 'touchstream_collector_publish_seconds_bucket{le="0.025"} 1' in text
    assert 'touchstream_collector_publish_seconds_bucket{le="10"} 1' in text
    assert 'touchstream_collector_publish_seconds_bucket{le="+Inf"} 2' in text
    assert "touchstream_collector_publish_seconds_count 2" in text
