"""The Teams view's range (`dashboard.teams.parse_range`): dates or instants, `until`
exclusive, by default the week up to the newest event; a bad range is refused with why."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from touchstream.dashboard.teams import DEFAULT_DAYS, MAX_DAYS, parse_range

NEWEST = datetime(2026, 3, 9, 12, 30, tzinfo=UTC)


def test_the_default_is_the_week_up_to_the_newest_event() -> None:
    since, until = parse_range(None, None, NEWEST)
    assert until == NEWEST + timedelta(milliseconds=1)
    assert until - since == timedelta(days=DEFAULT_DAYS)


def test_dates_and_instants_are_utc_unless_they_say_otherwise() -> None:
    assert parse_range("2026-03-02", "2026-03-09", None) == (
        datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)
    )  # fmt: skip
    since, _ = parse_range("2026-03-02T09:00:00+01:00", "2026-03-03T00:00:00Z", None)
    assert since == datetime(2026, 3, 2, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("since", "until", "why"),
    [
        ("last week", "2026-03-09", "since must be an ISO 8601 date or instant"),
        ("2026-03-09", "2026-03-02", "since must be before until"),
        ("2026-01-01", "2026-06-01", f"at most {MAX_DAYS} days"),
    ],
)
def test_a_bad_range_is_refused_with_why(since: str, until: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_range(since, until, NEWEST)
