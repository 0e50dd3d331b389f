"""Business-hours schedules: how much of a time span falls within opening hours.

A schedule is a time zone, opening intervals per weekday in local wall-clock time, and
closed dates (holidays). `Schedule.seconds_between(start, end)` is the length of the
part of [start, end) during which the local wall clock shows an opening time, and
`Schedule.instant_after(start, seconds)` the instant at which that length reaches
`seconds` (an SLA target in business hours falls due then); each
day's intervals are turned into UTC instants before they are intersected, so a
daylight-saving change shortens or lengthens the day it happens on exactly as a wall
clock would (an opening hour the clock skips is closed; one it shows twice counts
twice).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_INTERVAL = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")

#: Minutes after local midnight: [opens, closes).
Interval = tuple[int, int]


@dataclass(frozen=True)
class Schedule:
    timezone: str
    #: Opening intervals for Monday .. Sunday, sorted and not overlapping.
    weekly: tuple[tuple[Interval, ...], ...]
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if len(self.weekly) != 7:
            raise ValueError("a schedule needs the intervals of all seven weekdays")
        ZoneInfo(self.timezone)

    def seconds_between(self, start: datetime, end: datetime) -> float:
        if end <= start:
            return 0.0
        zone = ZoneInfo(self.timezone)
        day = start.astimezone(zone).date()
        last = end.astimezone(zone).date()
        total = timedelta(0)
        while day <= last:
            if day not in self.holidays:
                midnight = datetime.combine(day, time.min)
                for opens, closes in self.weekly[day.weekday()]:
                    wall_open, wall_close = (
                        midnight + timedelta(minutes=opens),
                        midnight + timedelta(minutes=closes),
                    )
                    for open_at, close_at in _utc_pieces(wall_open, wall_close, zone):
                        overlap = min(end, close_at) - max(start, open_at)
                        if overlap > timedelta(0):
                            total += overlap
            day += timedelta(days=1)
        return total.total_seconds()

    def instant_after(self, start: datetime, seconds: float) -> datetime | None:
        """The earliest instant `end` with `seconds_between(start, end) == seconds`: when
        that much opening time has passed since `start` (None if it never does within
        two years: a schedule without opening hours)."""
        if seconds <= 0:
            return start
        zone = ZoneInfo(self.timezone)
        left = timedelta(seconds=seconds)
        day = start.astimezone(zone).date() - timedelta(days=1)  # a day's pieces may begin the day before
        for _ in range(2 * 366 + 2):
            if day not in self.holidays:
                midnight = datetime.combine(day, time.min)
                for opens, closes in self.weekly[day.weekday()]:
                    wall_open = midnight + timedelta(minutes=opens)
                    wall_close = midnight + timedelta(minutes=closes)
                    for open_at, close_at in _utc_pieces(wall_open, wall_close, zone):
                        begin = max(start, open_at)
                        if close_at <= begin:
                            continue
                        if begin + left <= close_at:
                            return begin + left
                        left -= close_at - begin
            day += timedelta(days=1)
        return None

    @classmethod
    def parse(cls, spec: Mapping[str, Any]) -> Schedule:
        """From `{"timezone": "Europe/Berlin", "hours": {"mon-fri": "09:00-17:00",
        "sat": "10:00-12:00,13:00-15:00"}, "holidays": ["2026-12-25"]}`."""
        unknown = set(spec) - {"timezone", "hours", "holidays"}
        if unknown:
            raise ValueError(f"unknown schedule fields: {', '.join(sorted(unknown))}")
        timezone = spec.get("timezone", "UTC")
        try:
            ZoneInfo(str(timezone))
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {timezone!r}") from None
        weekly: list[list[Interval]] = [[] for _ in WEEKDAYS]
        hours = spec.get("hours")
        if not isinstance(hours, Mapping) or not hours:
            raise ValueError('"hours" must map weekdays ("mon-fri", "sat") to intervals ("09:00-17:00")')
        for days, intervals in hours.items():
            for weekday in _weekdays(str(days)):
                weekly[weekday].extend(_intervals(str(intervals)))
        for weekday, intervals in enumerate(weekly):
            intervals.sort()
            for (_, closes), (opens, _) in pairwise(intervals):
                if opens < closes:
                    raise ValueError(f"overlapping opening hours on {WEEKDAYS[weekday]}")
        try:
            holidays = frozenset(date.fromisoformat(str(day)) for day in spec.get("holidays", []))
        except ValueError as error:
            raise ValueError(f"holidays must be ISO dates (2026-12-25): {error}") from None
        return cls(str(timezone), tuple(tuple(day) for day in weekly), holidays)


def _utc_pieces(wall_open: datetime, wall_close: datetime, zone: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """The UTC spans during which the wall clock in `zone` shows a time in [open, close)
    (naive wall times of one day). Before a clock change wall = utc + offset before it,
    after it wall = utc + offset after it, so each side gives one span: an opening hour
    the clock skips is closed, one the clock shows twice counts twice."""
    lo = wall_open.replace(tzinfo=UTC) - timedelta(hours=30)
    hi = wall_close.replace(tzinfo=UTC) + timedelta(hours=30)
    before, after = _offset(lo, zone), _offset(hi, zone)
    if before == after:
        return [((wall_open - before).replace(tzinfo=UTC), (wall_close - before).replace(tzinfo=UTC))]
    low, high = int(lo.timestamp()), int(hi.timestamp())
    while high - low > 1:  # the clock change: the first second with the later offset
        middle = (low + high) // 2
        if _offset(datetime.fromtimestamp(middle, UTC), zone) == before:
            low = middle
        else:
            high = middle
    change = datetime.fromtimestamp(high, UTC)
    return [
        ((wall_open - before).replace(tzinfo=UTC), min((wall_close - before).replace(tzinfo=UTC), change)),
        (max((wall_open - after).replace(tzinfo=UTC), change), (wall_close - after).replace(tzinfo=UTC)),
    ]


def _offset(instant: datetime, zone: ZoneInfo) -> timedelta:
    offset = instant.astimezone(zone).utcoffset()
    assert offset is not None
    return offset


def _weekdays(days: str) -> list[int]:
    first, _, last = days.strip().lower().partition("-")
    if first not in WEEKDAYS or (last and last not in WEEKDAYS):
        raise ValueError(f"bad weekdays {days!r}: use mon..sun or a range like mon-fri")
    start, stop = WEEKDAYS.index(first), WEEKDAYS.index(last or first)
    if stop < start:
        raise ValueError(f"bad weekdays {days!r}: a range runs forward, mon-fri")
    return list(range(start, stop + 1))


def _intervals(text: str) -> list[Interval]:
    intervals = []
    for part in text.split(","):
        match = _INTERVAL.match(part.strip())
        if match is None:
            raise ValueError(f"bad opening hours {part.strip()!r}: use 09:00-17:00")
        h1, m1, h2, m2 = (int(group) for group in match.groups())
        opens, closes = h1 * 60 + m1, h2 * 60 + m2
        if m1 > 59 or m2 > 59 or not 0 <= opens < closes <= 24 * 60:
            raise ValueError(
                f"bad opening hours {part.strip()!r}: times between 00:00 and 24:00, opening first"
            )
        intervals.append((opens, closes))
    return intervals
