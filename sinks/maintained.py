"""SPEC §5b's tables, maintained, not recomputed (`sinks.ddl.MAINTAINED`).

Tickets, churns, outcome touchpoints, journeys, profiles and the per-customer months behind
churn rates are stored `ReplacingMergeTree(version, is_deleted)` tables, so a read costs
what it shows: the Customer 360 reads one customer's rows by key, the experience view
aggregates stored rows instead of window functions over every event.

Which customers need computing is itself stored, in `analytics_due`: each step marks the
customers it touched (an event of theirs, a row the stream wrote for them, an erasure) as
due at once, before the step is acknowledged, and every computation leaves the instant at
which the customer's rows next change by event time alone (`sinks.ddl.ANALYTICS_DUE`:
rows becoming final, churns appearing). `catch_up` computes the customers whose instant
their partition's horizon or newest event time has passed: it copies their counted events
into a scratch table once (`counted_query`), runs each table's query over it inside
ClickHouse and writes, in one insert per table, their rows under a new version and a
deletion (one version lower) of every key they had (read without FINAL: deleting a key
twice costs less than FINAL), so a row that no longer exists (a journey merged with another
by a late event, a churn its return undid) goes and the others are replaced. A table that
feeds running totals (`outcome_touchpoints` feeds `attribution_totals`) deletes exactly its
live rows instead, read with FINAL, so that the totals take each away once. A crash between
the mark and the computation loses nothing: the marks are in ClickHouse, and the next
worker computes them.

The definition lives once, as the query in `sinks/ddl.py`; the brute-force reference stays
apart (`streams.metrics.reference`), and the property tests compare the two. Computing a
customer is idempotent, so computing one twice (a retried step, a restart) is harmless.
Reading a table while it is written shows each customer's rows before or after (one
insert).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from touchstream.sinks.ddl import (
    ATTRIBUTION_FEED,
    ATTRIBUTION_TOTALS,
    ATTRIBUTION_TOTALS_FEED,
    MAINTAINED,
    PARTITION_CLOCKS,
    counted_query,
    create_maintained,
    maintained_queries,
)
from touchstream.streams.metrics.config import MetricsConfig

if TYPE_CHECKING:
    from touchstream.sinks.clickhouse import ClickHouse

log = logging.getLogger(__name__)

#: Hears what a long step is doing, one line at a time (`up` prints it).
Say = Callable[[str], None]
#: Customers per computation: the list travels as a query parameter, and ClickHouse reads
#: their rows by the primary key of `touchpoints` and of the stream's tables.
CHUNK = 2000
#: Events per slice when every customer is computed (a new or changed definition).
REBUILD_SLICE_EVENTS = 500_000
SCOPE = "customer_id IN {customers:Array(String)}"
#: The due instant of a customer marked by a step: long passed, so due at once.
AT_ONCE = "1970-01-01 00:00:00"

_DUE = f"""
    SELECT d.customer_id FROM {{db}}.analytics_due AS d FINAL
    INNER JOIN {PARTITION_CLOCKS} AS p ON p.partition = d.source_partition
    WHERE d.source_partition IN {{{{partitions:Array(UInt32)}}}}
      AND (d.horizon_due < p.horizon OR d.newest_due < p.newest)
    ORDER BY d.horizon_due
    LIMIT {{{{limit:UInt32}}}}"""


#: How many customers are due now, in every partition (`touchstream verify` waits for none).
PENDING = f"""
    SELECT count() FROM analytics_due AS d FINAL
    INNER JOIN {PARTITION_CLOCKS.format(db="{db}")} AS p ON p.partition = d.source_partition
    WHERE d.horizon_due < p.horizon OR d.newest_due < p.newest"""


def fingerprint_of(definition: str) -> str:
    """What `maintained_definitions` keeps of a definition: a table made by another is made anew."""
    return hashlib.sha256(definition.encode()).hexdigest()


class Versions:
    """Versions that only grow, also across restarts: from the wall clock in microseconds,
    two apart (a computation writes its deletions one version below its rows)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns() // 1000, self._last + 2)
            return self._last


class MaintainedTables:
    """The maintained tables of one database with the windows and thresholds of `config`."""

    def __init__(self, database: str, config: MetricsConfig | None = None) -> None:
        self.database = database
        self.config = config or MetricsConfig()
        #: This process's scratch table: workers sharing a server do not share one.
        self.scratch = f"analytics_scratch_{uuid.uuid4().hex[:12]}"
        self.counted = counted_query(database, self.config)
        self.queries = maintained_queries(database, self.config, counted=self.scratch)
        self.versions = Versions()
        self._columns: dict[str, str] = {}
        self._scratch_made = False

    def mark(self, clickhouse: ClickHouse, customers: Mapping[str, int]) -> None:
        """Mark `customers` (with their partitions) as due at once."""
        if not customers:
            return
        version = self.versions.next()
        rows = [(customer, partition, AT_ONCE, version) for customer, partition in sorted(customers.items())]
        clickhouse.insert(
            "analytics_due", rows, ["customer_id", "source_partition", "horizon_due", "version"]
        )

    def catch_up(self, clickhouse: ClickHouse, partitions: Collection[int], limit: int = CHUNK) -> int:
        """Compute up to `limit` of the due customers of `partitions` (read after the step's
        horizons are written); return how many were computed (fewer than `limit`: none
        are left)."""
        if not partitions:
            return 0
        customers = self.due(clickhouse, partitions, limit)
        self.refresh(clickhouse, customers)
        return len(customers)

    def catch_up_all(self, clickhouse: ClickHouse) -> int:
        """Compute every due customer of every partition; return how many."""
        partitions = [
            p for (p,) in clickhouse.rows(f"SELECT DISTINCT partition FROM {self.database}.stream_horizons")
        ]
        computed = 0
        while (count := self.catch_up(clickhouse, partitions)) > 0:
            computed += count
        return computed

    def due(self, clickhouse: ClickHouse, partitions: Collection[int], limit: int = CHUNK) -> list[str]:
        """Up to `limit` customers of `partitions` whose due instant their partition passed."""
        rows = clickhouse.rows(
            _DUE.format(db=self.database), {"partitions": sorted(partitions), "limit": limit}, background=True
        )
        return [customer for (customer,) in rows]

    def refresh(
        self, clickhouse: ClickHouse, customers: Iterable[str], tables: Iterable[str] = MAINTAINED
    ) -> None:
        """Compute `tables` for `customers`, `CHUNK` customers at a time."""
        ordered = sorted(set(customers))
        names = list(tables)
        for start in range(0, len(ordered), CHUNK):
            self._apply(clickhouse, names, SCOPE, {"customers": ordered[start : start + CHUNK]})

    def rebuild(self, clickhouse: ClickHouse, tables: Collection[str], say: Say | None = None) -> None:
        """Compute `tables` for every customer, a hash slice of the customers at a time;
        `say` hears how far it is (one line per slice)."""
        events = int(clickhouse.scalar(f"SELECT count() FROM {self.database}.touchpoints"))
        slices = max(1, -(-events // REBUILD_SLICE_EVENTS))
        began = time.monotonic()
        for index in range(slices):
            if say is not None:
                say(f"computing {', '.join(tables)} for {events:,} stored events: {index + 1}/{slices}")
            self._apply(clickhouse, list(tables), f"cityHash64(customer_id) % {slices} = {index}", {})
        log.info(
            "computed %s for %d stored events in %.1f s", ", ".join(tables), events, time.monotonic() - began
        )

    def _apply(
        self, clickhouse: ClickHouse, tables: list[str], scope: str, parameters: dict[str, Any]
    ) -> None:
        db, scratch = self.database, self.scratch
        counted = self.counted.replace("{scope}", scope)
        # The version is taken before the events are read: a step that marks one of these
        # customers while this runs (its events written after the read) marks them with a
        # higher version, which outlives this computation's due row, so they are computed
        # again.
        version = self.versions.next()
        if not self._scratch_made:
            clickhouse.command(
                f"CREATE TABLE IF NOT EXISTS {db}.{scratch} ENGINE = Memory "
                f"EMPTY AS SELECT * FROM ({self.counted.replace('{scope}', '0')})",
                background=True,
            )
            self._scratch_made = True
        clickhouse.command(f"TRUNCATE TABLE {db}.{scratch}", background=True)
        clickhouse.command(
            f"INSERT INTO {db}.{scratch} SELECT * FROM ({counted})",
            parameters=parameters or None,
            doing="copy of the counted events to compute",
            background=True,
        )
        for table in tables:
            columns = self.columns(clickhouse, table)
            query = self.queries[table].replace("{scope}", scope)
            # A table feeding running totals deletes its live rows, once each (FINAL).
            replaced = (
                f"{db}.{table} FINAL WHERE {scope}"
                if MAINTAINED[table].feeds
                else f"{db}.{table} WHERE {scope} LIMIT 1 BY {MAINTAINED[table].key}"
            )
            clickhouse.command(
                f"INSERT INTO {db}.{table} ({columns}, version, is_deleted) "
                f"SELECT {columns}, {version}, 0 FROM ({query}) "
                f"UNION ALL SELECT {columns}, {version - 1}, 1 FROM {replaced}",
                parameters=parameters or None,
                doing=f"refresh of {db}.{table}",
                background=True,
            )
        clickhouse.command(f"TRUNCATE TABLE {db}.{scratch}", background=True)

    def columns(self, clickhouse: ClickHouse, table: str) -> str:
        if table not in self._columns:
            names = clickhouse.rows(
                "SELECT name FROM system.columns WHERE database = {db:String} AND table = {table:String} "
                "AND name NOT IN ('version', 'is_deleted') ORDER BY position",
                {"db": self.database, "table": table},
            )
            self._columns[table] = ", ".join(f"`{name}`" for (name,) in names)
        return self._columns[table]

    def definitions(self, clickhouse: ClickHouse) -> dict[str, str]:
        """Per table made from a definition (maintained tables, copies, totals), the
        fingerprint of the definition it was made by."""
        return dict(clickhouse.rows(
            f"SELECT name, argMax(fingerprint, written_at) FROM {self.database}.maintained_definitions "
            "GROUP BY name"
        ))  # fmt: skip

    def migrate(self, clickhouse: ClickHouse, known: Mapping[str, str]) -> list[str]:
        """Create the maintained tables; one whose definition changed (a new version, other
        windows or thresholds) is made anew. Return the tables to compute for every customer
        (`rebuild`): those made now, while events are stored."""
        db = self.database
        kinds = dict(clickhouse.rows(
            "SELECT name, engine FROM system.tables WHERE database = {db:String}", {"db": db}
        ))  # fmt: skip
        for name in kinds:  # embedded: one process owns the data, so a scratch table is a stopped one's
            if clickhouse.embedded and name.startswith("analytics_scratch_"):
                clickhouse.command(f"DROP TABLE IF EXISTS {db}.{name}")
        inline = maintained_queries(db, self.config)
        made = []
        for table, query in inline.items():
            statement = create_maintained(db, table, query)
            fingerprint = fingerprint_of(statement + query)
            if kinds.get(table) == "View":  # SPEC §5b's tables were views before they were maintained
                clickhouse.command(f"DROP VIEW {db}.{table}")
            elif table in kinds and known.get(table) == fingerprint:
                continue
            clickhouse.command(f"DROP TABLE IF EXISTS {db}.{table}")
            clickhouse.command(statement)
            clickhouse.insert("maintained_definitions", [(table, fingerprint)], ["name", "fingerprint"])
            self._columns.pop(table, None)
            made.append(table)
        self._migrate_totals(clickhouse, known, made)
        return made if made and int(clickhouse.scalar(f"SELECT count() FROM {db}.touchpoints")) else []

    def _migrate_totals(self, clickhouse: ClickHouse, known: Mapping[str, str], made: list[str]) -> None:
        """Make the running totals anew when their definition or their source changed,
        filled from the source's live rows (a source made now fills them as it is computed)."""
        db = self.database
        statements = [ATTRIBUTION_TOTALS.format(db=db), ATTRIBUTION_TOTALS_FEED.format(db=db)]
        fingerprint = fingerprint_of("\n".join(statements))
        if "outcome_touchpoints" not in made and known.get("attribution_totals") == fingerprint:
            return
        clickhouse.command(f"DROP VIEW IF EXISTS {db}.attribution_totals_feed")
        clickhouse.command(f"DROP TABLE IF EXISTS {db}.attribution_totals")
        for statement in statements:
            clickhouse.command(statement)
        if "outcome_touchpoints" not in made:
            source = f"(SELECT * FROM {db}.outcome_touchpoints FINAL)"
            clickhouse.command(
                f"INSERT INTO {db}.attribution_totals {ATTRIBUTION_FEED.replace('{source}', source)}"
            )
        clickhouse.insert(
            "maintained_definitions", [("attribution_totals", fingerprint)], ["name", "fingerprint"]
        )
