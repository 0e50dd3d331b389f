"""Engagement score, level and interaction counts (SPEC §5 "Engagement score/level").

score(t) = sum(w(kind) * 0.5 ** ((t - t_i) / half_life)) over the customer's own
actions, of which only the earliest `daily_cap` per kind and UTC day count. The
state keeps the score at `updated_at`; between actions it only decays, so the instant
it falls below a level's threshold is known in closed form:
t* = updated_at + half_life * log2(score / floor), where a held level's floor is its
threshold * (1 - h) (level hysteresis, SPEC §5: an event raises the level to the
score's level; only decay below the floor lowers it). A decay change is stamped at
that instant, and emitted once results reach it (see `Engine`), however long the
customer stays quiet.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from operator import itemgetter

from touchstream.schemas.touchpoint import Actor, Direction, Kind, TouchpointEvent
from touchstream.streams.metrics.config import DEFAULT_WEIGHTS, MetricsConfig
from touchstream.streams.metrics.records import EngagementRow, LevelChange

#: Customer-initiated kinds: what the customer does (SPEC §5); weights may zero some out.
CUSTOMER_INITIATED_KINDS = frozenset(DEFAULT_WEIGHTS)
WINDOWS = (timedelta(hours=24), timedelta(days=7), timedelta(days=30))
_time_of = itemgetter(0)


def is_customer_initiated(event: TouchpointEvent) -> bool:
    if event.actor is not Actor.CUSTOMER or event.kind not in CUSTOMER_INITIATED_KINDS:
        return False
    return event.kind not in (Kind.MESSAGE, Kind.CALL) or event.direction is Direction.INBOUND


def decayed(score: float, since: datetime, until: datetime, half_life: timedelta) -> float:
    return score * 0.5 ** ((until - since) / half_life)


def crossing_time(score: float, since: datetime, threshold: float, half_life: timedelta) -> datetime:
    """When a score decaying from `score` at `since` reaches `threshold` (> 0, <= score)."""
    return since + half_life * math.log2(score / threshold)


@dataclass
class Engagement:
    customer_id: str
    score: float = 0.0
    updated_at: datetime | None = None
    level: str = "dormant"
    #: Actions counted toward the cap on the current UTC day, per kind.
    cap_day: date | None = None
    cap_counts: dict[str, int] = field(default_factory=dict)
    #: (time, channel) of customer-initiated events in the last 30 days of event time.
    recent: list[tuple[datetime, str]] = field(default_factory=list)
    #: Counts every change of the state (an event, a drop by decay): whether a row is due.
    revision: int = field(default=0, compare=False)

    def next_crossing(self, config: MetricsConfig) -> datetime | None:
        """When decay alone next lowers the held level, if it ever does."""
        floor = config.floor(self.level)
        if self.updated_at is None or floor is None or floor <= 0:
            return None
        return crossing_time(self.score, self.updated_at, floor, config.half_life)

    def decay_until(self, horizon: datetime, config: MetricsConfig) -> list[LevelChange]:
        """Level drops from decay alone at instants strictly before `horizon`: at each, the
        score is the held level's floor and the level the one that score falls to."""
        changes: list[LevelChange] = []
        while (when := self.next_crossing(config)) is not None and when < horizon:
            floor = config.floor(self.level)
            assert floor is not None
            lower = config.level_after_fall(self.level)
            self.score, self.updated_at = floor, when
            changes.append(LevelChange(self.customer_id, self.level, lower, self.score, when))
            self.level = lower
            self.revision += 1
        return changes

    def apply(self, event: TouchpointEvent, config: MetricsConfig) -> list[LevelChange]:
        """A customer-initiated event, in order (decay crossings before it are taken first);
        the level changes it makes. The state's row is `row()`, made when it is written."""
        changes = self.decay_until(event.occurred_at, config)
        self.revision += 1
        day = event.occurred_at.astimezone(UTC).date()
        if day != self.cap_day:
            self.cap_day, self.cap_counts = day, {}
        counted = self.cap_counts.get(event.kind.value, 0)
        self.cap_counts[event.kind.value] = counted + 1
        weight = config.weights.get(event.kind, 0.0) if counted < config.daily_cap else 0.0
        score = 0.0 if self.updated_at is None else decayed(
            self.score, self.updated_at, event.occurred_at, config.half_life
        )  # fmt: skip
        self.score, self.updated_at = score + weight, event.occurred_at
        horizon = event.occurred_at - WINDOWS[-1]
        del self.recent[: bisect.bisect_right(self.recent, horizon, key=_time_of)]
        self.recent.append((event.occurred_at, event.channel.value))
        level = config.level_of(self.score)
        if config.rank(level) > config.rank(self.level):  # a held level only rises after an event
            changes.append(LevelChange(self.customer_id, self.level, level, self.score, event.occurred_at))
            self.level = level
        return changes

    def clone(self) -> Engagement:
        return Engagement(self.customer_id, self.score, self.updated_at, self.level, self.cap_day,
                          dict(self.cap_counts), list(self.recent), self.revision)  # fmt: skip

    def row(self) -> EngagementRow:
        assert self.updated_at is not None
        at = self.updated_at
        # `recent` is in time order (events are folded in order): count by bisection.
        end = bisect.bisect_right(self.recent, at, key=_time_of)
        starts = [bisect.bisect_right(self.recent, at - window, 0, end, key=_time_of) for window in WINDOWS]
        counts = [end - start for start in starts]
        channels = {channel for _, channel in self.recent[starts[-1] : end]}
        last = self.recent[end - 1][0] if end else None
        return EngagementRow(
            customer_id=self.customer_id,
            score=self.score,
            level=self.level,
            interactions_24h=counts[0],
            interactions_7d=counts[1],
            interactions_30d=counts[2],
            active_channels_30d=len(channels),
            last_interaction_at=last,
            updated_at=at,
        )
