"""One customer's state: conversations, engagement, consent; events folded in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from touchstream.schemas.touchpoint import Kind, TouchpointEvent
from touchstream.streams.metrics.config import MetricsConfig
from touchstream.streams.metrics.engagement import Engagement, is_customer_initiated
from touchstream.streams.metrics.records import (
    ConversationRow,
    EngagementRow,
    Erasure,
    ErasureProof,
    Rows,
    SlaEventRow,
    SurveyRow,
    WaitingRow,
)
from touchstream.streams.metrics.responses import Conversation

#: How the key of a run of events without conversation_id begins (`conversation_for`).
_DERIVED = "derived:"


@dataclass
class CustomerState:
    customer_id: str
    consent: bool = True
    conversations: dict[str, Conversation] = field(default_factory=dict)
    #: The current derived conversation per channel (events without conversation_id).
    derived: dict[str, str] = field(default_factory=dict)
    engagement: Engagement | None = None
    #: The latest erasure request folded in, by `order_key`: touchpoints before it are gone.
    erased_before: tuple[datetime, str] | None = None
    #: The latest instant time alone changed a conversation at (a snooze ending, a close).
    changed_by_time: datetime | None = None
    #: Conversations shared with the state this one was cloned from, copied on first change.
    _shared: set[str] = field(default_factory=set, repr=False, compare=False)
    #: Whether some of its conversations are kept out of the state (`Engine.retire`): only
    #: then is `dormant` asked for a conversation the state does not hold.
    retired: bool = False
    #: Reads back a conversation kept out of the state: (customer, key) to the
    #: conversation, or None if there is none.
    dormant: Callable[[str, str], Conversation | None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.engagement is None:
            self.engagement = Engagement(self.customer_id)

    def clone(self) -> CustomerState:
        """A copy to fold provisional events into; the conversations are copied lazily
        (a customer may have many, and a few events touch one or two): until then both
        states share them, and whichever changes one first copies it."""
        assert self.engagement is not None
        twin = CustomerState(self.customer_id, self.consent, dict(self.conversations), dict(self.derived),
                             self.engagement.clone(), self.erased_before, self.changed_by_time)  # fmt: skip
        twin._shared = set(self.conversations)
        twin.retired, twin.dormant = self.retired, self.dormant
        self._shared |= twin._shared
        return twin

    def mark(self) -> tuple[int, int]:
        """Identifies the engagement state: compare before and after folding events in to
        know whether it needs a new `engagement` row (only the latest one counts)."""
        assert self.engagement is not None
        return id(self.engagement), self.engagement.revision

    def engagement_row(self) -> EngagementRow | None:
        assert self.engagement is not None
        return self.engagement.row() if self.engagement.updated_at is not None else None

    def waiting_row(self, conversation_id: str) -> WaitingRow | None:
        conversation = self.conversations.get(conversation_id)
        return None if conversation is None else conversation.waiting_row(self.customer_id)

    def conversation_row(self, conversation_id: str) -> ConversationRow | None:
        conversation = self.conversations.get(conversation_id)
        return None if conversation is None else conversation.conversation_row(self.customer_id)

    def sla_row(self, conversation_id: str, metric: str, started_by: str) -> SlaEventRow | None:
        conversation = self.conversations.get(conversation_id)
        return None if conversation is None else conversation.sla_row(self.customer_id, metric, started_by)

    def next_crossing(self, config: MetricsConfig) -> datetime | None:
        """The next instant time alone changes a row: a level drop by decay, a snooze
        ending, a conversation's automatic close or an SLA target falling due."""
        assert self.engagement is not None
        found = self.engagement.next_crossing(config)
        for conversation in self.conversations.values():
            if (when := conversation.next_change(config)) is not None:
                found = when if found is None or when < found else found
        return found

    def conversation_for(self, event: TouchpointEvent, config: MetricsConfig) -> Conversation:
        """SPEC §5: the event's conversation_id, else the channel's run of events without
        one, which ends after the channel's inactivity timeout."""
        if event.conversation_id is not None:
            key = event.conversation_id
        else:
            channel = event.channel.value
            current = self.conversations.get(self.derived.get(channel, ""))
            gap = config.inactivity[event.channel]
            if current is None or event.occurred_at - current.last_event_at > gap:
                self.derived[channel] = f"{_DERIVED}{channel}:{event.event_id}"
            key = self.derived[channel]
        if key not in self.conversations:
            woken = self.dormant(self.customer_id, key) if self.retired and self.dormant is not None else None
            self.conversations[key] = woken if woken is not None else Conversation(key, event.occurred_at)
        return self._own(key)

    def retire(self, config: MetricsConfig) -> list[Conversation]:
        """Take out the conversations that only an event of their own can change again:
        closed, with nothing left for time to change, and not a channel's current run of
        events without conversation_id. Returns those to keep apart (read back by
        `dormant`): a run of events without conversation_id is dropped, since no event can
        reach it once it is not its channel's current one."""
        runs = set(self.derived.values())
        gone = [c for key, c in self.conversations.items()
                if c.status == "closed" and key not in runs and c.next_change(config) is None]  # fmt: skip
        for conversation in gone:
            del self.conversations[conversation.conversation_id]
            self._shared.discard(conversation.conversation_id)
        kept = [c for c in gone if not c.conversation_id.startswith(_DERIVED)]
        self.retired |= bool(kept)
        return kept

    def _own(self, key: str) -> Conversation:
        """Conversation `key`, copied first if it is still shared with a clone (`clone`)."""
        if key in self._shared:
            self._shared.discard(key)
            self.conversations[key] = self.conversations[key].copy()
        return self.conversations[key]

    def apply(self, event: TouchpointEvent, config: MetricsConfig, out: Rows) -> None:
        """Fold one event in; events reach here in (occurred_at, event_id) order."""
        if event.kind is Kind.ERASURE_REQUESTED:
            self.erase(event, out)
            return
        if event.kind is Kind.CONSENT_UPDATED:
            assert event.consent is not None
            self.consent = event.consent.analytics
            return
        if not self.consent:
            out.suppressed += 1
            return
        conversation = self.conversation_for(event, config)
        self._timed(conversation, event.occurred_at, config, out)
        response = conversation.apply(event, config, out)
        if response is not None:
            out.responses.append(response)
        if event.survey is not None:
            out.surveys.append(
                SurveyRow(event.event_id, event.customer_id, event.channel.value, event.survey.type,
                          event.survey.score, event.conversation_id, event.occurred_at)
            )  # fmt: skip
        if is_customer_initiated(event):
            assert self.engagement is not None
            out.changes += self.engagement.apply(event, config)

    def advance(
        self, horizon: datetime, config: MetricsConfig, out: Rows, *, inclusive: bool = False
    ) -> bool:
        """Results reach `horizon`: what time alone changes before it (level drops by
        decay, snoozes ending, automatic closes) is applied; `inclusive`, for a live view
        evaluated at `horizon`, a snooze ending or a close at that very instant too.
        Whether a conversation changed (its rows are in `out`)."""
        assert self.engagement is not None
        out.changes += self.engagement.decay_until(horizon, config)
        changed = False
        for key, conversation in self.conversations.items():
            if (when := conversation.next_change(config)) is None:
                continue
            if when < horizon or (inclusive and when == horizon):
                changed |= self._timed(self._own(key), horizon, config, out, inclusive=inclusive)
        return changed

    def prune(self, before: datetime) -> None:
        """Forget what no row can need again: the SLA targets that ended before `before`
        (the horizon, for a settled state; a live state keeps everything)."""
        for key, conversation in self.conversations.items():
            if conversation.prunable():
                self._own(key).prune(before)

    def _timed(
        self,
        conversation: Conversation,
        until: datetime,
        config: MetricsConfig,
        out: Rows,
        *,
        inclusive: bool = False,
    ) -> bool:
        """Apply to `conversation` what time alone changes before `until` (at it too,
        `inclusive`); whether anything did."""
        last = conversation.advance(until, config, self.customer_id, out, inclusive=inclusive)
        if last is not None and (self.changed_by_time is None or last > self.changed_by_time):
            self.changed_by_time = last
        return last is not None

    def erase(self, event: TouchpointEvent, out: Rows) -> None:
        """Forget everything; rows already made from this customer's earlier events are
        withdrawn, earlier ones are deleted by the sink (`Rows.erased`)."""
        out.withdraw(self.customer_id)
        self.conversations.clear()
        self.retired = False  # what was kept out of the state is gone too (`Engine.release`)
        self.derived.clear()
        self._shared.clear()
        self.consent = True
        self.engagement = Engagement(self.customer_id)
        self.erased_before = (event.occurred_at, event.event_id)
        out.erasures.append(ErasureProof(event.event_id, event.occurred_at))
        out.erased.append(Erasure(self.customer_id, self.erased_before))
