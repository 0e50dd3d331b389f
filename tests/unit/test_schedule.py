"""Business-hours schedules: hand-checked spans, daylight saving, holidays, parsing, and
any span against a minute-by-minute count."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from touchstream.streams.metrics.schedule import Schedule

BERLIN = ZoneInfo("Europe/Berlin")
OFFICE = Schedule.parse({"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}})


def berlin(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=BERLIN).astimezone(UTC)


def test_a_weekend_in_between_counts_only_opening_hours() -> None:
    # Friday 16:00 -> Monday 10:00: one hour on Friday, one on Monday.
    assert OFFICE.seconds_between(berlin(2026, 11, 20, 16), berlin(2026, 11, 23, 10)) == 2 * 3600


def test_outside_opening_hours_nothing_counts() -> None:
    assert OFFICE.seconds_between(berlin(2026, 11, 20, 18), berlin(2026, 11, 23, 8, 59)) == 0
    assert OFFICE.seconds_between(berlin(2026, 11, 23, 10), berlin(2026, 11, 23, 9)) == 0


def test_a_holiday_is_closed() -> None:
    schedule = Schedule.parse(
        {"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00"}, "holidays": ["2026-12-25"]}
    )
    # Thursday 24 Dec 16:30 -> Monday 28 Dec 09:30: 30 min + (Friday closed) + 30 min.
    assert schedule.seconds_between(berlin(2026, 12, 24, 16, 30), berlin(2026, 12, 28, 9, 30)) == 3600


def test_daylight_saving_days_are_as_long_as_the_wall_clock_says() -> None:
    always = Schedule.parse({"timezone": "Europe/Berlin", "hours": {"mon-sun": "00:00-24:00"}})
    spring = always.seconds_between(berlin(2026, 3, 29), berlin(2026, 3, 30))
    autumn = always.seconds_between(berlin(2026, 10, 25), berlin(2026, 10, 26))
    assert (spring, autumn) == (23 * 3600, 25 * 3600)


def test_split_days_and_single_weekdays() -> None:
    schedule = Schedule.parse({"hours": {"sat": "10:00-12:00,13:00-15:00"}})  # UTC by default
    saturday = datetime(2026, 11, 21, tzinfo=UTC)
    assert schedule.seconds_between(saturday, saturday + timedelta(days=7)) == 4 * 3600


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"hours": {"mon-fri": "9-17"}}, "use 09:00-17:00"),
        ({"hours": {"fri-mon": "09:00-17:00"}}, "runs forward"),
        ({"hours": {"someday": "09:00-17:00"}}, "bad weekdays"),
        ({"hours": {"mon": "17:00-09:00"}}, "opening first"),
        ({"hours": {"mon": "09:00-12:00,11:00-13:00"}}, "overlapping"),
        ({"timezone": "Mars/Olympus", "hours": {"mon": "09:00-17:00"}}, "unknown time zone"),
        ({"hours": {}}, '"hours"'),
        ({"hours": {"mon": "09:00-17:00"}, "holidays": ["25.12.2026"]}, "ISO dates"),
        ({"hours": {"mon": "09:00-17:00"}, "open": True}, "unknown schedule fields"),
    ],
)
def test_bad_schedules_say_what_is_wrong(spec: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Schedule.parse(spec)


def minute_by_minute(schedule: Schedule, start: datetime, end: datetime) -> float:
    zone = ZoneInfo(schedule.timezone)
    minutes = 0
    at = start
    while at < end:
        local = at.astimezone(zone)
        minute = local.hour * 60 + local.minute
        if local.date() not in schedule.holidays and any(
            opens <= minute < closes for opens, closes in schedule.weekly[local.weekday()]
        ):
            minutes += 1
        at += timedelta(minutes=1)
    return minutes * 60.0


def clock(half_hours: int) -> str:
    return f"{half_hours // 2:02}:{half_hours % 2 * 30:02}"


def day_hours(ends: list[int]) -> str:
    """Sorted distinct half-hour marks paired up: up to three intervals that never overlap."""
    marks = sorted(ends)
    return ",".join(f"{clock(a)}-{clock(b)}" for a, b in zip(marks[::2], marks[1::2], strict=False))


intervals = st.lists(st.integers(0, 48), max_size=6, unique=True).map(day_hours)


#: The weeks around the switches to summer time (29 March) and back (25 October).
WEEKS = st.sampled_from([datetime(2026, 3, 24, tzinfo=UTC), datetime(2026, 10, 20, tzinfo=UTC)])


@st.composite
def schedules(draw: st.DrawFn) -> Schedule:
    """Berlin opening hours on some weekdays, with or without holidays on the Mondays
    after the clock changes."""
    hours = draw(
        st.dictionaries(st.sampled_from(["mon", "tue-thu", "fri", "sat-sun"]), intervals, min_size=1)
    )
    opening = {days: text for days, text in hours.items() if text}
    assume(opening)
    spec: dict[str, object] = {"timezone": "Europe/Berlin", "hours": opening}
    if draw(st.booleans()):
        spec["holidays"] = ["2026-03-30", "2026-10-26"]
    return Schedule.parse(spec)


@settings(max_examples=60, deadline=None)
@given(
    schedule=schedules(), start=st.integers(0, 60 * 24 * 10), length=st.integers(0, 60 * 24 * 3), week=WEEKS
)
def test_any_span_equals_a_minute_by_minute_count(
    schedule: Schedule, start: int, length: int, week: datetime
) -> None:
    begin = week + timedelta(minutes=start)
    end = begin + timedelta(minutes=length)
    assert schedule.seconds_between(begin, end) == minute_by_minute(schedule, begin, end)


def test_a_target_in_business_hours_falls_due_in_opening_time() -> None:
    # Friday 16:30 + 2 business hours: half an hour on Friday, 1.5 h on Monday -> Monday 10:30.
    assert OFFICE.instant_after(berlin(2026, 11, 20, 16, 30), 2 * 3600) == berlin(2026, 11, 23, 10, 30)
    # Exactly the rest of Friday: due at closing time, not at Monday's opening.
    assert OFFICE.instant_after(berlin(2026, 11, 20, 16, 30), 1800) == berlin(2026, 11, 20, 17)
    assert OFFICE.instant_after(berlin(2026, 11, 21, 12), 0) == berlin(2026, 11, 21, 12)
    never = Schedule("UTC", ((),) * 7)
    assert never.instant_after(berlin(2026, 11, 21, 12), 60) is None


@settings(max_examples=60, deadline=None)
@given(schedule=schedules(), start=st.integers(0, 60 * 24 * 10), minutes=st.integers(1, 60 * 24), week=WEEKS)
def test_a_due_instant_is_the_first_with_that_much_opening_time(
    schedule: Schedule, start: int, minutes: int, week: datetime
) -> None:
    begin = week + timedelta(minutes=start)
    due = schedule.instant_after(begin, minutes * 60)
    assert due is not None
    assert minute_by_minute(schedule, begin, due) == minutes * 60
    assert minute_by_minute(schedule, begin, due - timedelta(minutes=1)) == (minutes - 1) * 60
