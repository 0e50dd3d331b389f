"""Seeded, reproducible synthetic customer journeys (demo traffic and benchmarks).

A discrete-event simulation: sessions arrive as a Poisson process; most sessions are a
journey on one channel (browsing, a chat or email conversation, a helpdesk ticket, a
call, a store visit) whose steps are spread over realistic delays; agent replies come
after log-normally distributed response times, and some conversations end with a
survey. Cross-channel journeys go the way customers do: a few page views, then a
question on the customer's preferred contact channel, an email follow-up, often a
purchase, then a survey. Each customer has traits of their own, drawn from the seed:
the channel they browse on, the one they prefer to talk on, and a daily rhythm (the UTC
hour they are most active around), so the profiles and the active-hours heatmap show
real patterns; with `rhythm`, the number of sessions follows the hour and the weekday
too. `events()` yields the touchpoints in `occurred_at` order. The same seed
and start time give the same events, with the same ids.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from touchstream.schemas.touchpoint import Actor, Channel, Direction, Kind, TouchpointEvent

#: Relative share of sessions per journey type.
JOURNEYS: dict[str, float] = {
    "browse_web": 30,
    "browse_app": 12,
    "chat": 18,
    "email": 10,
    "helpdesk": 8,
    "phone": 6,
    "messaging": 6,
    "social": 4,
    "forum": 2,
    "in_store": 2,
    "cross_channel": 30,
}
#: Contact channels a customer may prefer, with how common each preference is.
CONTACT_PREFERENCES: dict[Channel, float] = {
    Channel.CHAT: 40, Channel.EMAIL: 25, Channel.MESSAGING: 20, Channel.SOCIAL: 10, Channel.PHONE: 5,
}  # fmt: skip
#: A session is kept for a customer with weight exp(-(hours from their peak)^2 / 2 sigma^2)
#: (a few tries to find a customer awake now), so each customer acts around their own hour.
RHYTHM_SIGMA_HOURS = 3.0
#: With `SimulatorConfig.rhythm`, how busy each UTC hour of a weekday is (relative), and how
#: busy a Saturday and a Sunday are beside a weekday: quiet nights, a working-day peak and
#: a lighter evening, quieter weekends. Scaled so that a week averages `sessions_per_second`.
HOURLY_SHAPE = (
    0.15, 0.1, 0.1, 0.1, 0.15, 0.3, 0.6, 1.0, 1.4, 1.7, 1.8, 1.8,
    1.7, 1.7, 1.8, 1.8, 1.7, 1.5, 1.3, 1.2, 1.1, 0.9, 0.6, 0.3,
)  # fmt: skip
WEEKEND_SHARE = (0.7, 0.55)
_WEEK_MEAN = sum(HOURLY_SHAPE) * (5 + sum(WEEKEND_SHARE)) / (7 * 24)


@dataclass(frozen=True)
class Traits:
    """One customer's habits: where they browse, where they talk, when they are active."""

    browse: Channel
    contact: Channel
    peak_hour: float


#: Median agent response time per channel in seconds (log-normal, sigma below).
MEDIAN_REPLY_SECONDS: dict[Channel, float] = {
    Channel.CHAT: 45,
    Channel.MESSAGING: 300,
    Channel.SOCIAL: 900,
    Channel.FORUM: 3 * 3600,
    Channel.EMAIL: 2 * 3600,
    Channel.HELPDESK: 3600,
    Channel.PHONE: 30,
}
REPLY_SIGMA = 0.9
#: Share of conversations still waiting for an agent when the customer gives up.
UNANSWERED_SHARE = 0.08
#: The team each channel's conversations are routed to.
TEAMS: dict[Channel, str] = {
    Channel.CHAT: "frontline", Channel.MESSAGING: "frontline", Channel.SOCIAL: "social",
    Channel.EMAIL: "care", Channel.HELPDESK: "care", Channel.PHONE: "phone", Channel.FORUM: "community",
}  # fmt: skip
#: Agents who answer this many times slower than the rest (the demo's bad experiences).
SLOW_AGENTS = frozenset({"agent-21", "agent-22", "agent-23"})
SLOW_FACTOR = 20.0
#: A reply slower than this (the dashboard's default SLAs) spoils the conversation.
SLOW_SECONDS: dict[Channel, float] = {
    Channel.MESSAGING: 3_600, Channel.SOCIAL: 3_600, Channel.FORUM: 86_400, Channel.EMAIL: 86_400,
    Channel.HELPDESK: 86_400,
}  # fmt: skip
DEFAULT_SLOW_SECONDS = 300.0
#: After a spoilt (slow or unanswered) conversation a customer answers a survey this often,
#: and is gone for good this often; after a good one, rarely.
SPOILT_SURVEY_SHARE = 0.6
SPOILT_LOSS_SHARE = 0.35
LOSS_SHARE = 0.01
#: Ticket categories and priorities with how common each is; during an incident the
#: incident's category takes most of a surge of new tickets.
CATEGORIES: dict[str, float] = {"billing": 30, "delivery": 25, "returns": 15, "login": 12, "account": 10}
PRIORITIES: dict[str, float] = {"low": 20, "normal": 55, "high": 20, "urgent": 5}
INCIDENT_CATEGORY = "login"
#: Social networks the brand's pages are on, with their share of social conversations.
NETWORKS: dict[str, float] = {"facebook": 60, "instagram": 30, "x": 10}
#: During an incident, this share of sessions become tickets of the incident's category.
INCIDENT_SURGE = 0.12

Step = tuple[float, dict[str, Any]]


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = 7
    customers: int = 1000
    #: Mean session starts per simulated second.
    sessions_per_second: float = 40.0
    #: Share of records emitted by `raw_records` that are deliberately invalid.
    invalid_share: float = 0.0
    #: Part of every event and conversation id: runs with different labels never share
    #: an id (a restarted demo must not redeliver the ids of the last one).
    run: str = ""
    #: An incident (say, a broken login) from this instant: a surge of tickets in one category.
    incident_at: datetime | None = None
    incident_days: float = 4.0
    #: Sessions follow the hour of the day and the day of the week (`HOURLY_SHAPE`) instead
    #: of arriving at one rate around the clock.
    rhythm: bool = False


def busyness(moment: datetime) -> float:
    """How busy `moment` is beside the week's mean (1.0), with `SimulatorConfig.rhythm`."""
    day = moment.weekday()
    weekday = 1.0 if day < 5 else WEEKEND_SHARE[day - 5]
    return HOURLY_SHAPE[moment.hour] * weekday / _WEEK_MEAN


class Simulator:
    def __init__(self, config: SimulatorConfig, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.config = config
        self.start = start
        self._random = random.Random(config.seed)
        self._queue: list[tuple[float, int, dict[str, Any]]] = []
        self._sequence = 0
        self._sessions = 0
        self._emitted = 0
        self._next_session_at = 0.0
        self._label = f"{config.seed}-{config.run}" if config.run else str(config.seed)
        self._journeys = list(JOURNEYS)
        self._journey_weights = list(JOURNEYS.values())
        self._traits: dict[str, Traits] = {}
        self._current: Traits | None = None
        #: Customers gone for good after a bad experience (they churn).
        self._lost: set[str] = set()
        self._customer_now = ""
        self._incident: tuple[float, float] | None = None
        if config.incident_at is not None:
            begins = (config.incident_at - start).total_seconds()
            self._incident = (begins, begins + config.incident_days * 86400)

    # -- public -------------------------------------------------------------------

    def events(self, limit: int | None = None) -> Iterator[TouchpointEvent]:
        """Touchpoints in `occurred_at` order, forever or up to `limit`."""
        emitted = 0
        while limit is None or emitted < limit:
            while not self._queue or self._next_session_at <= self._queue[0][0]:
                self._start_session(self._next_session_at)
                self._next_session_at = self._after(self._next_session_at)
            at, _, fields = heapq.heappop(self._queue)
            yield self._event(at, fields)
            emitted += 1

    def records(self, limit: int | None = None) -> Iterator[tuple[TouchpointEvent, bytes]]:
        """(event, value to publish), with `invalid_share` of the values broken on purpose."""
        for event in self.events(limit):
            value = event.model_dump_json().encode()
            if self.config.invalid_share and self._random.random() < self.config.invalid_share:
                value = self._break(event)
            yield event, value

    # -- sessions -------------------------------------------------------------------

    def _after(self, at: float) -> float:
        """The next session start after `at`: a Poisson process, with `rhythm` thinned to
        the hour's and the weekday's share of the busiest rate."""
        rate = self.config.sessions_per_second
        if not self.config.rhythm:
            return at + self._random.expovariate(rate)
        peak = max(HOURLY_SHAPE) / _WEEK_MEAN
        while True:
            at += self._random.expovariate(rate * peak)
            if self._random.random() * peak < busyness(self.start + timedelta(seconds=at)):
                return at

    def _customer(self) -> str:
        # A few customers are far more active than most (Pareto-like).
        index = min(int(self._random.paretovariate(1.2)) - 1, self.config.customers - 1)
        index = (index * 7919 + self._random.randrange(self.config.customers)) % self.config.customers
        return f"cust-{index:06d}"

    def traits(self, customer: str) -> Traits:
        """The customer's habits, the same for every run with this seed."""
        if customer not in self._traits:
            draw = random.Random(f"{self.config.seed}:{customer}")
            contact = draw.choices(list(CONTACT_PREFERENCES), list(CONTACT_PREFERENCES.values()))[0]
            browse = Channel.WEB if draw.random() < 0.7 else Channel.MOBILE_APP
            # Most people are active in the daytime of their own time zone: peaks between 06 and 22 UTC.
            self._traits[customer] = Traits(browse, contact, draw.uniform(6, 22))
        return self._traits[customer]

    def _awake_customer(self, at: float) -> str:
        hour = (self.start + timedelta(seconds=at)).hour + (self.start.minute / 60)
        customer = self._customer()
        for _ in range(20):  # the lost never come back
            if customer not in self._lost:
                break
            customer = self._customer()
        for _ in range(4):
            distance = min(
                abs(hour - self.traits(customer).peak_hour), 24 - abs(hour - self.traits(customer).peak_hour)
            )
            if self._random.random() < math.exp(-(distance**2) / (2 * RHYTHM_SIGMA_HOURS**2)):
                break
            customer = self._customer()
            if customer in self._lost:
                customer = self._customer()
        return customer

    def _start_session(self, at: float) -> None:
        self._sessions += 1
        journey = self._random.choices(self._journeys, self._journey_weights)[0]
        customer = self._awake_customer(at)
        self._current = self.traits(customer)
        self._customer_now = customer
        if (
            self._incident
            and self._incident[0] <= at < self._incident[1]
            and self._random.random() < INCIDENT_SURGE
        ):
            steps = self._conversation(
                Channel.HELPDESK, opening=Kind.TICKET_OPENED, survey="nps", category=INCIDENT_CATEGORY
            )
        else:
            steps = getattr(self, f"_journey_{journey}")()
        for offset, fields in steps:
            fields.setdefault("customer_id", customer)
            self._sequence += 1
            heapq.heappush(self._queue, (at + offset, self._sequence, fields))

    def _event(self, at: float, fields: dict[str, Any]) -> TouchpointEvent:
        occurred = self.start + timedelta(seconds=at)
        lag = timedelta(milliseconds=self._random.randint(5, 400))
        self._emitted += 1
        event_id = f"sim-{self._label}-{self._emitted:09d}"
        return TouchpointEvent(event_id=event_id, occurred_at=occurred, received_at=occurred + lag, **fields)

    def _reply_delay(self, channel: Channel) -> float:
        return self._random.lognormvariate(math.log(MEDIAN_REPLY_SECONDS[channel]), REPLY_SIGMA)

    def _conversation_id(self, channel: Channel) -> str:
        return f"{channel.value}-{self._label}-{self._sessions:08d}"

    # -- journeys: each returns (seconds after session start, event fields) ---------

    def _browse(self, channel: Channel) -> list[Step]:
        steps: list[Step] = []
        t = 0.0
        for _ in range(self._random.randint(1, 8)):
            steps.append((t, _fields(channel, Kind.PAGE_VIEW, Direction.INBOUND, Actor.CUSTOMER)))
            if self._random.random() < 0.4:
                t += self._random.uniform(1, 20)
                steps.append((t, _fields(channel, Kind.CLICK, Direction.INBOUND, Actor.CUSTOMER)))
            t += self._random.uniform(5, 90)
        if self._random.random() < 0.06:
            purchase = _fields(channel, Kind.PURCHASE, Direction.NONE, Actor.CUSTOMER)
            purchase["attributes"] = {
                "amount": f"{self._random.uniform(5, 400):.2f}",
                "currency": "EUR",
            }
            steps.append((t, purchase))
        return steps

    def _journey_browse_web(self) -> list[Step]:
        return self._browse(Channel.WEB)

    def _journey_browse_app(self) -> list[Step]:
        return self._browse(Channel.MOBILE_APP)

    def _conversation(
        self,
        channel: Channel,
        opening: Kind = Kind.MESSAGE,
        survey: str | None = None,
        category: str | None = None,
    ) -> list[Step]:
        """A conversation: the customer writes, an agent answers (slow agents slowly, some
        never), a ticket is resolved (and sometimes reopened), maybe a survey. A slow or
        unanswered conversation makes a detractor's or dissatisfied answer, and losing the
        customer for good, much more likely."""
        conversation = self._conversation_id(channel)
        agent = f"agent-{self._random.randint(1, 25):02d}"
        steps: list[Step] = []
        t = 0.0
        spoilt = False
        slow_after = SLOW_SECONDS.get(channel, DEFAULT_SLOW_SECONDS)
        if channel is Channel.CHAT and self._random.random() < 0.5:
            greeting = _fields(channel, Kind.MESSAGE, Direction.OUTBOUND, Actor.BOT, conversation)
            steps.append((t, greeting))
            t += self._random.uniform(2, 30)
        turns = self._random.randint(1, 4)
        for turn in range(turns):
            kind = opening if turn == 0 else Kind.MESSAGE
            message = _fields(channel, kind, Direction.INBOUND, Actor.CUSTOMER, conversation)
            if kind is Kind.TICKET_OPENED:
                message["attributes"] = {
                    "category": category
                    or self._random.choices(list(CATEGORIES), list(CATEGORIES.values()))[0],
                    "priority": self._random.choices(list(PRIORITIES), list(PRIORITIES.values()))[0],
                }
            steps.append((t, message))
            if self._random.random() < 0.3:  # a follow-up before the agent answers
                t += self._random.uniform(5, 60)
                steps.append(
                    (t, _fields(channel, Kind.MESSAGE, Direction.INBOUND, Actor.CUSTOMER, conversation))
                )
            if self._random.random() < UNANSWERED_SHARE:
                spoilt = True
                break
            delay = self._reply_delay(channel) * (SLOW_FACTOR if agent in SLOW_AGENTS else 1.0)
            spoilt = spoilt or delay > slow_after
            t += delay
            reply = _fields(channel, Kind.MESSAGE, Direction.OUTBOUND, Actor.AGENT, conversation)
            reply["agent_id"] = agent
            steps.append((t, reply))
            t += self._random.uniform(10, 600)
            if turn == turns - 1 and opening is Kind.TICKET_OPENED:
                resolved = _fields(channel, Kind.TICKET_RESOLVED, Direction.NONE, Actor.AGENT, conversation)
                resolved["agent_id"] = agent
                steps.append((t, resolved))
                if self._random.random() < 0.1:  # not solved after all: the customer writes again
                    t += self._random.uniform(600, 86_400)
                    steps.append(
                        (t, _fields(channel, Kind.MESSAGE, Direction.INBOUND, Actor.CUSTOMER, conversation))
                    )
                    t += self._reply_delay(channel)
                    steps.append((t, resolved | {}))
        team = TEAMS.get(channel)
        if team is not None:
            for _, fields in steps:
                fields["team_id"] = team
        if survey and self._random.random() < (SPOILT_SURVEY_SHARE if spoilt else 0.35):
            t += self._random.uniform(60, 3600)
            steps.append((t, self._survey(channel, conversation, survey, spoilt=spoilt)))
        if self._random.random() < (SPOILT_LOSS_SHARE if spoilt else LOSS_SHARE):
            self._lost.add(self._customer_now)
        if channel is Channel.SOCIAL:  # public comments and replies on one network's page
            network = self._random.choices(list(NETWORKS), list(NETWORKS.values()))[0]
            for _, fields in steps:
                fields["attributes"] = {**fields.get("attributes", {}), "network": network}
        return steps

    def _survey(
        self, channel: Channel, conversation: str, survey_type: str, *, spoilt: bool = False
    ) -> dict[str, Any]:
        fields = _fields(channel, Kind.SURVEY_RESPONSE, Direction.INBOUND, Actor.CUSTOMER, conversation)
        if survey_type == "nps":
            weights = (
                [12, 10, 10, 10, 10, 10, 8, 8, 8, 7, 7] if spoilt else [2, 1, 1, 2, 2, 4, 5, 9, 14, 25, 35]
            )
            score = self._random.choices(range(11), weights)[0]
        else:
            weights = [35, 30, 15, 12, 8] if spoilt else [5, 6, 12, 37, 40]
            score = self._random.choices(range(1, 6), weights)[0]
        fields["survey"] = {"type": survey_type, "score": score}
        return fields

    def _journey_chat(self) -> list[Step]:
        return self._conversation(Channel.CHAT, survey="csat")

    def _journey_email(self) -> list[Step]:
        return self._conversation(Channel.EMAIL, survey="csat")

    def _journey_helpdesk(self) -> list[Step]:
        return self._conversation(Channel.HELPDESK, opening=Kind.TICKET_OPENED, survey="nps")

    def _journey_messaging(self) -> list[Step]:
        return self._conversation(Channel.MESSAGING, survey="csat")

    def _journey_social(self) -> list[Step]:
        return self._conversation(Channel.SOCIAL)

    def _journey_forum(self) -> list[Step]:
        return self._conversation(Channel.FORUM)

    def _journey_phone(self) -> list[Step]:
        return self._conversation(Channel.PHONE, opening=Kind.CALL, survey="nps")[:3]

    def _journey_cross_channel(self) -> list[Step]:
        """Page views, a question on the preferred contact channel, an email follow-up,
        often a purchase, then a survey: one journey across channels (gaps well under 24 h)."""
        traits = self._current or Traits(Channel.WEB, Channel.CHAT, 12.0)
        steps = self._browse(traits.browse)
        # Minutes apart rather than hours, so a live demo shows whole paths within its first half hour.
        t = (steps[-1][0] if steps else 0.0) + self._random.uniform(60, 600)
        contact = traits.contact if traits.contact is not Channel.PHONE else Channel.CHAT
        asked = self._conversation(contact)
        steps += [(t + offset, fields) for offset, fields in asked]
        t += (asked[-1][0] if asked else 0.0) + self._random.uniform(120, 1800)
        if self._random.random() < 0.6:
            follow_up = self._conversation(Channel.EMAIL)[:2]
            steps += [(t + offset, fields) for offset, fields in follow_up]
            t += (follow_up[-1][0] if follow_up else 0.0) + self._random.uniform(60, 1200)
        if self._random.random() < 0.45:
            purchase = _fields(traits.browse, Kind.PURCHASE, Direction.NONE, Actor.CUSTOMER)
            purchase["attributes"] = {"amount": f"{self._random.uniform(5, 400):.2f}", "currency": "EUR"}
            steps.append((t, purchase))
            t += self._random.uniform(60, 900)
        if self._random.random() < 0.5:
            conversation = next((f["conversation_id"] for _, f in asked if f.get("conversation_id")), None)
            steps.append((t, self._survey(contact, conversation or self._conversation_id(contact),
                                          self._random.choice(("nps", "csat")))))  # fmt: skip
        return steps

    def _journey_in_store(self) -> list[Step]:
        purchase = _fields(Channel.IN_STORE, Kind.PURCHASE, Direction.NONE, Actor.CUSTOMER)
        purchase["attributes"] = {
            "amount": f"{self._random.uniform(5, 400):.2f}",
            "currency": "EUR",
        }
        steps: list[Step] = [(0.0, purchase)]
        if self._random.random() < 0.1:
            consent = _fields(Channel.IN_STORE, Kind.CONSENT_UPDATED, Direction.INBOUND, Actor.CUSTOMER)
            consent["consent"] = {"analytics": self._random.random() < 0.5}
            steps.append((self._random.uniform(10, 60), consent))
        return steps

    # -- invalid records for the dead-letter path -------------------------------------

    def _break(self, event: TouchpointEvent) -> bytes:
        choice = self._random.randrange(4)
        data = event.model_dump(mode="json")
        if choice == 0:
            return b"{not json"
        if choice == 1:
            data["occurred_at"] = data["occurred_at"].replace("Z", "").split("+")[0]
        elif choice == 2:
            data["channel"] = "carrier_pigeon"
        else:
            del data["customer_id"]
        return json.dumps(data).encode()


def _fields(
    channel: Channel,
    kind: Kind,
    direction: Direction,
    actor: Actor,
    conversation_id: str | None = None,
) -> dict[str, Any]:
    return {
        "channel": channel,
        "kind": kind,
        "direction": direction,
        "actor": actor,
        "conversation_id": conversation_id,
    }
