"""SPEC §5b's tables, maintained, not recomputed (`sinks.ddl.MAINTAINED`).

Tickets, churns, outcome touchpoints, journeys, profiles and the per-customer months behind
churn rates are stored `ReplacingMergeTree(version, is_deleted)` tables, so a read costs
what it shows: the Customer 360 reads one customer's rows by key, the experience view
aggregates stored rows instead of window functions over every event.

Each step refreshes the customers it touched (an event of theirs, a row the stream wrote
for them, an erasure) and the customers whose due instant its partitions' horizon or
newest event time passed (`sinks.ddl.ANALYTICS_DUE`: rows becoming final, churns
appearing). A refresh runs each table's query for those customers inside ClickHouse and
writes, in one insert per table, their rows under a new version and a deletion (one
version lower) of every row they had, so a row that no longer exists (a journey merged
with another by a late event, a churn its return undid) goes and the others are
replaced. The definition lives once, as the query in `sinks/ddl.py`; the brute-force
reference stays apart (`streams.metrics.reference`), and the property tests compare the
two.

A refresh is idempotent: a step written twice (a retry, a restart before the commit)
refreshes the same customers again to the same rows. Reading a table while a refresh
writes it shows each customer's rows either before or after (one insert).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from sinks.ddl import _PARTITIONS, MAINTAINED, create_maintained, maintained_queries
from streams.metrics.config import MetricsConfig

if TYPE_CHECKING:
    from sinks.clickhouse import ClickHouse

log = logging.getLogger(__name__)

#: Customers per refresh query: the list travels as a query parameter, and ClickHouse reads
#: their rows by the primary key of `touchpoints` and the stream's tables.
CHUNK = 2000
#: Events per slice when every customer is computed (a new or changed definition).
REBUILD_SLICE_EVENTS = 500_000
SCOPE = "customer_id IN {customers:Array(String)}"

_DUE = f"""
    SELECT DISTINCT d.customer_id FROM {{db}}.analytics_due AS d FINAL
    INNER JOIN {_PARTITIONS} AS p ON p.partition = d.source_partition
    WHERE d.source_partition IN {{{{partitions:Array(UInt32)}}}}
      AND (d.horizon_due < p.horizon OR d.newest_due < p.newest)"""


class Versions:
    """Versions that only grow, also across restarts: from the wall clock in microseconds,
    two apart (a refresh writes its deletions one version below its rows)."""

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
        self.queries = maintained_queries(database, config)
        self.versions = Versions()
        self._columns: dict[str, str] = {}

    def update(self, clickhouse: ClickHouse, customers: Collection[str], partitions: Collection[int]) -> None:
        """Refresh `customers` and those due in `partitions` (after the step's horizons are
        written)."""
        due = self.due(clickhouse, partitions) if partitions else set()
        self.refresh(clickhouse, set(customers) | due)

    def due(self, clickhouse: ClickHouse, partitions: Collection[int]) -> set[str]:
        """The customers of `partitions` whose due instant the partition's clocks passed."""
        rows = clickhouse.rows(_DUE.format(db=self.database), {"partitions": sorted(partitions)})
        return {customer for (customer,) in rows}

    def refresh(
        self, clickhouse: ClickHouse, customers: Iterable[str], tables: Iterable[str] = MAINTAINED
    ) -> None:
        ordered = sorted(customers)
        names = list(tables)
        for start in range(0, len(ordered), CHUNK):
            self._apply(clickhouse, names, SCOPE, {"customers": ordered[start : start + CHUNK]})

    def rebuild(self, clickhouse: ClickHouse, tables: Collection[str]) -> None:
        """Compute `tables` for every customer, a hash slice of the customers at a time."""
        events = int(clickhouse.scalar(f"SELECT count() FROM {self.database}.touchpoints"))
        slices = max(1, -(-events // REBUILD_SLICE_EVENTS))
        began = time.monotonic()
        for index in range(slices):
            scope = f"cityHash64(customer_id) % {slices} = {index}"
            self._apply(clickhouse, list(tables), scope, {})
        if events:
            log.info(
                "computed %s for %d stored events in %.1f s",
                ", ".join(tables),
                events,
                time.monotonic() - began,
            )

    def _apply(
        self, clickhouse: ClickHouse, tables: list[str], scope: str, parameters: dict[str, Any]
    ) -> None:
        version = self.versions.next()
        for table in tables:
            columns = self.columns(clickhouse, table)
            query = self.queries[table].replace("{scope}", scope)
            clickhouse.command(
                f"INSERT INTO {self.database}.{table} ({columns}, version, is_deleted) "
                f"SELECT {columns}, {version}, 0 FROM ({query}) "
                f"UNION ALL SELECT {columns}, {version - 1}, 1 "
                f"FROM {self.database}.{table} FINAL WHERE {scope}",
                parameters=parameters or None,
                doing=f"refresh of {self.database}.{table}",
            )

    def columns(self, clickhouse: ClickHouse, table: str) -> str:
        if table not in self._columns:
            names = clickhouse.rows(
                "SELECT name FROM system.columns WHERE database = {db:String} AND table = {table:String} "
                "AND name NOT IN ('version', 'is_deleted') ORDER BY position",
                {"db": self.database, "table": table},
            )
            self._columns[table] = ", ".join(f"`{name}`" for (name,) in names)
        return self._columns[table]

    def migrate(self, clickhouse: ClickHouse) -> list[str]:
        """Create the maintained tables; one whose definition changed (a new version, other
        windows or thresholds) is made anew. Return the tables to compute for every customer
        (`rebuild`): those made now, while events are stored."""
        db = self.database
        kinds = dict(clickhouse.rows(
            "SELECT name, engine FROM system.tables WHERE database = {db:String}", {"db": db}
        ))  # fmt: skip
        known = dict(clickhouse.rows(
            f"SELECT name, argMax(fingerprint, written_at) FROM {db}.maintained_definitions GROUP BY name"
        ))  # fmt: skip
        made = []
        for table, query in self.queries.items():
            statement = create_maintained(db, table, query)
            fingerprint = hashlib.sha256((statement + query).encode()).hexdigest()
            if kinds.get(table) == "View":  # SPEC §5b's tables were views before they were maintained
                clickhouse.command(f"DROP VIEW {db}.{table}")
            elif table in kinds and known.get(table) == fingerprint:
                continue
            clickhouse.command(f"DROP TABLE IF EXISTS {db}.{table}")
            clickhouse.command(statement)
            clickhouse.insert("maintained_definitions", [(table, fingerprint)], ["name", "fingerprint"])
            self._columns.pop(table, None)
            made.append(table)
        return made if made and int(clickhouse.scalar(f"SELECT count() FROM {db}.touchpoints")) else []
