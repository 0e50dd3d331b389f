"""Publishing events to Kafka: idempotent, acknowledged only once Kafka has every event."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, Message, Producer

from schemas.codec import encode
from schemas.topics import DEFAULT_PREFIX, input_topic
from schemas.touchpoint import TouchpointEvent
from touchstream.errors import BrokerError
from touchstream.kafka import producer_config


@dataclass
class Delivery:
    """Outcome of one `publish` call: how many Kafka acknowledged and what failed."""

    delivered: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class Publisher:
    """Publishes TouchpointEvents to `touchpoints.<channel>`, keyed by `customer_id`.

    >>> with Publisher("127.0.0.1:9092") as publisher:   # doctest: +SKIP
    ...     publisher.publish(events)
    """

    def __init__(self, bootstrap: str, *, prefix: str = DEFAULT_PREFIX, **config: object) -> None:
        self.prefix = prefix
        self._producer = Producer(producer_config(bootstrap, **config))

    def send_raw(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        delivery: Delivery,
        *,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        def report(error: KafkaError | None, _message: Message) -> None:
            if error is None:
                delivery.delivered += 1
            else:
                delivery.errors.append(f"{topic}: {error.str()}")

        wire: list[tuple[str, str | bytes | None]] = [(name, data) for name, data in headers]
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=wire, on_delivery=report)
                break
            except BufferError:  # local queue full: serve delivery reports, then retry
                self._producer.poll(0.1)
        self._producer.poll(0)

    def publish(self, events: Iterable[TouchpointEvent], *, timeout: float = 30.0) -> Delivery:
        """Send `events` and wait until Kafka has acknowledged all of them (or `timeout`)."""
        delivery = Delivery()
        sent = 0
        for event in events:
            topic = input_topic(event.channel, self.prefix)
            self.send_raw(topic, event.customer_id.encode(), encode(event), delivery)
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
        """Deliver what is queued, then release the client's connections and threads."""
        self._producer.flush(timeout)
        self._producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
