"""The contract: the touchpoint event model and the Kafka topic names."""

from touchstream.schemas.topics import all_topics, dead_letter_topic, input_topic, input_topics
from touchstream.schemas.touchpoint import (
    SCHEMA_VERSION,
    Actor,
    Channel,
    Consent,
    Direction,
    Kind,
    Survey,
    TouchpointEvent,
)

__all__ = [
    "SCHEMA_VERSION",
    "Actor",
    "Channel",
    "Consent",
    "Direction",
    "Kind",
    "Survey",
    "TouchpointEvent",
    "all_topics",
    "dead_letter_topic",
    "input_topic",
    "input_topics",
]
