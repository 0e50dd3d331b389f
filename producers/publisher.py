"""Publishing events to Kafka: idempotent, acknowledged only once Kafka has every event.

The Python producer API for systems that publish directly:

    from touchstream.producers import publish
    publish(events, bootstrap="kafka:9092")    # returns once Kafka has acknowledged all

`Publisher` (blocking, batches, replay and ingest) and `AsyncPublisher` (the collector)
share `route`: every event goes to `touchpoints.<channel>`, keyed by `customer_id`,
through an idempotent confluent-kafka producer with delivery reports.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from touchstream.schemas.codec import encode
from touchstream.schemas.errors import BrokerError
from touchstream.schemas.topics import DEFAULT_PREFIX, input_topic
from touchstream.schemas.touchpoint import TouchpointEvent


def producer_config(bootstrap: str, **overrides: object) -> dict[str, object]:
    """Idempotent, acks=all: an event is acknowledged only once Kafka has it, exactly once."""
    return {
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        # Java-compatible key hashing (murmur2), as aiokafka, Faust and the Java clients
        # use: a customer's key lands on the same partition whoever produces it, and
        # Faust tables partitioned by key (use_partitioner) line up with the input topics.
        # librdkafka's default (CRC32) agrees with murmur2 on about a quarter of keys.
        "partitioner": "murmur2_random",
        "log_level": 3,
        **overrides,
    }


def destination(event: TouchpointEvent, prefix: str = DEFAULT_PREFIX) -> tuple[str, bytes]:
    """(topic, key) for an event: its channel's topic, keyed by customer (SPEC §3)."""
    return input_topic(event.channel, prefix), event.customer_id.encode()


def route(event: TouchpointEvent, prefix: str = DEFAULT_PREFIX) -> tuple[str, bytes, bytes]:
    """(topic, key, value) for an event: `destination` and its canonical JSON."""
    return *destination(event, prefix), encode(event)


def publish(
    events: Iterable[TouchpointEvent], *, bootstrap: str, prefix: str = DEFAULT_PREFIX, timeout: float = 30.0
) -> int:
    """Publish `events` and wait for Kafka's acknowledgement of every one; returns how many.

    Raises `BrokerError` when Kafka refuses or does not acknowledge any of them within
    `timeout`; publishing again is safe (`event_id` makes redelivery idempotent).
    """
    with Publisher(bootstrap, prefix=prefix, **{"message.timeout.ms": int(timeout * 1000)}) as publisher:
        delivery = publisher.publish(events, timeout=timeout)
    if delivery.errors:
        raise BrokerError(f"Kafka did not acknowledge {len(delivery.errors)} events: {delivery.errors[0]}")
    return delivery.delivered


@dataclass
class Delivery:
    """Outcome of one `publish` call: how many Kafka acknowledged and what failed."""

    delivered: int = 0
    errors: list[str] = field(default_factory=list)
    #: The newest acknowledged offset per (topic, partition).
    newest: dict[tuple[str, int], int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        """The delivery report of one message (the producer's `on_delivery`)."""
        if error is None:
            self.delivered += 1
            where, offset = (message.topic() or "", message.partition() or 0), message.offset() or 0
            if offset > self.newest.get(where, -1):
                self.newest[where] = offset
        else:
            self.errors.append(f"{message.topic()}: {error.str()}")


#: `Publisher.send_raw` serves delivery reports once per this many messages (each call
#: costs about as much as a `produce`); `wait` serves the rest.
POLL_EVERY = 500
#: librdkafka's "unassigned partition": the producer's partitioner picks it from the key.
PARTITION_BY_KEY = -1


class Publisher:
    """Publishes TouchpointEvents to `touchpoints.<channel>`, keyed by `customer_id`.

    >>> with Publisher("127.0.0.1:9092") as publisher:   # doctest: +SKIP
    ...     publisher.publish(events)
    """

    def __init__(self, bootstrap: str, *, prefix: str = DEFAULT_PREFIX, **config: object) -> None:
        self.prefix = prefix
        self._producer = Producer(producer_config(bootstrap, **config))
        #: Messages sent since delivery reports were last served.
        self._unpolled = 0

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        delivery: Delivery,
        *,
        headers: Sequence[tuple[str, bytes]] = (),
        partition: int = PARTITION_BY_KEY,
    ) -> None:
        """Send one record (a value of None is a tombstone), to `partition` if given."""
        wire: list[tuple[str, str | bytes | None]] | None = list(headers) if headers else None
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, headers=wire, on_delivery=delivery, partition=partition
                )
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._producer.poll(0.1)
        self._unpolled += 1
        if self._unpolled >= POLL_EVERY:
            self._unpolled = 0
            self._producer.poll(0)

    def publish(self, events: Iterable[TouchpointEvent], *, timeout: float = 30.0) -> Delivery:
        """Send `events` and wait until Kafka has acknowledged all of them (or `timeout`)."""
        delivery = Delivery()
        sent = 0
        for event in events:
            self.send_raw(*route(event, self.prefix), delivery)
            sent += 1
        self.wait(delivery, sent, timeout)
        return delivery

    def wait(self, delivery: Delivery, sent: int, timeout: float) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise BrokerError(f"Kafka did not acknowledge {remaining} of {sent} events in {timeout:.0f}s")
        if len(delivery.errors) + delivery.delivered < sent:
            raise BrokerError("Kafka delivery reports missing after flush")

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (for up to `timeout`), then release connections and threads.

        Whatever Kafka has not acknowledged by then is purged, so closing never hangs on an
        unreachable broker; `publish`/`wait` have already reported those events as failed.
        """
        if self._producer.flush(timeout):
            self._producer.purge()
            self._producer.flush(0)
        self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncPublisher:
    """Publishing for asyncio servers: `await publish(events)` returns once Kafka has them all.

    One confluent-kafka producer, served by a background thread that polls delivery
    reports and hands each to the event loop. Messages Kafka has not acknowledged
    within `timeout` fail (librdkafka's `message.timeout.ms`), so a caller is never
    left hanging when Kafka is unreachable; it gets a `BrokerError` and can answer 503.
    """

    def __init__(self, bootstrap: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = 10.0) -> None:
        self.prefix = prefix
        self.timeout = timeout
        self._producer = Producer(producer_config(bootstrap, **{"message.timeout.ms": int(timeout * 1000)}))
        self._stopping = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="publisher-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(0.1)

    async def publish(self, events: Sequence[TouchpointEvent]) -> None:
        loop = asyncio.get_running_loop()
        pending: list[asyncio.Future[None]] = []
        for event in events:
            future: asyncio.Future[None] = loop.create_future()
            pending.append(future)
            self._produce(*route(event, self.prefix), _settle(loop, future))
        outcomes = await asyncio.gather(*pending, return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            raise BrokerError(
                f"Kafka did not acknowledge {len(failures)} of {len(events)} events: {failures[0]}"
            )

    def _produce(self, topic: str, key: bytes, value: bytes, report: Callable[..., None]) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=report)
                return
            except BufferError:  # local queue full: the poll thread is draining it
                time.sleep(0.01)

    def close(self, timeout: float = 10.0) -> None:
        self._producer.flush(timeout)
        self._stopping.set()
        self._poller.join(timeout=5)
        self._producer.close()


def _settle(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> Callable[..., None]:
    """A delivery callback (runs on the poll thread) that resolves `future` on its loop."""

    def resolve(error: KafkaError | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(BrokerError(error.str()))

    def report(error: KafkaError | None, _message: Message) -> None:
        loop.call_soon_threadsafe(resolve, error)

    return report
