"""The metric definitions' parameters, with SPEC §5's exact defaults."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import MappingProxyType

from touchstream.schemas.touchpoint import Actor, Channel, Kind
from touchstream.streams.metrics.schedule import Schedule

#: Customer-initiated kinds (SPEC §5 "Engagement score") and their default weights.
DEFAULT_WEIGHTS: Mapping[Kind, float] = MappingProxyType({
    Kind.PURCHASE: 5.0,
    Kind.MESSAGE: 3.0,
    Kind.CALL: 3.0,
    Kind.TICKET_OPENED: 2.0,
    Kind.SURVEY_RESPONSE: 2.0,
    Kind.CLICK: 1.0,
    Kind.PAGE_VIEW: 0.5,
})  # fmt: skip

#: Levels from the lowest; a score s has the last level whose threshold is <= s.
DEFAULT_LEVELS: tuple[tuple[str, float], ...] = (
    ("dormant", float("-inf")),
    ("low", 1.0),
    ("medium", 5.0),
    ("high", 15.0),
    ("champion", 40.0),
)

_SHORT = timedelta(minutes=30)
_LONG = timedelta(days=7)
DEFAULT_INACTIVITY: Mapping[Channel, timedelta] = MappingProxyType({
    channel: _LONG if channel in (Channel.EMAIL, Channel.HELPDESK) else _SHORT for channel in Channel
})  # fmt: skip

#: A conversation with no event for this long closes (SPEC §5 "Conversation status"), per
#: channel of its first event: 7 days, 30 for email and help desks.
DEFAULT_AUTO_CLOSE: Mapping[Channel, timedelta] = MappingProxyType({
    channel: timedelta(days=30) if channel in (Channel.EMAIL, Channel.HELPDESK) else timedelta(days=7)
    for channel in Channel
})  # fmt: skip

#: Response-time SLA per channel (the dashboard's default setting): a response slower than
#: its channel's is a churn's `slow_response` signal and an interaction answered late; a
#: ticket's first response within it counts towards SLA attainment. A channel without one
#: has no SLA. Live channels 5 minutes; messaging apps and social networks an hour; forums,
#: email and help desks a day.
SLA_BY_CHANNEL: Mapping[Channel, timedelta] = MappingProxyType({
    Channel.MESSAGING: timedelta(hours=1), Channel.SOCIAL: timedelta(hours=1),
    Channel.FORUM: timedelta(days=1), Channel.EMAIL: timedelta(days=1), Channel.HELPDESK: timedelta(days=1),
})  # fmt: skip
DEFAULT_SLA: Mapping[Channel, timedelta] = MappingProxyType(
    {channel: SLA_BY_CHANNEL.get(channel, timedelta(minutes=5)) for channel in Channel}
)

CUSTOMER_MESSAGE_KINDS = frozenset({Kind.MESSAGE, Kind.CALL, Kind.TICKET_OPENED})
#: Kinds that change a conversation's status (SPEC §5 "Conversation status"): never a
#: reply, whoever sends them (a close answers nothing).
STATUS_KINDS = frozenset(
    {Kind.CONVERSATION_CLOSED, Kind.CONVERSATION_SNOOZED, Kind.CONVERSATION_OPENED, Kind.TICKET_RESOLVED}
)


#: SPEC §5 "Teams and SLA policies": the targets a policy can set.
SLA_METRICS = ("first_response", "next_response", "resolution")
#: What became of a target: still running, met by its reply or close, breached at its due
#: instant, or cancelled by a close before it fell due (a response target only).
SLA_STATUSES = ("pending", "met", "breached", "cancelled")
DEFAULT_PRIORITY = "normal"


@dataclass(frozen=True)
class SlaPolicy:
    """Targets for the conversations it matches: `team`, `priority` and `channel` each a
    value or `*` for any (a conversation without a team matches `*` only). A target of
    None is not tracked. `business`: targets count opening time only (the team's
    schedule, else the channel's; neither: calendar time)."""

    name: str
    team: str = "*"
    priority: str = "*"
    channel: str = "*"
    first_response: timedelta | None = None
    next_response: timedelta | None = None
    resolution: timedelta | None = None
    business: bool = False

    def matches(self, team: str | None, priority: str, channel: str) -> bool:
        return (
            (self.team == "*" or self.team == team)
            and self.priority in ("*", priority)
            and self.channel in ("*", channel)
        )

    def target(self, metric: str) -> timedelta | None:
        target: timedelta | None = getattr(self, metric)
        return target


def channel_policies(sla: Mapping[Channel, timedelta]) -> tuple[SlaPolicy, ...]:
    """The policies without a setting: per channel, its SLA for first and next response,
    in calendar time, no resolution target."""
    return tuple(
        SlaPolicy(name=f"channel:{channel.value}", channel=channel.value, first_response=target,
                  next_response=target)
        for channel, target in sla.items()
    )  # fmt: skip


@functools.cache
def _ranks(levels: tuple[tuple[str, float], ...]) -> dict[str, int]:
    return {name: rank for rank, (name, _) in enumerate(levels)}


@functools.cache
def _floors(levels: tuple[tuple[str, float], ...], hysteresis: float) -> dict[str, float | None]:
    return {
        name: None if rank == 0 else threshold * (1 - hysteresis)
        for rank, (name, threshold) in enumerate(levels)
    }


@dataclass(frozen=True)
class MetricsConfig:
    #: Out-of-order events within this much event time give the same results as in order.
    grace: timedelta = timedelta(minutes=10)
    #: Gap that ends a derived conversation (events without conversation_id), per channel.
    inactivity: Mapping[Channel, timedelta] = field(default_factory=lambda: DEFAULT_INACTIVITY)
    #: A conversation with no event for this long closes at its last event + this, per
    #: channel of its first event; if it was waiting then, it is abandoned.
    auto_close_after: Mapping[Channel, timedelta] = field(default_factory=lambda: DEFAULT_AUTO_CLOSE)
    #: Outbound actors whose messages answer a waiting customer.
    reply_actors: frozenset[Actor] = frozenset({Actor.AGENT})
    weights: Mapping[Kind, float] = field(default_factory=lambda: DEFAULT_WEIGHTS)
    half_life: timedelta = timedelta(days=7)
    #: Per customer, kind and UTC day, only the earliest this many events add to the score.
    daily_cap: int = 20
    levels: tuple[tuple[str, float], ...] = DEFAULT_LEVELS
    #: Level hysteresis h (SPEC §5): a held level falls only once the score is below
    #: threshold * (1 - h). 0 is the plain definition.
    level_hysteresis: float = 0.1
    #: Emit provisional (live) rows each step; off, only final rows are written (what the
    #: streams benchmark compares against).
    live_rows: bool = True
    #: Journeys (SPEC §5b): a customer's run of events with gaps of at most this.
    journey_gap: timedelta = timedelta(hours=24)
    #: Customer profiles count preferred channels and active hours over this much event time.
    profile_window: timedelta = timedelta(days=90)
    #: A customer with no customer-initiated event for this long has churned (SPEC §5b).
    churn_after: timedelta = timedelta(days=30)
    #: How far back an outcome's touchpoints and a churn's slow responses are looked for.
    lookback: timedelta = timedelta(days=7)
    sla: Mapping[Channel, timedelta] = field(default_factory=lambda: DEFAULT_SLA)
    #: Event ids are remembered this long (event time) to drop redeliveries.
    dedup_window: timedelta = timedelta(days=30)
    #: Opening hours per channel; a response on a channel with a schedule (or of a team
    #: with one, `team_hours`) also gets `response_business_seconds`, the part of its wait
    #: within opening hours.
    business_hours: Mapping[Channel, Schedule] = field(default_factory=dict)
    #: SLA policies, the first that matches a conversation applies (SPEC §5 "Teams and SLA
    #: policies"); None: `channel_policies(sla)`.
    sla_policies: tuple[SlaPolicy, ...] | None = None
    #: Opening hours per team, for policies in business hours (before the channel's).
    team_hours: Mapping[str, Schedule] = field(default_factory=dict)
    _policies: tuple[SlaPolicy, ...] = field(init=False, repr=False, compare=False)
    #: The policy found per (team, priority, channel), and `auto_close_after` by channel
    #: name: looked up for every customer message and every conversation a step advances.
    _matched: dict[tuple[str | None, str, str], SlaPolicy | None] = field(
        init=False, repr=False, compare=False
    )
    _auto_close: dict[str, timedelta] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        policies = self.sla_policies if self.sla_policies is not None else channel_policies(self.sla)
        object.__setattr__(self, "_policies", policies)
        object.__setattr__(self, "_matched", {})
        object.__setattr__(self, "_auto_close", {c.value: span for c, span in self.auto_close_after.items()})

    def auto_close_for(self, channel: str) -> timedelta:
        """`auto_close_after` of a channel by its name."""
        return self._auto_close[channel]

    def schedule_for(self, team: str | None, channel: Channel) -> Schedule | None:
        """Opening hours: the team's own, else the channel's (None: neither has a schedule)."""
        return (self.team_hours.get(team) if team is not None else None) or self.business_hours.get(channel)

    def business_seconds(
        self, channel: Channel, start: datetime, end: datetime, team: str | None = None
    ) -> float | None:
        schedule = self.schedule_for(team, channel)
        return None if schedule is None else schedule.seconds_between(start, end)

    def policy_for(self, team: str | None, priority: str, channel: str) -> SlaPolicy | None:
        """The first policy that matches (None: no targets)."""
        key = (team, priority, channel)
        if key not in self._matched:
            self._matched[key] = next((p for p in self._policies if p.matches(team, priority, channel)), None)
        return self._matched[key]

    def due_at(self, policy: SlaPolicy, target: timedelta, team: str | None, channel: str, start: datetime
               ) -> datetime | None:  # fmt: skip
        """When a target started at `start` falls due (None: never, a schedule without
        opening hours)."""
        if policy.business:
            schedule = self.schedule_for(team, Channel(channel))
            if schedule is not None:
                return schedule.instant_after(start, target.total_seconds())
        return start + target

    def level_of(self, score: float) -> str:
        name = self.levels[0][0]
        for level, threshold in self.levels:
            if score >= threshold:
                name = level
        return name

    def rank(self, level: str) -> int:
        return _ranks(self.levels)[level]

    def floor(self, level: str) -> float | None:
        """The score below which a held `level` falls: threshold * (1 - h); None for the lowest."""
        return _floors(self.levels, self.level_hysteresis)[level]

    def level_after_fall(self, level: str) -> str:
        """The level a held `level` falls to at its floor: the level of the floor's score,
        or the next lower one where that is `level` itself (h = 0, the plain definition)."""
        floor = self.floor(level)
        assert floor is not None
        lower = self.level_of(floor)
        return lower if self.rank(lower) < self.rank(level) else self.levels[self.rank(level) - 1][0]
