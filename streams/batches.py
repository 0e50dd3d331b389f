"""The input topics delivered to the worker a fetch at a time instead of a record at a time.

Faust's consumer hands every fetched record to its streams one by one:
`Consumer._drain_messages` awaits `wait_first(callback(message), suspend_flow.wait())`
for each, two tasks and several event-loop passes per record, which caps any agent
near 12,000 records/s on two cores whatever the agent does (`touchstream bench
streams`, "bare Faust agent"). The worker wants its records in batches anyway.

`BatchingConsumer` is Faust's aiokafka consumer with that one loop changed: the
records of the topics an `Inbox` names are gathered per fetch and put in the inbox as
one list; records of every other topic (the tables' changelogs during recovery) take
Faust's own path. The rest stays Faust's: group membership and rebalances, the flow
control that stops deliveries during a rebalance and empties the queues (the inbox is
one of them), the read offsets and the gaps left by transaction markers, table
recovery, and the commits (at `broker_commit_interval`; `broker_commit_every` is not
honoured for the inbox's topics).

Which records are still unread is the inbox's to say (`Inbox.unread`): the consumer's
position is the fetcher's, past records fetched into the inbox but not processed yet.

The worker takes a batch with `Inbox.take`: it keeps only the records of the current
consumer generation, as Faust's streams do, and tracks them as pending, so a
rebalance waits for the batch before it commits. After writing the batch the worker
calls `Inbox.ack`; Faust commits the acknowledged offsets at its next commit. A batch
never acknowledged is never committed: the next owner of its partitions reads it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable, Mapping
from time import monotonic
from typing import Any

import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from mode.utils.queues import FlowControlQueue

from touchstream.streams import faustcompat


class Inbox:
    """Batches of records of `topics`, as fetched, in fetch order."""

    def __init__(self, app: faust.App, channel: faust.TopicT, *, max_fetches: int = 16) -> None:
        self.app = app
        self.channel = channel
        self.topics = frozenset(channel.topics)
        # Emptied by Faust's flow control when a rebalance suspends the flow, like a stream's queue.
        self.queue: FlowControlQueue[list[Message]] = FlowControlQueue(
            maxsize=max_fetches, flow_control=app.flow_control, clear_on_resume=True
        )
        #: Records of a fetch beyond the last batch's size, first in the next batch.
        self._carried: list[Message] = []
        #: When the last batch was handed out (the event loop's clock).
        self._taken_at = 0.0
        #: (topic, partition) -> the newest offset put in the queue since the assignment.
        self.delivered: dict[tuple[str, int], int] = {}

    def install(self) -> None:
        """Make `app` consume through a `BatchingConsumer` feeding this inbox; before it starts."""
        transport = Transport(self.app.conf.broker_consumer, self.app)
        transport.inbox = self
        self.app.transport = transport
        self.app.topics.add(self.channel)  # subscribed like an agent's topics
        self.app.on_partitions_revoked.connect(self._revoked)

    def _revoked(self, sender: Any, /, *args: Any, **kwargs: Any) -> None:
        self.delivered.clear()  # the queue is emptied too; the next owner reads from the commits

    async def put(self, batch: list[Message]) -> None:
        """A fetch's records of the inbox's topics, in fetch order."""
        await self.queue.put(batch)
        delivered = self.delivered
        for message in batch:
            delivered[message.topic, message.partition] = message.offset

    async def unread(
        self, partitions: Collection[tuple[str, int]], processed: Mapping[tuple[str, int], int]
    ) -> set[tuple[str, int]]:
        """The assigned `partitions` with records not processed yet, given the newest offset
        processed of each since the assignment. Unknown counts as unread: a partition not
        fetched yet (no high watermark), or with records in the inbox and none processed.
        The consumer's own position is the fetcher's: it passes records in the inbox."""
        consumer = self.app.consumer
        unread = set()
        for topic, partition in partitions:
            tp = TP(topic, partition)
            highwater = consumer.highwater(tp)
            done = processed.get((topic, partition))
            if done is not None:
                position: int | None = done + 1
            elif (topic, partition) in self.delivered:
                position = None
            else:
                position = await consumer.position(tp)
            if highwater is None or position is None or position < highwater:
                unread.add((topic, partition))
        return unread

    async def take(
        self,
        max_records: int,
        within: float,
        *,
        wait: float | None = None,
        quiet: float | None = None,
        spacing: float = 0.0,
    ) -> list[Message]:
        """Wait for records (at most `wait` seconds, if given), then gather more until
        `max_records` are in, `within` seconds have passed, or (if given) no fetch brought
        anything for `quiet` seconds and `spacing` seconds have passed since the last
        batch; at most `max_records` (the rest of a fetch opens the next batch). May be
        empty: nothing came within `wait`, or records of an earlier consumer generation
        were dropped here.

        `quiet` keeps light traffic fast: a lone event is written once the fetches after
        it come back empty, instead of waiting out `within`; `spacing` bounds how many
        such small batches a trickle makes (each costs a round of inserts); a steady
        stream still fills batches for up to `within`."""
        loop = asyncio.get_running_loop()
        # `within` counts from the batch's first record: records that came while the last
        # batch was being written have waited since it was handed out.
        started = loop.time()
        waiting = bool(self._carried) or not self.queue.empty()
        if self._carried:
            records = self._carried
        else:
            try:
                records = list(await asyncio.wait_for(self.queue.get(), wait))
            except TimeoutError:
                return []
        self._carried = []
        deadline = (max(self._taken_at, started - within) if waiting else loop.time()) + within
        while len(records) < max_records:
            if not self.queue.empty():
                records.extend(self.queue.get_nowait())
                continue
            now = loop.time()
            remaining = deadline - now
            if remaining <= 0:
                break
            spaced = now - self._taken_at >= spacing
            try:
                gap = (
                    remaining
                    if quiet is None
                    else min(remaining, quiet if spaced else self._taken_at + spacing - now)
                )
                records.extend(await asyncio.wait_for(self.queue.get(), gap))
            except TimeoutError:
                if spaced or quiet is None:
                    break
        self._taken_at = loop.time()
        records, self._carried = records[:max_records], records[max_records:]
        return self._current(records)

    def _current(self, records: list[Message]) -> list[Message]:
        """The records still this worker's to process, tracked as pending acknowledgement."""
        app = self.app
        if not app.flow_control.is_active():  # a rebalance: these are read again from the commits
            self._carried = []
            return []
        generation = app.consumer_generation_id
        pending = faustcompat.unacked(app.consumer)
        kept = []
        for message in records:
            if message.generation_id == generation:
                message.tracked = True
                pending.add(message)
                kept.append(message)
        inbound = app.monitor.stream_inbound_time
        now = monotonic()
        for tp in {message.tp for message in kept}:
            inbound[tp] = now  # what a stream's sensor records; Faust's livelock check reads it
        return kept

    def abandon(self, records: Iterable[Message]) -> None:
        """The records will not be written here: stop tracking them, unacknowledged, so a
        shutdown does not wait for them (Faust's `wait_empty`) and their offsets are not
        committed; the next owner of their partitions reads them again."""
        pending = faustcompat.unacked(self.app.consumer)
        for message in records:
            pending.discard(message)

    def ack(self, records: Iterable[Message]) -> None:
        """The records are processed and written: their offsets may be committed."""
        ack = self.app.consumer.ack
        for message in records:
            ack(message)


class BatchingConsumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer, delivering the inbox's topics a fetch at a time (its
    private members through `streams.faustcompat`, which checks them at start)."""

    transport: Transport

    async def _drain_messages(self, fetcher: Any) -> None:  # the loop of Faust's own, batched
        inbox = self.transport.inbox
        callback = self.callback
        consumer_should_stop = faustcompat.stopped(self)
        fetcher_should_stop = faustcompat.stopped(fetcher)
        read_offset = faustcompat.read_offsets(self)
        acks_enabled_for = self.app.topics.acks_enabled_for
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched = self.getmany(timeout=1.0)
                await self.sleep(0)
                batch: list[Message] = []
                if not self.should_stop:
                    async for tp, message in fetched:
                        offset = message.offset
                        last = read_offset[tp]
                        if last is not None and offset < last:
                            continue  # read before a seek back: Faust drops these too
                        if last and offset - last > 1 and acks_enabled_for(message.topic):
                            await faustcompat.add_gap(self, tp, last + 1, offset)
                        if message.topic in inbox.topics:
                            batch.append(message)
                        else:
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        read_offset[tp] = offset
                if batch:
                    await self.wait_first(inbox.put(batch), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class Transport(faust_aiokafka.Transport):
    Consumer = BatchingConsumer
    inbox: Inbox
