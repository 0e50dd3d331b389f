"""Event time, grace and lateness: the engine that feeds customers their events in order.

The engine keeps a watermark per source (the latest `occurred_at` read from each input
topic) and a horizon derived from them (see `process_sources`), minus the grace.
Arriving events wait in their customer's buffer; once the horizon passes them they are
folded into the customer's state in (occurred_at, event_id) order. The horizon moves
once per batch and never back. An event that arrives with `occurred_at` before the
horizon is late: it is reported (`Outputs.late`), never folded into results already
emitted. So every result
is a function of the sorted events alone, and any arrival order within the grace
period gives the same results (checked against `reference.recompute`).

One engine serves one partition: one customer's events all meet in one partition.
A redelivered event (same event_id) is counted as a duplicate and changes nothing.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from schemas.touchpoint import TouchpointEvent
from streams.metrics.config import MetricsConfig
from streams.metrics.customer import CustomerState
from streams.metrics.records import LateEvent, Outputs, order_key
from streams.metrics.state import pending_json, record_from_dict, record_json


class Engine:
    def __init__(self, config: MetricsConfig | None = None) -> None:
        self.config = config or MetricsConfig()
        self.customers: dict[str, CustomerState] = {}
        self.pending: dict[str, list[TouchpointEvent]] = {}
        #: customer -> event_id -> the pending event's JSON, made once for every record it is in.
        self._pending_json: dict[str, dict[str, str]] = {}
        #: event_id -> occurred_at, per customer, within the dedup window.
        self.seen: dict[str, dict[str, datetime]] = {}
        #: The latest occurred_at per source (input topic) of this partition.
        self.watermarks: dict[str, datetime] = {}
        self._horizon: datetime | None = None
        #: Customers whose record changed in the last `process` call: write these back.
        self.touched: set[str] = set()
        #: (occurred_at, customer) of every pending event: a heap, so a step looks only at
        #: the customers with an event to fold in. Instants in the heaps are POSIX seconds
        #: (floats compare far faster than aware datetimes; at today's magnitudes a float
        #: still tells microseconds apart, so the order is the datetimes' order).
        self._pending_times: list[tuple[float, str]] = []
        #: (next level drop from decay alone, customer): a heap, so a step advances only
        #: the customers due before the horizon. Entries go stale when a customer's score
        #: changes; each change pushes the fresh one and stale ones are skipped.
        self._crossings: list[tuple[float, str]] = []

    @property
    def horizon(self) -> datetime | None:
        """Results are final before this instant; it never moves back."""
        return self._horizon

    def process(self, events: Iterable[TouchpointEvent]) -> Outputs:
        """A batch from one source, in arrival order; return what became final."""
        return self.process_sources(((event, "") for event in events), lagging=())

    def process_sources(
        self, events: Iterable[tuple[TouchpointEvent, str]], *, lagging: Collection[str]
    ) -> Outputs:
        """A batch in arrival order, each event with its source (its input topic).

        `lagging` names the sources that still have unread records: while one does, the
        horizon waits for it (the minimum of their watermarks), so a backlog read
        unevenly across topics does not make the slower topics' events late. With
        every source caught up, the horizon follows the newest event.
        """
        out = Outputs()
        self.touched = set()
        horizon = self._horizon
        for event, source in events:
            self.touched.add(event.customer_id)
            seen = self.seen.setdefault(event.customer_id, {})
            if event.event_id in seen:
                out.duplicates += 1
                continue
            seen[event.event_id] = event.occurred_at
            if horizon is not None and event.occurred_at < horizon:
                customer, channel = event.customer_id, event.channel.value
                out.late.append(LateEvent(event.event_id, customer, channel, event.occurred_at, horizon))
                continue
            self.pending.setdefault(event.customer_id, []).append(event)
            self._pending_json.setdefault(event.customer_id, {})[event.event_id] = pending_json(event)
            heapq.heappush(self._pending_times, (event.occurred_at.timestamp(), event.customer_id))
            mark = self.watermarks.get(source)
            if mark is None or event.occurred_at > mark:
                self.watermarks[source] = event.occurred_at
        self._advance(lagging)
        if self._horizon is not None:
            self.release(self._horizon, out)
        return out

    def _advance(self, lagging: Collection[str]) -> None:
        if not self.watermarks:
            return
        waiting_for = [source for source in lagging if source in self.watermarks]
        if any(source not in self.watermarks for source in lagging):
            return  # a source with unread records we have not seen yet: its times are unknown
        mark = min(self.watermarks[s] for s in waiting_for) if waiting_for else max(self.watermarks.values())
        candidate = mark - self.config.grace
        if self._horizon is None or candidate > self._horizon:
            self._horizon = candidate

    def export_partition(self) -> dict[str, Any]:
        """The partition's own state: horizon and per-source watermarks."""
        return {
            "horizon": self._horizon.isoformat() if self._horizon else None,
            "watermarks": {source: mark.isoformat() for source, mark in self.watermarks.items()},
        }

    def restore_partition(self, record: dict[str, Any]) -> None:
        horizon = record.get("horizon")
        self._horizon = datetime.fromisoformat(horizon) if horizon else None
        self.watermarks = {
            source: datetime.fromisoformat(mark) for source, mark in record["watermarks"].items()
        }

    def release(self, horizon: datetime, out: Outputs) -> None:
        """Fold every pending event before `horizon` in, in order; then decay up to it."""
        ready_customers: set[str] = set()
        until = horizon.timestamp()
        while self._pending_times and self._pending_times[0][0] < until:
            ready_customers.add(heapq.heappop(self._pending_times)[1])
        # Customers in a fixed order, so a step's outputs do not depend on this engine's history.
        for customer_id in sorted(ready_customers):
            if customer_id not in self.pending:
                continue
            waiting = sorted(self.pending[customer_id], key=order_key)
            ready = [event for event in waiting if event.occurred_at < horizon]
            if not ready:
                continue
            state = self.customers.setdefault(customer_id, CustomerState(customer_id))
            self.touched.add(customer_id)
            fragments = self._pending_json[customer_id]
            for event in ready:
                state.apply(event, self.config, out)
                del fragments[event.event_id]
            self._schedule(customer_id)
            rest = waiting[len(ready) :]
            if rest:
                self.pending[customer_id] = rest
            else:
                del self.pending[customer_id], self._pending_json[customer_id]
        due: set[str] = set()
        while self._crossings and self._crossings[0][0] < until:
            when, customer_id = heapq.heappop(self._crossings)
            current = self._next_crossing(customer_id)
            if current is not None and current.timestamp() == when:
                due.add(customer_id)
        for customer_id in sorted(due):
            before = len(out.changes)
            self.customers[customer_id].advance(horizon, self.config, out)
            if len(out.changes) != before:
                self.touched.add(customer_id)
            self._schedule(customer_id)
        self._forget(horizon)

    def _next_crossing(self, customer_id: str) -> datetime | None:
        state = self.customers.get(customer_id)
        if state is None or state.engagement is None:
            return None
        return state.engagement.next_crossing(self.config)

    def _schedule(self, customer_id: str) -> None:
        when = self._next_crossing(customer_id)
        if when is not None:
            heapq.heappush(self._crossings, (when.timestamp(), customer_id))

    def _forget(self, horizon: datetime) -> None:
        oldest = horizon - self.config.dedup_window
        for customer_id, seen in self.seen.items():
            if len(seen) > 64:
                kept = {key: at for key, at in seen.items() if at >= oldest}
                if len(kept) != len(seen):
                    self.seen[customer_id] = kept
                    self.touched.add(customer_id)

    def export_json(self, customer_id: str) -> bytes:
        """The customer's whole record as JSON, for a changelog-backed table."""
        return record_json(
            self.customers.get(customer_id),
            self._pending_json.get(customer_id, {}).values(),
            self.seen.get(customer_id, {}),
            customer_id,
        )

    def export(self, customer_id: str) -> dict[str, Any]:
        """The customer's whole record, parsed (what `restore` takes)."""
        return dict(json.loads(self.export_json(customer_id)))

    def restore(self, records: Iterable[dict[str, Any]]) -> None:
        """Load customers' records (a partition's table contents) after a restart."""
        for record in records:
            customer_id = record["customer_id"]
            state, pending, seen = record_from_dict(record)
            if state is not None:
                self.customers[customer_id] = state
                self._schedule(customer_id)
            if pending:
                self.pending[customer_id] = pending
                self._pending_json[customer_id] = {event.event_id: pending_json(event) for event in pending}
                for event in pending:
                    heapq.heappush(self._pending_times, (event.occurred_at.timestamp(), customer_id))
            self.seen[customer_id] = seen
