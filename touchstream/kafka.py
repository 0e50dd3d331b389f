"""Kafka plumbing for the wiring: explicit topic creation (SPEC §3)."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from touchstream.schemas.errors import BrokerError, ConfigError


def ensure_topics(
    bootstrap: str, topics: Iterable[str], *, partitions: int, replication_factor: int = 1
) -> list[str]:
    """Create the missing topics with `partitions` partitions; return the ones created.

    Existing topics must already have `partitions` partitions: SPEC §3 needs every
    input topic to have the same count so one customer's events meet in one partition.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        existing = admin.list_topics(timeout=10).topics
    except KafkaException as error:
        raise BrokerError(f"cannot list topics at {bootstrap}: {error}") from error
    wanted = list(topics)
    mismatched = {
        name: len(existing[name].partitions)
        for name in wanted
        if name in existing and len(existing[name].partitions) != partitions
    }
    if mismatched:
        found = ", ".join(f"{name} has {count}" for name, count in sorted(mismatched.items()))
        raise ConfigError(
            f"topics exist with a different partition count than the configured {partitions}: {found}"
        )
    missing = [name for name in wanted if name not in existing]
    if not missing:
        return []
    futures = admin.create_topics(
        [NewTopic(name, partitions, replication_factor) for name in missing], operation_timeout=30
    )
    for name, future in futures.items():
        try:
            future.result(timeout=30)
        except KafkaException as error:
            if error.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name}: {error}") from error
    return missing
