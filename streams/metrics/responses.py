"""Conversations, their status and response times (SPEC §5 "Conversation", "Response
time", "Waiting queue", "Conversation status").

A conversation holds the time of its earliest unanswered customer message. A reply (an
outbound message by an agent, or another configured actor) answers every waiting
message at once and yields one response record: reply time - earliest unanswered
message. The first record of a conversation is its first response.

A conversation is open, snoozed or closed; the status decides what the queue shows, not
what a reply answers. `conversation_closed` and `ticket_resolved` close it: a close
answers nothing (no response record; a customer still waiting makes it closed without
reply, and the waiting row leaves the queue with `closed_at`, unanswered). `conversation_snoozed` with
`attributes["until"]` takes it out of the queue until that event time; a customer
message or `conversation_opened` (re)opens it. With no event for its channel's
`auto_close_after` it closes at its last event + that (strictly: an event at that very
instant keeps it open), abandoned if a customer was waiting.

SLA targets (SPEC §5 "Teams and SLA policies"): a customer message starts a response
target when none is running (`first_response` until the conversation's first reply,
`next_response` after) and the conversation's resolution target if it has none yet,
under the first policy matching the conversation's team and priority then and the
message's channel. A reply ends the running response target, a close (by an event or
automatic) ends every running target: met when that is at or before `due_at`; a
response target a close ends before it is due is cancelled; a target still running
after `due_at` is breached there (a reply or close at that very instant still meets
it) and stays breached when a late reply or close ends it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from touchstream.schemas.touchpoint import Channel, Direction, Kind, TouchpointEvent, snoozed_until
from touchstream.streams.metrics.config import (
    CUSTOMER_MESSAGE_KINDS,
    DEFAULT_PRIORITY,
    STATUS_KINDS,
    MetricsConfig,
)
from touchstream.streams.metrics.records import ConversationRow, ResponseRecord, Rows, SlaEventRow, WaitingRow


def is_customer_message(event: TouchpointEvent) -> bool:
    return event.direction is Direction.INBOUND and event.kind in CUSTOMER_MESSAGE_KINDS


def is_reply(event: TouchpointEvent, config: MetricsConfig) -> bool:
    return (
        event.direction is Direction.OUTBOUND
        and event.actor in config.reply_actors
        and event.kind not in STATUS_KINDS
    )


#: Kinds that close a conversation (SPEC §5 "Conversation status").
CLOSING_KINDS = frozenset({Kind.CONVERSATION_CLOSED, Kind.TICKET_RESOLVED})


def opens(event: TouchpointEvent) -> bool:
    """Whether `event` (re)opens its conversation: a customer message or `conversation_opened`."""
    return is_customer_message(event) or event.kind is Kind.CONVERSATION_OPENED


def priority_of(event: TouchpointEvent) -> str | None:
    """The priority an event sets on its conversation: `attributes["priority"]`."""
    priority = event.attributes.get("priority") if event.attributes else None
    return priority if isinstance(priority, str) and priority else None


@dataclass
class SlaTarget:
    """One SLA target while its conversation is folded (`SlaEventRow` is its row)."""

    metric: str
    started_at: datetime
    started_by: str
    channel: str
    team_id: str | None
    priority: str
    policy: str
    target_seconds: float
    business: bool
    due_at: datetime | None
    status: str = "pending"
    ended_at: datetime | None = None
    agent_id: str | None = None
    updated_at: datetime | None = None

    @property
    def running(self) -> bool:
        return self.ended_at is None

    def shown(self) -> tuple[Any, ...]:
        """What its row shows that can change."""
        return self.status, self.ended_at, self.agent_id

    def end(self, at: datetime, agent_id: str | None, *, cancels: bool) -> None:
        """A reply or close at `at` ends it (`cancels`: a close ending a response target)."""
        if self.status == "pending":
            self.status = "cancelled" if cancels else "met"
        self.ended_at, self.agent_id = at, agent_id

    def row(self, conversation_id: str, customer_id: str) -> SlaEventRow:
        assert self.updated_at is not None
        return SlaEventRow(
            conversation_id, customer_id, self.metric, self.started_at, self.started_by, self.channel,
            self.team_id, self.priority, self.policy, self.target_seconds, self.business, self.due_at,
            self.status,
            self.ended_at if self.status == "met" else None,
            self.due_at if self.status == "breached" else None,
            self.ended_at, self.agent_id, self.updated_at,
        )  # fmt: skip

    def copy(self) -> SlaTarget:
        return replace(self)


@dataclass
class Conversation:
    """One conversation's state, folded in event order; time alone changes it too (a
    snooze ending, the automatic close), at instants `next_change` names and `advance`
    applies, as decay does for engagement levels."""

    conversation_id: str
    last_event_at: datetime
    #: The earliest unanswered customer message, and the channel it came on.
    waiting_since: datetime | None = None
    waiting_channel: str | None = None
    responded: bool = False
    #: When the waiting row last changed.
    changed_at: datetime | None = None
    status: str = "open"
    closed_at: datetime | None = None
    snoozed_until: datetime | None = None
    abandoned: bool = False
    closed_without_reply: bool = False
    #: The channel of its first event, and that event's time.
    channel: str = ""
    opened_at: datetime | None = None
    team_id: str | None = None
    last_agent_id: str | None = None
    #: When the conversation row last changed.
    updated_at: datetime | None = None
    #: The latest `attributes["priority"]` seen in it.
    priority: str = DEFAULT_PRIORITY
    #: Opening hours from its first event to its latest close (`ConversationRow`).
    resolution_business_seconds: float | None = None
    #: Its resolution target and its response targets (those that ended before the horizon
    #: are forgotten, `prune`).
    targets: list[SlaTarget] = field(default_factory=list)
    #: The earliest `due_at` of its pending targets (`refresh_due` keeps it).
    next_due: datetime | None = None

    def _status_change(self, config: MetricsConfig) -> datetime | None:
        """The next instant time alone changes its status: a snooze ending, or the automatic close."""
        if self.status == "closed" or not self.channel:  # no channel: restored from before statuses
            return None
        deadline = self.last_event_at + config.auto_close_for(self.channel)
        if self.status == "snoozed" and self.snoozed_until is not None:
            return min(deadline, self.snoozed_until)
        return deadline

    def refresh_due(self) -> None:
        """After a target started, ended or was breached: the next due instant."""
        dues = [t.due_at for t in self.targets if t.status == "pending" and t.due_at is not None]
        self.next_due = min(dues) if dues else None

    def next_change(self, config: MetricsConfig) -> datetime | None:
        """The next instant time alone changes it: a snooze ending, the automatic close, or
        a target falling due unmet."""
        status, due = self._status_change(config), self.next_due
        if status is None or due is None:
            return status or due
        return min(status, due)

    def advance(
        self, until: datetime, config: MetricsConfig, customer_id: str, out: Rows, *, inclusive: bool = False
    ) -> datetime | None:
        """Apply what time alone changes before `until` (or at it too, `inclusive`: a view
        evaluated at `until`, which has every event up to it); the instant of the last change."""
        last = None
        while (when := self.next_change(config)) is not None and (
            when < until or (inclusive and when == until)
        ):
            before = self._shown()
            if self._status_change(config) == when:
                if self.status == "snoozed" and self.snoozed_until is not None and self.snoozed_until <= when:
                    self.status, self.snoozed_until = "open", None
                else:
                    self._close(when, None, config, automatic=True)
            if self.next_due == when:
                for target in self.targets:  # still unmet after its due instant
                    if target.status == "pending" and target.due_at == when:
                        target.status = "breached"
                self.refresh_due()
            self._emit(before, customer_id, when, out)
            last = when
        return last

    def apply(self, event: TouchpointEvent, config: MetricsConfig, out: Rows) -> ResponseRecord | None:
        """Fold one event in (events arrive here in order, and `advance` has been applied up
        to it); its rows go to `out`, its response record is returned."""
        customer_id = event.customer_id
        before = self._shown()
        at = event.occurred_at
        if self.opened_at is None:
            self.opened_at, self.channel = at, event.channel.value
        self.last_event_at = at
        if event.team_id is not None:
            self.team_id = event.team_id
        if (priority := priority_of(event)) is not None:
            self.priority = priority
        if opens(event) and self.status != "open":
            self.status, self.closed_at, self.snoozed_until = "open", None, None
            self.abandoned = self.closed_without_reply = False
            self.resolution_business_seconds = None
        record = None
        if is_customer_message(event):
            if self.waiting_since is None:
                self.waiting_since, self.waiting_channel = at, event.channel.value
            self._start_targets(event, config)
        elif is_reply(event, config):
            if event.agent_id is not None:
                self.last_agent_id = event.agent_id
            if self.waiting_since is not None:
                record = self._record(event, config)
        elif event.kind in CLOSING_KINDS and self.status != "closed":
            self._close(at, event.agent_id, config, automatic=False)
        elif event.kind is Kind.CONVERSATION_SNOOZED and self.status != "closed":
            until = snoozed_until(event)
            self.status, self.snoozed_until = ("snoozed", until) if until > at else ("open", None)
        self._emit(before, customer_id, at, out)
        return record

    def _start_targets(self, message: TouchpointEvent, config: MetricsConfig) -> None:
        """The targets a customer message starts: a response target if none is running,
        the resolution target if the conversation has none yet."""
        metrics = []
        if not any(t.running and t.metric != "resolution" for t in self.targets):
            metrics.append("next_response" if self.responded else "first_response")
        if not any(t.metric == "resolution" for t in self.targets):
            metrics.append("resolution")
        channel = message.channel.value
        policy = config.policy_for(self.team_id, self.priority, channel) if metrics else None
        if policy is None:
            return
        for metric in metrics:
            if (target := policy.target(metric)) is None:
                continue
            at = message.occurred_at
            self.targets.append(SlaTarget(
                metric, at, message.event_id, channel, self.team_id, self.priority, policy.name,
                target.total_seconds(), policy.business,
                config.due_at(policy, target, self.team_id, channel, at),
            ))  # fmt: skip
        self.refresh_due()

    def _record(self, event: TouchpointEvent, config: MetricsConfig) -> ResponseRecord:
        assert self.waiting_since is not None
        channel = self.waiting_channel or event.channel.value
        met = None
        for target in self.targets:
            if target.running and target.metric != "resolution":
                target.end(event.occurred_at, event.agent_id, cancels=False)
                met = target.status == "met"
                self.refresh_due()
        record = ResponseRecord(
            reply_event_id=event.event_id,
            conversation_id=self.conversation_id,
            customer_id=event.customer_id,
            channel=channel,
            agent_id=event.agent_id,
            response_seconds=(event.occurred_at - self.waiting_since).total_seconds(),
            is_first_response=not self.responded,
            customer_message_at=self.waiting_since,
            replied_at=event.occurred_at,
            response_business_seconds=config.business_seconds(
                Channel(channel), self.waiting_since, event.occurred_at, self.team_id
            ),
            sla_met=met,
        )
        self.responded, self.waiting_since, self.waiting_channel = True, None, channel
        return record

    def _close(self, at: datetime, agent_id: str | None, config: MetricsConfig, *, automatic: bool) -> None:
        waiting = self.waiting_since is not None
        self.status, self.closed_at, self.snoozed_until = "closed", at, None
        if self.opened_at is not None:
            self.resolution_business_seconds = config.business_seconds(
                Channel(self.channel), self.opened_at, at, self.team_id
            )
        self.abandoned, self.closed_without_reply = automatic and waiting, not automatic and waiting
        if self.targets:
            for target in self.targets:
                if target.running:
                    target.end(at, agent_id, cancels=target.metric != "resolution")
            self.refresh_due()

    def _shown(self) -> tuple[tuple[Any, ...] | None, tuple[Any, ...] | None, tuple[Any, ...]]:
        """What the waiting, the conversation and the SLA rows show, but their instants
        (None: no row): compared before and after a change, cheaper than the rows themselves.
        Targets by position: a change appends them, only `prune` (never within one) removes."""
        targets = tuple(t.shown() for t in self.targets) if self.targets else ()
        waiting = None
        if self.waiting_since is not None or self.responded:
            waiting = (self.waiting_since, self.waiting_channel, self.team_id, self.status, self.closed_at)
        if self.opened_at is None:
            return waiting, None, targets
        conversation = (self.channel, self.team_id, self.status, self.opened_at, self.closed_at,
                        self.closed_without_reply, self.abandoned, self.last_agent_id)  # fmt: skip
        return waiting, conversation, targets

    def _emit(
        self,
        before: tuple[tuple[Any, ...] | None, tuple[Any, ...] | None, tuple[Any, ...]],
        customer_id: str,
        at: datetime,
        out: Rows,
    ) -> None:
        """The rows that changed since `before` (`_shown`), as of `at`."""
        waiting, conversation, targets = self._shown()
        if waiting is not None and waiting != before[0] and (row := self._waiting(customer_id, at)):
            self.changed_at = at
            out.waiting.append(row)
        if conversation is not None and conversation != before[1] and (state := self._row(customer_id, at)):
            self.updated_at = at
            out.conversations.append(state)
        shown = before[2]
        for position, target in enumerate(self.targets):
            if position >= len(shown) or shown[position] != targets[position]:
                target.updated_at = at
                out.sla_events.append(target.row(self.conversation_id, customer_id))

    def _waiting(self, customer_id: str, at: datetime | None) -> WaitingRow | None:
        """The waiting row, as of `at`; None before the first customer message."""
        if self.waiting_since is None and not self.responded:
            return None
        return WaitingRow(
            conversation_id=self.conversation_id,
            customer_id=customer_id,
            channel=self.waiting_channel or "",
            waiting_since=self.waiting_since,
            answered=self.waiting_since is None,
            updated_at=at or self.last_event_at,
            team_id=self.team_id,
            status=self.status,
            closed_at=self.closed_at,
        )

    def _row(self, customer_id: str, at: datetime | None) -> ConversationRow | None:
        if self.opened_at is None:
            return None
        return ConversationRow(
            conversation_id=self.conversation_id,
            customer_id=customer_id,
            channel=self.channel,
            team_id=self.team_id,
            status=self.status,
            opened_at=self.opened_at,
            closed_at=self.closed_at,
            closed_without_reply=self.closed_without_reply,
            abandoned=self.abandoned,
            last_agent_id=self.last_agent_id,
            updated_at=at or self.last_event_at,
            resolution_business_seconds=self.resolution_business_seconds,
        )

    def copy(self) -> Conversation:
        return replace(self, targets=[target.copy() for target in self.targets])

    def prunable(self) -> bool:
        """Whether it holds a response target that has ended (`prune` may forget it)."""
        return len(self.targets) > 2

    def prune(self, before: datetime) -> None:
        """Forget the response targets that ended before `before`: their rows are final,
        and no event from then on can change them."""
        self.targets = [
            t for t in self.targets
            if t.metric == "resolution" or t.running or (t.updated_at is not None and t.updated_at >= before)
        ]  # fmt: skip

    def sla_row(self, customer_id: str, metric: str, started_by: str) -> SlaEventRow | None:
        for target in self.targets:
            if (target.metric, target.started_by) == (metric, started_by):
                return target.row(self.conversation_id, customer_id)
        return None

    def waiting_row(self, customer_id: str) -> WaitingRow | None:
        """The conversation's current waiting row (None before its first customer message)."""
        return self._waiting(customer_id, self.changed_at)

    def conversation_row(self, customer_id: str) -> ConversationRow | None:
        return self._row(customer_id, self.updated_at)
