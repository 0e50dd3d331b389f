"""Keeping Faust from committing the offsets of a batch that never reached the sink.

`Stream.take_events` acknowledges every buffered event when the consumer's loop body
ends, including when it ends by an exception or by cancellation at shutdown. Faust
then commits those offsets (it commits on stop and on rebalance), which would lose a
batch that ClickHouse never received. Marking the messages as already acknowledged
before that happens makes Faust's `Consumer.ack` skip them: their offsets never enter
the committable set, so the committed offset stays below the batch and the next
worker for the partition reads it again.
"""

from __future__ import annotations

from collections.abc import Iterable

from faust.types import EventT


def withhold(events: Iterable[EventT]) -> None:
    for event in events:
        event.message.acked = True
