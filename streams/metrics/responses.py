"""Conversations and response times (SPEC §5 "Conversation", "Response time", "Waiting queue").

A conversation holds the time of its earliest unanswered customer message. A reply (an
outbound message by an agent, or another configured actor) answers every waiting
message at once and yields one response record: reply time - earliest unanswered
message. The first record of a conversation is its first response.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from touchstream.schemas.touchpoint import Channel, Direction, TouchpointEvent
from touchstream.streams.metrics.config import CUSTOMER_MESSAGE_KINDS, MetricsConfig
from touchstream.streams.metrics.records import ResponseRecord, WaitingRow


def is_customer_message(event: TouchpointEvent) -> bool:
    return event.direction is Direction.INBOUND and event.kind in CUSTOMER_MESSAGE_KINDS


def is_reply(event: TouchpointEvent, config: MetricsConfig) -> bool:
    return event.direction is Direction.OUTBOUND and event.actor in config.reply_actors


@dataclass
class Conversation:
    conversation_id: str
    last_event_at: datetime
    #: The earliest unanswered customer message, and the channel it came on.
    waiting_since: datetime | None = None
    waiting_channel: str | None = None
    responded: bool = False
    #: When the waiting state last changed (a first unanswered message, or a reply).
    changed_at: datetime | None = None

    def apply(
        self, event: TouchpointEvent, config: MetricsConfig
    ) -> tuple[ResponseRecord | None, WaitingRow | None]:
        """Fold one event in (events arrive here in order); the record and waiting change it makes."""
        self.last_event_at = event.occurred_at
        if is_customer_message(event):
            if self.waiting_since is not None:
                return None, None
            self.waiting_since, self.waiting_channel = event.occurred_at, event.channel.value
            self.changed_at = event.occurred_at
            return None, self.row(event.customer_id)
        if not is_reply(event, config) or self.waiting_since is None:
            return None, None
        channel = self.waiting_channel or event.channel.value
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
                Channel(channel), self.waiting_since, event.occurred_at
            ),
        )
        self.responded, self.waiting_since, self.waiting_channel = True, None, channel
        self.changed_at = event.occurred_at
        return record, self.row(event.customer_id)

    def copy(self) -> Conversation:
        return Conversation(
            self.conversation_id,
            self.last_event_at,
            self.waiting_since,
            self.waiting_channel,
            self.responded,
            self.changed_at,
        )

    def row(self, customer_id: str) -> WaitingRow | None:
        """The conversation's waiting row; None before its first customer message."""
        if self.changed_at is None:
            return None
        return WaitingRow(
            conversation_id=self.conversation_id,
            customer_id=customer_id,
            channel=self.waiting_channel or "",
            waiting_since=self.waiting_since,
            answered=self.waiting_since is None,
            updated_at=self.changed_at,
        )
