"""One customer's state: conversations, engagement, consent; events folded in order."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from schemas.touchpoint import Kind, TouchpointEvent
from streams.metrics.config import MetricsConfig
from streams.metrics.engagement import Engagement, is_customer_initiated
from streams.metrics.records import ErasureProof, Outputs, SurveyRow
from streams.metrics.responses import Conversation


@dataclass
class CustomerState:
    customer_id: str
    consent: bool = True
    conversations: dict[str, Conversation] = field(default_factory=dict)
    #: The current derived conversation per channel (events without conversation_id).
    derived: dict[str, str] = field(default_factory=dict)
    engagement: Engagement | None = None

    def __post_init__(self) -> None:
        if self.engagement is None:
            self.engagement = Engagement(self.customer_id)

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
                self.derived[channel] = f"derived:{channel}:{event.event_id}"
            key = self.derived[channel]
        if key not in self.conversations:
            self.conversations[key] = Conversation(key, event.occurred_at)
        return self.conversations[key]

    def apply(self, event: TouchpointEvent, config: MetricsConfig, out: Outputs) -> None:
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
        response, waiting = self.conversation_for(event, config).apply(event, config)
        if response is not None:
            out.responses.append(response)
        if waiting is not None:
            out.waiting.append(waiting)
        if event.survey is not None:
            out.surveys.append(
                SurveyRow(event.event_id, event.customer_id, event.channel.value, event.survey.type,
                          event.survey.score, event.conversation_id, event.occurred_at)
            )  # fmt: skip
        if is_customer_initiated(event):
            assert self.engagement is not None
            changes, row = self.engagement.apply(event, config)
            out.changes += changes
            out.engagement.append(row)

    def advance(self, horizon: datetime, config: MetricsConfig, out: Outputs) -> None:
        """Results reach `horizon`: level drops from decay alone before it are final."""
        assert self.engagement is not None
        changes, rows = self.engagement.decay_until(horizon, config)
        out.changes += changes
        out.engagement += rows

    def erase(self, event: TouchpointEvent, out: Outputs) -> None:
        """Forget everything; rows already emitted in this step are withdrawn, earlier
        ones are deleted by the sink (`Outputs.erased_customers`)."""
        mine = self.customer_id
        out.responses = [row for row in out.responses if row.customer_id != mine]
        out.waiting = [row for row in out.waiting if row.customer_id != mine]
        out.engagement = [row for row in out.engagement if row.customer_id != mine]
        out.changes = [row for row in out.changes if row.customer_id != mine]
        out.surveys = [row for row in out.surveys if row.customer_id != mine]
        self.conversations.clear()
        self.derived.clear()
        self.consent = True
        self.engagement = Engagement(self.customer_id)
        out.erasures.append(ErasureProof(event.event_id, event.occurred_at))
        out.erased_customers.append(self.customer_id)
