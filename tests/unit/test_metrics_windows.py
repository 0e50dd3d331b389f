"""Quantile sketch bounds, rolling windows and experience signals."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.metrics.experience import csat, nps
from streams.metrics.quantiles import Sketch, exact_quantile
from streams.metrics.records import ResponseRecord
from streams.metrics.rolling import OVERALL, RollingResponses

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
seconds = st.floats(min_value=0, max_value=7 * 86400, allow_nan=False) | st.integers(0, 3600).map(float)


def within(value: float | None, exact: float | None, accuracy: float) -> bool:
    assert value is not None and exact is not None
    return abs(value - exact) <= accuracy * exact + 1e-9


@settings(max_examples=300, deadline=None)
@given(st.lists(seconds, min_size=1, max_size=300), st.sampled_from([0.5, 0.9, 0.0, 1.0, 0.99]))
def test_sketch_quantiles_are_within_the_relative_bound(values: list[float], q: float) -> None:
    sketch = Sketch(0.01)
    for value in values:
        sketch.add(value)
    assert sketch.count == len(values) and math.isclose(sketch.total, sum(values))
    assert within(sketch.quantile(q), exact_quantile(values, q), 0.01)


@settings(max_examples=200, deadline=None)
@given(st.lists(seconds, max_size=100), st.lists(seconds, max_size=100))
def test_merged_sketches_equal_one_sketch_of_everything(left: list[float], right: list[float]) -> None:
    a, b, both = Sketch(), Sketch(), Sketch()
    for value in left:
        a.add(value)
        both.add(value)
    for value in right:
        b.add(value)
        both.add(value)
    a.merge(b)
    assert (a.buckets, a.zeros, a.count) == (both.buckets, both.zeros, both.count)


def test_sketch_refuses_negative_times_and_foreign_merges() -> None:
    with pytest.raises(ValueError):
        Sketch().add(-1)
    with pytest.raises(ValueError):
        Sketch(0.01).merge(Sketch(0.02))
    assert Sketch().quantile(0.5) is None


def record(
    minutes_ago: float, response: float, channel: str = "chat", customer: str = "c1"
) -> ResponseRecord:
    replied = T0 - timedelta(minutes=minutes_ago)
    return ResponseRecord(f"r{minutes_ago}-{response}", "conv", customer, channel, None, response, False,
                          replied - timedelta(seconds=response), replied)  # fmt: skip


def test_rolling_windows_per_channel_overall_and_customer() -> None:
    rolling = RollingResponses()
    rolling.add([record(10, 60), record(30, 120), record(90, 600), record(60 * 30, 30, "email"),
                 record(60 * 24 * 8, 999), record(5, 300, customer="c2")])  # fmt: skip
    chat = {stats.window: stats for stats in rolling.channel("chat", T0)}
    assert (chat["1h"].count, chat["24h"].count, chat["7d"].count) == (3, 4, 4)
    assert chat["1h"].mean == pytest.approx((60 + 120 + 300) / 3)
    assert within(chat["24h"].p90, exact_quantile([60, 120, 600, 300], 0.9), 0.01)
    overall = {stats.window: stats for stats in rolling.channel(OVERALL, T0)}
    assert overall["7d"].count == 5
    mine = {stats.window: stats for stats in rolling.customer("c1", T0)}
    assert (mine["1h"].count, mine["1h"].p50, mine["24h"].p90) == (2, 120, 600)
    rolling.forget_before(T0)
    assert all(minute * 60 >= (T0 - timedelta(days=7)).timestamp() - 60 for _, minute in rolling.minutes)
    assert rolling.channel("chat", T0)[2].count == 4


def test_nps_and_csat() -> None:
    assert nps([10, 9, 8, 7, 6, 0]) == pytest.approx(100 * (2 - 2) / 6)
    assert nps([10, 10, 3]) == pytest.approx(100 / 3)
    assert csat([5, 4, 3, 1]) == 50.0
    assert nps([]) is None and csat([]) is None
