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
from typing import Any

from schemas.touchpoint import TouchpointEvent
from streams.metrics.config import MetricsConfig
from streams.metrics.customer import CustomerState
from streams.metrics.records import LateEvent, Outputs, order_key
from streams.metrics.state import record_from_dict, record_to_dict


class Engine:
    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self.customers: dict[str, CustomerState] = {}
        self.pending: dict[str, list[TouchpointEvent]] = {}
        #: event_id -> occurred_at, per customer, within the dedup window.
        self.seen: dict[str, dict[str, datetime]] = {}
        #: The latest occurred_at among each customer's accepted (not late) events.
        self.latest: dict[str, datetime] = {}
        self.watermark: datetime | None = None
        #: Customers whose record changed in the last `process` call: write these back.
        self.touched: set[str] = set()

    @property
    def horizon(self) -> datetime | None:
        return None if self.watermark is None else self.watermark - self.config.grace

    def process(self, events: Iterable[TouchpointEvent]) -> Outputs:
        """Take a batch in arrival order; return what became final."""
        out = Outputs()
        self.touched = set()
        for event in events:
            self.touched.add(event.customer_id)
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
            latest = self.latest.get(event.customer_id)
            if latest is None or event.occurred_at > latest:
                self.latest[event.customer_id] = event.occurred_at
            if self.watermark is None or event.occurred_at > self.watermark:
                self.watermark = event.occurred_at
        if self.horizon is not None:
            self.release(self.horizon, out)
        return out

    def release(self, horizon: datetime, out: Outputs) -> None:
        """Fold every pending event before `horizon` in, in order; then decay up to it."""
        # Customers in a fixed order, so a step's outputs do not depend on this engine's history.
        for customer_id in sorted(self.pending):
            waiting = sorted(self.pending[customer_id], key=order_key)
            ready = [event for event in waiting if event.occurred_at < horizon]
            if not ready:
                continue
            state = self.customers.setdefault(customer_id, CustomerState(customer_id))
            self.touched.add(customer_id)
            for event in ready:
                state.apply(event, self.config, out)
            rest = waiting[len(ready) :]
            if rest:
                self.pending[customer_id] = rest
            else:
                del self.pending[customer_id]
        for customer_id, state in sorted(self.customers.items()):
            before = len(out.changes)
            state.advance(horizon, self.config, out)
            if len(out.changes) != before:
                self.touched.add(customer_id)
        self._forget(horizon)

    def _forget(self, horizon: datetime) -> None:
        oldest = horizon - self.config.dedup_window
        for customer_id, seen in self.seen.items():
            if len(seen) > 64:
                kept = {key: at for key, at in seen.items() if at >= oldest}
                if len(kept) != len(seen):
                    self.seen[customer_id] = kept
                    self.touched.add(customer_id)

    def export(self, customer_id: str) -> dict[str, Any]:
        """The customer's whole record (JSON-able), for a changelog-backed table."""
        return record_to_dict(
            self.customers.get(customer_id),
            self.pending.get(customer_id, []),
            self.seen.get(customer_id, {}),
            self.latest.get(customer_id),
            customer_id,
        )

    def restore(self, records: Iterable[dict[str, Any]]) -> None:
        """Load customers' records (a partition's table contents) after a restart."""
        for record in records:
            customer_id = record["customer_id"]
            state, pending, seen, latest = record_from_dict(record)
            if state is not None:
                self.customers[customer_id] = state
            if pending:
                self.pending[customer_id] = pending
            self.seen[customer_id] = seen
            if latest is not None:
                self.latest[customer_id] = latest
                if self.watermark is None or latest > self.watermark:
                    self.watermark = latest
