"""Event time, grace and lateness: the engine that feeds customers their events in order.

The engine keeps a watermark, the latest `occurred_at` it has seen, and a horizon,
watermark - grace. Arriving events wait in their customer's buffer; once the horizon
passes them they are folded into the customer's state in (occurred_at, event_id)
order. An event that arrives with `occurred_at` before the horizon is late: it is
reported (`Outputs.late`), never folded into results already emitted. So every result
is a function of the sorted events alone, and any arrival order within the grace
period gives the same results (checked against `reference.recompute`).

One engine serves one partition: one customer's events all meet in one partition.
A redelivered event (same event_id) is counted as a duplicate and changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from schemas.touchpoint import TouchpointEvent
from streams.metrics.config import MetricsConfig
from streams.metrics.customer import CustomerState
from streams.metrics.records import LateEvent, Outputs, order_key


class Engine:
    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self.customers: dict[str, CustomerState] = {}
        self.pending: dict[str, list[TouchpointEvent]] = {}
        #: event_id -> occurred_at, per customer, within the dedup window.
        self.seen: dict[str, dict[str, datetime]] = {}
        self.watermark: datetime | None = None

    @property
    def horizon(self) -> datetime | None:
        return None if self.watermark is None else self.watermark - self.config.grace

    def process(self, events: Iterable[TouchpointEvent]) -> Outputs:
        """Take a batch in arrival order; return what became final."""
        out = Outputs()
        for event in events:
            seen = self.seen.setdefault(event.customer_id, {})
            if event.event_id in seen:
                out.duplicates += 1
                continue
            seen[event.event_id] = event.occurred_at
            horizon = self.horizon
            if horizon is not None and event.occurred_at < horizon:
                customer, channel = event.customer_id, event.channel.value
                out.late.append(LateEvent(event.event_id, customer, channel, event.occurred_at, horizon))
                continue
            self.pending.setdefault(event.customer_id, []).append(event)
            if self.watermark is None or event.occurred_at > self.watermark:
                self.watermark = event.occurred_at
        if self.horizon is not None:
            self.release(self.horizon, out)
        return out

    def release(self, horizon: datetime, out: Outputs) -> None:
        """Fold every pending event before `horizon` in, in order; then decay up to it."""
        for customer_id in list(self.pending):
            waiting = sorted(self.pending[customer_id], key=order_key)
            ready = [event for event in waiting if event.occurred_at < horizon]
            if not ready:
                continue
            state = self.customers.setdefault(customer_id, CustomerState(customer_id))
            for event in ready:
                state.apply(event, self.config, out)
            rest = waiting[len(ready) :]
            if rest:
                self.pending[customer_id] = rest
            else:
                del self.pending[customer_id]
        for state in self.customers.values():
            state.advance(horizon, self.config, out)
        self._forget(horizon)

    def _forget(self, horizon: datetime) -> None:
        oldest = horizon - self.config.dedup_window
        for customer_id, seen in self.seen.items():
            if len(seen) > 64:
                self.seen[customer_id] = {key: at for key, at in seen.items() if at >= oldest}
