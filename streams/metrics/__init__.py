"""The pure metric core (SPEC §5): no Faust or Kafka import, tested directly.

`Engine` takes events in arrival order and emits the rows of SPEC §6; everything it
computes is a function of each customer's events sorted by (occurred_at, event_id),
so events out of order within the grace period change nothing. `reference.recompute`
is the brute-force definition the engine is checked against.
"""

from touchstream.streams.metrics.config import MetricsConfig
from touchstream.streams.metrics.engine import Engine
from touchstream.streams.metrics.records import Outputs

__all__ = ["Engine", "MetricsConfig", "Outputs"]
