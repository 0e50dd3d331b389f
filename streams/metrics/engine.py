"""Event time, grace and lateness: the engine that feeds customers their events in order.

The engine keeps a watermark per source (the latest `occurred_at` read from each input
topic) and a horizon derived from them (see `process_sources`), minus the grace.
Arriving events wait in their customer's buffer; once the horizon passes them they are
folded into the customer's state in (occurred_at, event_id) order, and the rows that
makes are final. The horizon moves once per batch and never back. An event that
arrives with `occurred_at` before the horizon is late: it is reported
(`Outputs.late`), never folded into results already emitted.

Live rows (SPEC §5 "Live and final results"): each step, every customer whose view may
have changed (new events, events folded in, a level drop from decay alone before the
partition's newest event time) gets its provisional rows: a copy of its folded state
with its buffered events applied in order, decayed up to the newest event time. The
keys of the provisional rows written for a customer are kept with its state, so a
provisional row that no longer holds is retracted (or, for the latest-state tables,
replaced by the settled row it had covered). Every row, live or final, is a function of
the customer's sorted events and of the instant it is evaluated at, so any arrival
order within the grace period gives the same results (checked against
`reference.recompute`).

One engine serves one partition: one customer's events all meet in one partition.
A redelivered event (same event_id) is counted as a duplicate and changes nothing.
"""

from __future__ import annotations

import heapq
import json
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from touchstream.schemas.touchpoint import Kind, TouchpointEvent
from touchstream.streams.metrics.config import MetricsConfig
from touchstream.streams.metrics.customer import CustomerState
from touchstream.streams.metrics.records import (
    LATEST_STATE_TABLES,
    LateEvent,
    Outputs,
    RowKey,
    Rows,
    order_key,
)
from touchstream.streams.metrics.responses import Conversation
from touchstream.streams.metrics.state import (
    SIDE,
    conversation_from_json,
    conversation_json,
    conversation_key,
    pending_json,
    record_from_dict,
    record_head,
    record_json,
    state_json,
)

#: The idle rule moves a quiet partition's horizon just past its newest event.
_JUST_AFTER = timedelta(microseconds=1)


def _engagement_row(state: CustomerState, before: tuple[int, int], rows: Rows) -> bool:
    """Add the state's engagement row if it changed since `before` (`CustomerState.mark`):
    one row per customer and step, the latest, since only the latest counts."""
    if state.mark() == before or (row := state.engagement_row()) is None:
        return False
    rows.engagement.append(row)
    return True


def _latest_row(state: CustomerState, key: RowKey) -> Any:
    """The state's current row for a key of a latest-state table (None if it has none)."""
    table, ident = key
    if table == "engagement":
        return state.engagement_row()
    if table == "waiting":
        return state.waiting_row(ident[1])
    if table == "conversations":
        return state.conversation_row(ident[1])
    if table == "sla_events":
        return state.sla_row(ident[1], ident[2], ident[3])
    return None


def _changed_at(state: CustomerState, since: datetime) -> datetime:
    """The latest instant a live state changed at: `since` (its last event), or a later
    change by time alone (a level drop by decay, the engagement's `updated_at`; a snooze
    ending or an automatic close)."""
    assert state.engagement is not None
    instants = [since, state.engagement.updated_at, state.changed_by_time]
    return max(instant for instant in instants if instant is not None)


def _after(rows: Rows, horizon: datetime) -> Rows:
    """The rows at or after `horizon` (those before it are final)."""
    return Rows(
        responses=[row for row in rows.responses if row.replied_at >= horizon],
        waiting=[row for row in rows.waiting if row.updated_at >= horizon],
        conversations=[row for row in rows.conversations if row.updated_at >= horizon],
        sla_events=[row for row in rows.sla_events if row.updated_at >= horizon],
        engagement=[row for row in rows.engagement if row.updated_at >= horizon],
        changes=[row for row in rows.changes if row.changed_at >= horizon],
        surveys=[row for row in rows.surveys if row.occurred_at >= horizon],
        erasures=rows.erasures,
        erased=rows.erased,
    )


def _pruned(heap: list[tuple[float, str]], current: dict[str, float]) -> list[tuple[float, str]]:
    """The heap, rebuilt from the current entries once stale ones (superseded times, which
    a busy customer leaves one of per step) outnumber them: so it is bounded by customers,
    not by the steps until those times pass."""
    if len(heap) <= 2 * len(current) + 1024:
        return heap
    fresh = [(when, customer_id) for customer_id, when in current.items()]
    heapq.heapify(fresh)
    return fresh


@dataclass
class LiveView:
    """A customer's folded state with its buffered events applied, decayed to the
    partition's newest event time: what its live rows were computed from."""

    state: CustomerState
    #: The `order_key` of the last buffered event applied.
    last_key: tuple[datetime, str]
    #: The latest instant the state changed at (an event, or a level drop by decay).
    changed_at: datetime


class Engine:
    """`load`, when given, reads a customer's record from where the caller keeps them
    (`export_json` made it): customers are then resident only while they have buffered
    events or were used recently (`evict`), and the rest are read back when an event,
    a decay crossing or a live view needs them. Without it every customer stays in memory.

    With `load`, a customer's record also stays small however long its history: the
    conversations only an event of their own can change again (closed, nothing left for
    time to change) are kept out of it, each in a record of its own (`retire`), read back
    when such an event arrives (`CustomerState.dormant`), and deleted with the rest of the
    customer's history by an erasure (`keys` finds them). A closed run of events without
    conversation_id that is no longer its channel's current one is not kept at all: no
    event can reach it again.
    """

    def __init__(
        self,
        config: MetricsConfig | None = None,
        load: Callable[[bytes], bytes | None] | None = None,
        keys: Callable[[bytes], Iterable[bytes]] | None = None,
    ) -> None:
        self.config = config or MetricsConfig()
        self._load = load
        #: The stored keys that start with a prefix (`forget_retired`).
        self._keys = keys
        #: With `load`, conversations kept out of their customers' records (`retire`), to
        #: write under `conversation_key`: the record, or None to delete it.
        self.retired: dict[bytes, bytes | None] = {}
        #: What a state reads a retired conversation back with (`CustomerState.dormant`).
        self._dormant = self._wake if load is not None else None
        #: Customers whose record is in memory (or known to have none), least recently used first.
        self._resident: OrderedDict[str, None] = OrderedDict()
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
        #: Per customer, its current entry in `_crossings`: stale heap entries are skipped.
        self._drop_at: dict[str, float] = {}
        #: Per customer, the keys of the provisional rows last written for it (and markers of
        #: erasures already carried out while buffered).
        self.provisional: dict[str, set[RowKey]] = {}
        #: (next change of a customer's live view by decay alone, customer), and per
        #: customer its current entry: stale heap entries are skipped.
        self._live_crossings: list[tuple[float, str]] = []
        self._live_next: dict[str, float] = {}
        #: Restored customers with buffered events: their live view is recomputed next step.
        self._unsettled: set[str] = set()
        #: Per customer with buffered events, its live view as of the last step.
        self._views: dict[str, LiveView] = {}
        #: The version of the last rows written for this partition (kept by the caller).
        self.version = 0
        #: Per customer, the `order_key` of its latest erasure request read.
        self.erasures: dict[str, tuple[datetime, str]] = {}
        #: Per customer, its folded state's JSON as last written in its record: a step that
        #: only buffers events (most of a live step's customers) serializes the state once.
        self._state_json: dict[str, bytes] = {}

    @property
    def horizon(self) -> datetime | None:
        """Results are final before this instant; it never moves back."""
        return self._horizon

    @property
    def deferred(self) -> bool:
        """Whether customers wait for their live view to be recomputed (`_defer`, or restored)."""
        return bool(self._unsettled)

    @property
    def newest(self) -> datetime | None:
        """The partition's newest event time: live rows are evaluated at it."""
        return max(self.watermarks.values()) if self.watermarks else None

    def process(self, events: Iterable[TouchpointEvent], *, live: bool = True) -> Outputs:
        """A batch from one source, in arrival order; return the rows it makes."""
        return self.process_sources(((event, "") for event in events), lagging=(), live=live)

    def process_sources(
        self, events: Iterable[tuple[TouchpointEvent, str]], *, lagging: Collection[str], live: bool = True
    ) -> Outputs:
        """A batch in arrival order, each event with its source (its input topic).

        `lagging` names the sources that still have unread records: while one does, the
        horizon waits for it (the minimum of their watermarks), so a backlog read
        unevenly across topics does not make the slower topics' events late. With
        every source caught up, the horizon follows the newest event.

        `live` False (the caller is reading a backlog): the step writes final rows, and
        the live views of customers that keep buffered events wait for the next live step
        (see `_defer`).
        """
        out = Outputs()
        self.touched = set()
        arrived: dict[str, list[TouchpointEvent]] = {}
        horizon = self._horizon
        read: list[TouchpointEvent] = []
        for event, source in events:
            self.touched.add(event.customer_id)
            read.append(event)
            seen = self._seen(event.customer_id)
            if event.event_id in seen:
                out.duplicates += 1
                continue
            seen[event.event_id] = event.occurred_at
            if event.kind is Kind.ERASURE_REQUESTED and (horizon is None or event.occurred_at >= horizon):
                known = self.erasures.get(event.customer_id)
                self.erasures[event.customer_id] = max(known, order_key(event)) if known else order_key(event)
            if horizon is not None and event.occurred_at < horizon:
                customer, channel = event.customer_id, event.channel.value
                out.late.append(LateEvent(event.event_id, customer, channel, event.occurred_at, horizon))
                continue
            arrived.setdefault(event.customer_id, []).append(event)
            self.pending.setdefault(event.customer_id, []).append(event)
            self._pending_json.setdefault(event.customer_id, {})[event.event_id] = pending_json(event)
            heapq.heappush(self._pending_times, (event.occurred_at.timestamp(), event.customer_id))
            mark = self.watermarks.get(source)
            if mark is None or event.occurred_at > mark:
                self.watermarks[source] = event.occurred_at
        self._advance(lagging)
        self._step(out, arrived, live=live)
        if self.erasures:  # redeliveries included: an erased event is not stored again
            out.forgotten = {
                (event.customer_id, event.event_id)
                for event in read
                if (erased := self.erasures.get(event.customer_id)) is not None and order_key(event) <= erased
            }
            out.late = [late for late in out.late if (late.customer_id, late.event_id) not in out.forgotten]
        return out

    def idle(self, wall_clock: datetime) -> Outputs | None:
        """The idle rule (SPEC §5): the partition is caught up and has read nothing for a
        while, so its horizon moves to min(newest event + 1 µs, wall clock - grace), and
        live views deferred while it read a backlog are written. Returns the rows that
        makes, or None when nothing would change."""
        newest = self.newest
        if newest is None:
            return None
        candidate = min(newest + _JUST_AFTER, wall_clock - self.config.grace)
        until = candidate.timestamp()
        due = (self._horizon is None or candidate > self._horizon) and (
            (self._pending_times and self._pending_times[0][0] < until)
            or (self._crossings and self._crossings[0][0] < until)
        )
        if not due and not self._unsettled:
            return None
        if due:
            self._horizon = candidate
        out = Outputs()
        self.touched = set()
        self._step(out, {})
        return out

    def restate(self, stored: dict[str, list[TouchpointEvent]]) -> Outputs:
        """Recompute customers from all their stored events (SPEC §5 "Time": restatement):
        each one's state starts again from nothing, every stored event before the horizon is
        folded in in order (its whole history of final rows written again), the rest
        buffered, and its live view recomputed. `stored` holds, per customer, their stored
        events, the late ones included; erasure requests are left out (what they erased is no
        longer stored). The horizon does not move. The rows are the customers' whole current
        rows: a row of an earlier version that they do not replace no longer holds."""
        out = Outputs()
        for customer_id, events in stored.items():
            self._resident_now(customer_id)
            kept = {e.event_id: e for e in events if e.kind is not Kind.ERASURE_REQUESTED}
            # A buffered event as read (stored times are cut to the millisecond).
            kept.update((event.event_id, event) for event in self.pending.get(customer_id, []))
            ordered = sorted(kept.values(), key=order_key)
            self.forget_retired(customer_id)  # its conversations are all made again
            self.customers.pop(customer_id, None)
            self._state_json.pop(customer_id, None)
            self._views.pop(customer_id, None)
            self._drop_at.pop(customer_id, None)
            self._live_next.pop(customer_id, None)
            seen = self._seen(customer_id)
            for event in ordered:
                seen.setdefault(event.event_id, event.occurred_at)
            if not ordered:
                self.pending.pop(customer_id, None)
                self._pending_json.pop(customer_id, None)
                continue
            self.pending[customer_id] = ordered
            self._pending_json[customer_id] = {event.event_id: pending_json(event) for event in ordered}
            for event in ordered:
                heapq.heappush(self._pending_times, (event.occurred_at.timestamp(), customer_id))
        self._step(out, {customer_id: [] for customer_id in stored})
        self.touched |= stored.keys()
        return out

    def _step(self, out: Outputs, arrived: dict[str, list[TouchpointEvent]], *, live: bool = True) -> None:
        """Fold in what the horizon passed (final rows), then recompute the live view of
        every customer it may have changed (or, not `live`, defer it: `_defer`)."""
        released = self.release(self._horizon, out.final) if self._horizon is not None else set()
        newest = self.newest
        if newest is None or not self.config.live_rows:
            self.touched |= released
            return
        until = newest.timestamp()
        due: set[str] = set()
        while self._live_crossings and self._live_crossings[0][0] <= until:
            when, customer_id = heapq.heappop(self._live_crossings)
            if self._live_next.get(customer_id) == when:
                due.add(customer_id)
                self._resident_now(customer_id)
        changed = arrived.keys() | released | due | self._unsettled
        self._unsettled = set()
        # Per customer, its rows this step settled: what its live view must give way to. Only
        # a customer with a live view or provisional rows has any to give way (a backlog read
        # from the start has none).
        settled: dict[str, dict[RowKey, Any]] = {}
        if live or any(c in self.provisional or c in self._views for c in changed):
            for key, row in out.final.keyed().items():
                settled.setdefault(key[1][0], {})[key] = row
        # An erasure folded in now deletes the customer's rows first: its live rows are written again.
        erased_now = {erasure.customer_id for erasure in out.final.erased}
        waiting = set()  # deferred, and neither read nor folded this step: their records hold
        for customer_id in sorted(changed):
            final = settled.get(customer_id, {})
            if not live and customer_id not in erased_now and self._defer(customer_id, final):
                if customer_id not in arrived and customer_id not in released:
                    waiting.add(customer_id)
                continue
            if customer_id in erased_now or not self._extend_live(
                customer_id, arrived.get(customer_id, []), newest, out, final
            ):
                self._live(customer_id, newest, out, set(final))
        self.touched |= changed - waiting

    def _defer(self, customer_id: str, final: dict[RowKey, Any]) -> bool:
        """Leave the customer's live view as last written until the next live step, which
        recomputes it (`_live`) and replaces or retracts what no longer holds. A backlog's
        live rows would be replaced by the next step's anyway: reading one, each step then
        costs what it folds in, not what the grace period holds (SPEC §5 "Live and final
        results", while the worker is behind). Not deferred (False): a customer without
        buffered events (its view is its folded state, and nothing would recompute it
        after a restart) or with a buffered erasure request (carried out when read)."""
        if customer_id not in self.pending or self._erasure_buffered(customer_id):
            return False
        self._unsettled.add(customer_id)
        self._views.pop(customer_id, None)
        keys = self.provisional.get(customer_id)
        if keys and final:
            # Keys this step settled: the final row replaces the provisional one in the table.
            if kept := keys - final.keys():
                self.provisional[customer_id] = kept
            else:
                del self.provisional[customer_id]
        return True

    def _erasure_buffered(self, customer_id: str) -> bool:
        """Whether the customer's latest erasure request read is still buffered (at or
        after the horizon: not folded in yet)."""
        erased = self.erasures.get(customer_id)
        return erased is not None and (self._horizon is None or erased[0] >= self._horizon)

    def _extend_live(
        self,
        customer_id: str,
        arrived: list[TouchpointEvent],
        newest: datetime,
        out: Outputs,
        final: dict[RowKey, Any],
    ) -> bool:
        """The customer's live view carried forward from the last step's, when every event
        that arrived is ordered after everything that view has applied (the common case of
        live traffic): only the new events are applied, so a step costs what it brings, not
        what the grace period holds. False when the view must be recomputed (`_live`), or
        recomputing is cheaper: more events arrived than are still buffered, as when a
        backlog is read and most of them were folded in at once."""
        view = self._views.get(customer_id)
        pending = self.pending.get(customer_id)
        if view is None or not pending or len(arrived) > len(pending):
            return False  # recomputing from the folded state applies fewer events (a backlog)
        ordered = sorted(arrived, key=order_key)
        if ordered and (order_key(ordered[0]) <= view.last_key or ordered[0].occurred_at <= view.changed_at):
            return False
        if self._erasure_buffered(customer_id):
            return False  # what is folded in meanwhile is withdrawn (`_live`)
        rows = Rows()
        state = view.state
        self._play(state, ordered, newest, rows)
        assert state.engagement is not None
        if ordered:
            view.last_key = order_key(ordered[-1])
        view.changed_at = _changed_at(state, max(view.changed_at, view.last_key[0]))
        if self._horizon is not None:
            # Rows before the horizon (of events this very step folded in, or level drops it
            # passed) are final: the step wrote them as such.
            rows = _after(rows, self._horizon)
        fresh = rows.keyed()
        # A settled row this step wrote for a latest-state key that buffered events changed
        # since: the live row is the current one.
        for key, row in final.items():
            if key in fresh or key[0] not in LATEST_STATE_TABLES:
                continue
            if (current := _latest_row(state, key)) is not None and current != row:
                fresh[key] = current
                getattr(rows, key[0]).append(current)
        self._schedule_live(customer_id, state)
        keys = (self.provisional.get(customer_id, set()) | fresh.keys()) - (final.keys() - fresh.keys())
        if keys:
            self.provisional[customer_id] = keys
        else:
            self.provisional.pop(customer_id, None)
        rows.suppressed = 0
        out.live.extend(rows)
        return True

    def _play(self, state: CustomerState, events: list[TouchpointEvent], until: datetime, rows: Rows) -> None:
        """Apply `events` (in order) to a live state, decay it up to `until`, into `rows`."""
        before = state.mark()
        for event in events:
            state.apply(event, self.config, rows)
        state.advance(until, self.config, rows, inclusive=True)
        _engagement_row(state, before, rows)

    def _schedule_live(self, customer_id: str, state: CustomerState | None) -> None:
        """Note when decay alone next changes the customer's live view."""
        self._live_next.pop(customer_id, None)
        if state is not None:
            crossing = state.next_crossing(self.config)
            if crossing is not None:
                self._schedule_live_at(customer_id, crossing.timestamp())

    def _schedule_live_at(self, customer_id: str, when: float) -> None:
        self._live_next[customer_id] = when
        heapq.heappush(self._live_crossings, (when, customer_id))
        self._live_crossings = _pruned(self._live_crossings, self._live_next)

    def _live(self, customer_id: str, newest: datetime, out: Outputs, settled: set[RowKey]) -> None:
        """The customer's provisional rows at `newest`, recomputed from its folded state
        and all its buffered events, and what they replace; `settled`: the keys of its
        rows this step made final."""
        state = self.customers.get(customer_id)
        pending = self.pending.get(customer_id)
        rows = Rows()
        current = state
        self._views.pop(customer_id, None)
        if pending:
            current = state.clone() if state is not None else CustomerState(customer_id)
            ordered = sorted(pending, key=order_key)
            self._play(current, ordered, newest, rows)
            last = order_key(ordered[-1])
            self._views[customer_id] = LiveView(current, last, _changed_at(current, last[0]))
        elif state is not None:
            crossing = state.next_crossing(self.config)
            if crossing is not None and crossing <= newest:
                current = state.clone()
                self._play(current, [], newest, rows)
        self._schedule_live(customer_id, current)
        previous = self.provisional.get(customer_id, set())
        markers = {
            ("erasure", (event.event_id,)) for event in pending or () if event.kind is Kind.ERASURE_REQUESTED
        }
        if markers:
            # Everything folded in so far precedes a buffered erasure: nothing of it is shown.
            out.final.withdraw(customer_id)
            settled = set()
        # A buffered erasure is carried out once, when it is first read (and again when
        # it is folded in, for what arrived in between).
        done = {key[1][0] for key in previous if key[0] == "erasure"}
        if done:
            rows.erasures = [proof for proof in rows.erasures if proof.request_event_id not in done]
            rows.erased = [erasure for erasure in rows.erased if erasure.before[1] not in done]
        fresh = rows.keyed()
        for key in previous - fresh.keys() - settled:
            if key[0] == "erasure":
                continue
            if current is not None and (row := _latest_row(current, key)) is not None:
                getattr(out.final, key[0]).append(row)  # no buffered event changed it: the settled row
            else:
                out.retracted.append(key)
        keys = set(fresh) | markers
        if keys:
            self.provisional[customer_id] = keys
        else:
            self.provisional.pop(customer_id, None)
        rows.suppressed = 0  # counted once, when folded in
        out.live.extend(rows)

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
        """The partition's own state: horizon, per-source watermarks, last rows' version."""
        return {
            "horizon": self._horizon.isoformat() if self._horizon else None,
            "watermarks": {source: mark.isoformat() for source, mark in self.watermarks.items()},
            "version": self.version,
        }

    def restore_partition(self, record: dict[str, Any]) -> None:
        horizon = record.get("horizon")
        self._horizon = datetime.fromisoformat(horizon) if horizon else None
        self.version = int(record.get("version", 0))
        self.watermarks = {
            source: datetime.fromisoformat(mark) for source, mark in record["watermarks"].items()
        }

    def release(self, horizon: datetime, out: Rows) -> set[str]:
        """Fold every pending event before `horizon` in, in order; then decay up to it.
        Returns the customers whose state changed."""
        released: set[str] = set()
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
            state = self.customers.get(customer_id) or self._arrived(customer_id)
            self._state_json.pop(customer_id, None)
            released.add(customer_id)
            fragments = self._pending_json[customer_id]
            before, erased = state.mark(), state.erased_before
            for event in ready:
                state.apply(event, self.config, out)
                del fragments[event.event_id]
            if state.erased_before != erased:
                self.forget_retired(customer_id)
            state.prune(horizon)
            _engagement_row(state, before, out)
            self._schedule(customer_id)
            rest = waiting[len(ready) :]
            if rest:
                self.pending[customer_id] = rest
            else:
                del self.pending[customer_id], self._pending_json[customer_id]
        due: set[str] = set()
        while self._crossings and self._crossings[0][0] < until:
            when, customer_id = heapq.heappop(self._crossings)
            if self._drop_at.get(customer_id) == when:
                due.add(customer_id)
        for customer_id in sorted(due):
            self._resident_now(customer_id)
            state = self.customers[customer_id]
            self._state_json.pop(customer_id, None)
            before = state.mark()
            conversations_changed = state.advance(horizon, self.config, out)
            if _engagement_row(state, before, out) or conversations_changed:
                released.add(customer_id)
            self.touched.add(customer_id)  # its record holds the advanced state
            self._schedule(customer_id)
        return released

    def _next_crossing(self, customer_id: str) -> datetime | None:
        state = self.customers.get(customer_id)
        return None if state is None else state.next_crossing(self.config)

    def _schedule(self, customer_id: str) -> None:
        when = self._next_crossing(customer_id)
        self._schedule_at(customer_id, when.timestamp() if when is not None else None)

    def _schedule_at(self, customer_id: str, when: float | None) -> None:
        if when is None:
            self._drop_at.pop(customer_id, None)
        elif self._drop_at.get(customer_id) != when:
            self._drop_at[customer_id] = when
            heapq.heappush(self._crossings, (when, customer_id))
            self._crossings = _pruned(self._crossings, self._drop_at)

    def _seen(self, customer_id: str) -> dict[str, datetime]:
        """The customer's remembered event ids, those older than the dedup window before
        the horizon forgotten first (once it remembers more than 64)."""
        self._resident_now(customer_id)
        seen = self.seen.setdefault(customer_id, {})
        if len(seen) > 64 and self._horizon is not None:
            oldest = self._horizon - self.config.dedup_window
            kept = {key: at for key, at in seen.items() if at >= oldest}
            if len(kept) != len(seen):
                self.seen[customer_id] = seen = kept
        return seen

    def _resident_now(self, customer_id: str) -> None:
        """Read the customer's record back if it is not in memory; mark it recently used."""
        if self._load is None:
            return
        if customer_id in self._resident:
            self._resident.move_to_end(customer_id)
            return
        self._resident[customer_id] = None
        value = self._load(customer_id.encode())
        if value is not None:
            self._restore_one(json.loads(value), schedule=False)

    def evict(self, keep: int) -> None:
        """Drop from memory the least recently used customers beyond `keep` that have no
        buffered event (their records are written: call after `export_json` of the
        touched ones). Their crossing times stay, so decay still reaches them."""
        if self._load is None:
            return
        excess = len(self._resident) - keep
        for customer_id in list(self._resident):
            if excess <= 0:
                break
            if customer_id in self.pending or customer_id in self.touched or customer_id in self._unsettled:
                continue
            del self._resident[customer_id]
            for held in (
                self.customers,
                self.seen,
                self.provisional,
                self.erasures,
                self._views,
                self._state_json,
            ):
                held.pop(customer_id, None)
            excess -= 1

    def _arrived(self, customer_id: str) -> CustomerState:
        """A customer's state, new: its first events are about to be folded in."""
        state = self.customers[customer_id] = CustomerState(customer_id)
        state.dormant = self._dormant
        return state

    def _wake(self, customer_id: str, conversation_id: str) -> Conversation | None:
        """A retired conversation, read back for an event of its own (`CustomerState.dormant`)."""
        key = conversation_key(customer_id, conversation_id)
        if key in self.retired:
            value = self.retired[key]
        else:
            assert self._load is not None
            value = self._load(key)
        return None if value is None else conversation_from_json(conversation_id, value)

    def retire(self, customer_id: str) -> None:
        """With `load`: keep out of the customer's record the conversations that only an
        event of their own can change again (`CustomerState.retire`), once nothing of the
        customer is buffered or shown provisionally; each in `retired` under its own key."""
        state = self.customers.get(customer_id)
        if (
            self._load is None
            or state is None
            or customer_id in self.pending
            or customer_id in self.provisional
            or not state.conversations
        ):
            return
        held = len(state.conversations)
        for conversation in state.retire(self.config):
            self.retired[conversation_key(customer_id, conversation.conversation_id)] = conversation_json(
                conversation
            )
        if len(state.conversations) != held:
            self._state_json.pop(customer_id, None)

    def forget_retired(self, customer_id: str) -> None:
        """Delete the customer's retired conversations (an erasure, a restatement that makes
        them again); its state reads back none until it retires them anew."""
        if self._load is None:
            return
        prefix = conversation_key(customer_id, "")
        stored = list(self._keys(prefix)) if self._keys is not None else []
        for key in [*stored, *(key for key in self.retired if key.startswith(prefix))]:
            self.retired[key] = None

    def export_json(self, customer_id: str) -> bytes:
        """The customer's whole record as JSON, for a changelog-backed table (with `load`,
        its conversations `retire` takes out are written to `retired`)."""
        self.retire(customer_id)
        state = self._state_json.get(customer_id)
        if state is None:
            state = self._state_json[customer_id] = state_json(self.customers.get(customer_id))
        pending = self._pending_json.get(customer_id, {})
        seen = self.seen.get(customer_id, {})
        if pending:  # the buffered events carry their own ids
            seen = seen.copy()
            for event_id in pending:
                seen.pop(event_id, None)
        return record_json(
            self._drop_at.get(customer_id),
            state,
            pending.values(),
            seen,
            customer_id,
            self.provisional.get(customer_id, ()),
        )

    def export(self, customer_id: str) -> dict[str, Any]:
        """The customer's whole record, parsed (what `restore` takes)."""
        return dict(json.loads(self.export_json(customer_id)))

    def restore(self, records: Iterable[dict[str, Any]]) -> None:
        """Load customers' records (a partition's table contents) after a restart."""
        for record in records:
            self._restore_one(record, schedule=True)

    def index(self, records: Iterable[tuple[bytes, bytes]]) -> None:
        """After a restart, with `load` given (`records`: the partition's table, keys and
        values): note every customer's next decay crossing from the head of its record
        (`record_head`) and load only those with buffered events; the rest are read back
        when needed."""
        for key, value in records:
            if SIDE in key:  # a retired conversation (`conversation_key`)
                continue
            head = record_head(value)
            if head is None:  # a record written before it had a head
                self._restore_one(json.loads(value), schedule=True)
                continue
            crossing, buffered = head
            customer_id = key.decode()
            if buffered:
                self._restore_one(json.loads(value), schedule=True)
                self._resident[customer_id] = None
            elif crossing is not None:
                self._schedule_at(customer_id, crossing)
                self._schedule_live_at(customer_id, crossing)

    def _restore_one(self, record: dict[str, Any], *, schedule: bool) -> None:
        customer_id = record["customer_id"]
        state, pending, seen, provisional = record_from_dict(record)
        if provisional:
            self.provisional[customer_id] = provisional
        erasures = [order_key(e) for e in pending if e.kind is Kind.ERASURE_REQUESTED]
        if state is not None and state.erased_before is not None:
            erasures.append(state.erased_before)
        if erasures:
            self.erasures[customer_id] = max(erasures)
        self._state_json.pop(customer_id, None)
        if state is not None:
            self.customers[customer_id] = state
            state.dormant = self._dormant
            if schedule:
                self._schedule(customer_id)
                self._schedule_live(customer_id, state)
        if pending:
            self.pending[customer_id] = pending
            self._pending_json[customer_id] = {event.event_id: pending_json(event) for event in pending}
            for event in pending:
                heapq.heappush(self._pending_times, (event.occurred_at.timestamp(), customer_id))
            self._unsettled.add(customer_id)
        self.seen[customer_id] = seen
