"""The one ClickHouse client factory and the idempotent schema migrations.

Embedded mode opens chDB (ClickHouse in-process) on a directory; only one process may
hold that directory, so the process that writes also serves reads. Server mode talks
HTTP to `CLICKHOUSE_URL`. Both go through clickhouse-connect, with the same DDL.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import clickhouse_connect
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as DriverError
from clickhouse_connect.driver.exceptions import OperationalError

from touchstream.schemas.errors import ClickHouseError, ConfigError
from touchstream.sinks.ddl import (
    MIRRORS,
    PARTITIONED_BY,
    TABLES,
    expected_columns,
    migrations,
    mirror_statements,
    views,
)
from touchstream.streams.metrics.config import MetricsConfig

#: ClickHouse error codes of conditions that pass: retrying the same call can succeed.
TRANSIENT_CODES = frozenset({
    3,  # UNEXPECTED_END_OF_FILE
    23, 24,  # CANNOT_READ_FROM_ISTREAM, CANNOT_WRITE_TO_OSTREAM
    32,  # ATTEMPT_TO_READ_AFTER_EOF
    159, 160,  # TIMEOUT_EXCEEDED, TOO_SLOW
    173,  # CANNOT_ALLOCATE_MEMORY
    202, 203,  # TOO_MANY_SIMULTANEOUS_QUERIES, NO_FREE_CONNECTION
    209, 210,  # SOCKET_TIMEOUT, NETWORK_ERROR
    225, 234,  # NO_ZOOKEEPER, NO_REPLICA_HAS_PART
    236,  # ABORTED
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS (merges behind; also "too many partitions for single INSERT block",
    #       which `ClickHouse.insert` prevents by splitting blocks by month)
    319,  # UNKNOWN_STATUS_OF_INSERT
    394,  # QUERY_WAS_CANCELLED
    425,  # SYSTEM_ERROR
    999,  # KEEPER_EXCEPTION
    1000,  # POCO_EXCEPTION (connection level)
})  # fmt: skip


#: Statements that may change a table's columns.
_DDL = re.compile(r"\s*(ALTER|CREATE|DROP|RENAME|EXCHANGE|ATTACH|DETACH)\b", re.IGNORECASE)


def wrap(error: DriverError, doing: str | None = None) -> ClickHouseError:
    """The project's error for a driver error: ClickHouse's code and name taken from the
    exception (clickhouse-connect parses them from the server's answer), and whether a
    retry can help. A driver error without a code is a connection or stream failure."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
    code, name = getattr(error, "code", None), getattr(error, "name", None)
    transient = code in TRANSIENT_CODES if code is not None else isinstance(error, OperationalError)
    label = f"code {code} {name}: " if code is not None else ""
    message = f"{doing} failed: {label}{first_line}" if doing else first_line
    return ClickHouseError(message, code=code, name=name, transient=transient)


def server_database(url: str, default: str) -> str:
    """The database named in CLICKHOUSE_URL's path, else the configured one."""
    name = unquote(urlsplit(url).path.strip("/"))
    if name and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ConfigError(f"CLICKHOUSE_URL names an invalid database: {name!r}")
    return name or default


def _server_client(url: str) -> Client:
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ConfigError("CLICKHOUSE_URL must look like http(s)://user:password@host:port[/database]")
    return clickhouse_connect.get_client(
        host=parts.hostname,
        port=parts.port or (8443 if parts.scheme == "https" else 8123),
        username=unquote(parts.username or "default"),
        password=unquote(parts.password or ""),
        secure=parts.scheme == "https",
        database="default",
        connect_timeout=10,
    )


#: First words of statements that return no rows (an output format would be a syntax error).
_NO_RESULT = frozenset(
    {"INSERT", "DELETE", "ALTER", "CREATE", "DROP", "TRUNCATE", "OPTIMIZE", "RENAME", "SYSTEM", "UPDATE"}
)


class Turns:
    """One call at a time, writes first: a read waits while a write waits.

    chDB runs one query at a time in the process, so a dashboard read continuously
    followed by others would otherwise hold back the sink's inserts behind every one of
    them; with writes first, an insert waits at most for the read already running, which
    `ClickHouse.read_seconds` bounds.
    """

    def __init__(self) -> None:
        self._state = threading.Condition()
        self._busy = False
        self._writers_waiting = 0

    @contextmanager
    def turn(self, *, write: bool) -> Iterator[None]:
        with self._state:
            if write:
                self._writers_waiting += 1
                try:
                    self._state.wait_for(lambda: not self._busy)
                finally:
                    self._writers_waiting -= 1
            else:
                self._state.wait_for(lambda: not self._busy and not self._writers_waiting)
            self._busy = True
        try:
            yield
        finally:
            with self._state:
                self._busy = False
                self._state.notify_all()

    def acquire(self, timeout: float) -> bool:
        """Take a turn as a writer within `timeout` seconds (to close the client)."""
        with self._state:
            if not self._state.wait_for(lambda: not self._busy, timeout=timeout):
                return False
            self._busy = True
            return True

    def release(self) -> None:
        with self._state:
            self._busy = False
            self._state.notify_all()


#: ClickHouse's codes for a read stopped by its bounds.
_READ_BOUNDS = {159: "time", 241: "memory"}
READ_BOUND_CODES = frozenset(_READ_BOUNDS)


def _quoted(value: str) -> str:
    """A setting's value as a literal: a number as it is, anything else as a string."""
    if re.fullmatch(r"-?\d+(\.\d+)?", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ClickHouse:
    """A thread-safe handle: one clickhouse-connect client, one call at a time, writes first.

    chDB is a single in-process engine, so serializing is also what keeps concurrent
    callers (the sink flushing, an operator's `touchstream sql`) from interleaving. Reads
    (`rows(read_only=True)`, `formatted(bounded=True)`: the dashboards, `/sql`) are bounded
    by `read_seconds` and `read_memory_bytes` in their own SETTINGS clause.
    """

    def __init__(
        self,
        client: Client,
        *,
        database: str,
        embedded: bool,
        read_seconds: float | None = None,
        read_memory_bytes: int | None = None,
    ) -> None:
        self.client = client
        self.database = database
        self.embedded = embedded
        self.read_seconds = read_seconds
        self.read_memory_bytes = read_memory_bytes
        self._lock = Turns()
        #: The server's `max_partitions_per_insert_block` (None: no limit), read at first insert.
        self.partition_limit: int | None = None
        self._limit_read = False
        #: Per (table, columns), the column types an insert sends: read once (clickhouse-connect
        #: otherwise runs DESCRIBE TABLE before every insert), forgotten by any DDL statement.
        self._column_types: dict[tuple[str, tuple[str, ...]], Sequence[Any]] = {}

    @contextmanager
    def _call(self, doing: str | None = None, *, write: bool = True) -> Iterator[Client]:
        with self._lock.turn(write=write):
            try:
                yield self.client
            except DriverError as error:
                raise self._explained(wrap(error, doing)) from error

    def _explained(self, error: ClickHouseError) -> ClickHouseError:
        bound = _READ_BOUNDS.get(error.code or 0)
        if bound is None or (bound == "time" and self.read_seconds is None):
            return error
        limit = (
            f"{self.read_seconds:g} s" if bound == "time" else f"{(self.read_memory_bytes or 0) >> 20} MiB"
        )
        setting = "TOUCHSTREAM_READ_SECONDS" if bound == "time" else "TOUCHSTREAM_READ_MEMORY_MB"
        return ClickHouseError(
            f"the read went past its {bound} bound of {limit} ({setting}; reads are bounded so that "
            f"ingestion goes on): {error}",
            code=error.code,
            name=error.name,
            transient=False,
        )

    def _bounded(self, sql: str, *, read_only: bool, settings: Mapping[str, str] | None = None) -> str:
        """`sql` with the read bounds (and ClickHouse's `readonly = 1`) in its SETTINGS clause,
        after `settings` (which cannot loosen them: one clause applies its last value)."""
        clause = [f"{name} = {_quoted(value)}" for name, value in (settings or {}).items()]
        if read_only:
            clause.append("readonly = 1")
        if self.read_seconds is not None:
            clause.append(f"max_execution_time = {self.read_seconds:g}")
        if self.read_memory_bytes is not None:
            clause.append(f"max_memory_usage = {self.read_memory_bytes}")
        if not clause:
            return sql
        return f"{sql.rstrip().rstrip(';')}\nSETTINGS {', '.join(clause)}"

    def command(
        self,
        sql: str,
        *,
        parameters: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        doing: str | None = None,
        background: bool = False,
    ) -> Any:
        """Run a statement; `doing` names it in an error ("delete from touchstream.waiting").
        A `background` statement (the maintained tables' computation) waits its turn like a
        read: the sink's writes go first."""
        if _DDL.match(sql):
            self._column_types.clear()
        with self._call(doing, write=not background) as client:
            return client.command(sql, parameters=parameters, settings=settings)

    def rows(
        self,
        sql: str,
        parameters: dict[str, Any] | None = None,
        *,
        read_only: bool = False,
        background: bool = False,
    ) -> list[tuple[Any, ...]]:
        """The rows of `sql`; `read_only` runs it with ClickHouse's `readonly = 1`, which
        refuses writes, settings changes and table functions that reach files or hosts.

        The setting goes in the query's own SETTINGS clause: passed as a client setting,
        the chDB driver applies it to the session with SET and cannot SET it back (that is
        a settings change in read-only mode), so every later insert would be refused. The
        read bounds go there too. A `background` query waits its turn like a read."""
        if read_only:
            sql = self._bounded(sql, read_only=True)
        with self._call(write=not (read_only or background)) as client:
            result = client.query(sql, parameters=parameters)
            return [tuple(row) for row in result.result_rows]

    def scalar(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        rows = self.rows(sql, parameters)
        return rows[0][0] if rows else None

    def formatted(
        self, sql: str, fmt: str, *, bounded: bool = False, settings: Mapping[str, str] | None = None
    ) -> bytes:
        """Run `sql` and return ClickHouse's own rendering in output format `fmt`; a
        statement without a result (INSERT, DELETE, OPTIMIZE...) runs and returns nothing.
        `bounded`: a read as an analyst's, within the read bounds (`settings` go in the same
        SETTINGS clause, before the bounds, which they cannot loosen)."""
        words = sql.split(maxsplit=1)
        if words and words[0].upper() in _NO_RESULT:
            self.command(sql)
            return b""
        if bounded:
            sql = self._bounded(sql, read_only=False, settings=settings)
        with self._call(write=not bounded) as client:
            return bytes(client.raw_query(sql, fmt=fmt))

    def insert(
        self,
        table: str,
        rows: list[tuple[Any, ...]],
        columns: list[str],
        *,
        dedup_token: str | None = None,
    ) -> None:
        """Insert `rows`; a retried call with the same rows and token inserts nothing twice.

        A partitioned table's rows go in blocks of at most the server's partition limit
        (months), each with its own token derived from `dedup_token`: one block spanning
        more months than `max_partitions_per_insert_block` is refused by ClickHouse
        (code 252, the same as "too many parts"), and retrying it would never succeed. If
        the server refuses a block all the same (its limit lowered since it was read),
        the block goes again one month at a time.
        """
        blocks = month_blocks(rows, columns, PARTITIONED_BY.get(table), self._partitions_per_insert())
        for number, block in enumerate(blocks):
            token = dedup_token if dedup_token is None or len(blocks) == 1 else f"{dedup_token}:{number}"
            try:
                self._insert_block(table, block, columns, token)
            except ClickHouseError as error:
                months = month_blocks(block, columns, PARTITIONED_BY.get(table), 1)
                if error.code != 252 or len(months) == 1:
                    raise
                for month, single in enumerate(months):
                    self._insert_block(table, single, columns, token and f"{token}:{month}")

    def _insert_block(
        self, table: str, rows: list[tuple[Any, ...]], columns: list[str], token: str | None
    ) -> None:
        settings = {"insert_deduplication_token": token} if token else None
        shape = (table, tuple(columns))
        with self._call(f"insert into {self.database}.{table}") as client:
            if (types := self._column_types.get(shape)) is None:
                context = client.create_insert_context(table, columns, database=self.database)
                self._column_types[shape] = types = context.column_types
            try:
                client.insert(table, rows, column_names=columns, column_types=types, database=self.database,
                              settings=settings)  # fmt: skip
            except DriverError:
                self._column_types.pop(shape, None)  # read again next time, in case the table changed
                raise

    def _partitions_per_insert(self) -> int | None:
        if not self._limit_read:
            limit = self.scalar(
                "SELECT if(getSetting('throw_on_max_partitions_per_insert_block'), "
                "toUInt64(getSetting('max_partitions_per_insert_block')), 0)"
            )
            self.partition_limit = int(limit) or None
            self._limit_read = True
        return self.partition_limit

    def migrate(self, config: MetricsConfig | None = None, say: Callable[[str], None] | None = None) -> None:
        """Create what is missing; the views take their windows from `config` (defaults).
        `say` hears the long steps (a first fill, a table computed for every customer)."""
        from touchstream.sinks.maintained import MaintainedTables  # it writes through this class

        for statement in migrations(self.database, config):
            self.command(statement)
        maintained = MaintainedTables(self.database, config)
        known = maintained.definitions(self)
        self._migrate_mirrors(known, say)
        made = maintained.migrate(self, known)
        for statement in views(self.database, config):
            self.command(statement)
        self.check_schema()
        if made:
            maintained.rebuild(self, made, say)

    def _migrate_mirrors(self, known: Mapping[str, str], say: Callable[[str], None] | None = None) -> None:
        """Make each mirror (`sinks.ddl.MIRRORS`) whose definition changed (`known`: the
        fingerprints made by) anew, filled with its source's rows; its fingerprint is
        written once it is filled."""
        from touchstream.sinks.maintained import fingerprint_of

        db = self.database
        for name, mirror in MIRRORS.items():
            statements = mirror_statements(db, name)
            # A copy of every column changes with its source's columns.
            source = TABLES[mirror.source] if mirror.columns == "*" else ""
            fingerprint = fingerprint_of("\n".join([*statements, source]))
            if known.get(name) == fingerprint:
                continue
            self.command(f"DROP VIEW IF EXISTS {db}.{name}_feed")
            self.command(f"DROP TABLE IF EXISTS {db}.{name}")
            for statement in statements:
                self.command(statement)
            # Rows the feed copied meanwhile are there twice, with one version: FINAL keeps one.
            if say is not None:
                say(f"copying {mirror.source} into {name}, ordered by hour (once)")
            self.command(
                f"INSERT INTO {db}.{name} SELECT {mirror.columns} FROM {db}.{mirror.source}",
                doing=f"first fill of {db}.{name}",
            )
            self.insert("maintained_definitions", [(name, fingerprint)], ["name", "fingerprint"])

    def check_schema(self) -> None:
        """Stop with one line when an existing table lacks a column this version writes
        (`CREATE ... IF NOT EXISTS` leaves a table of an earlier version as it was)."""
        rows = self.rows(
            "SELECT table, groupArray(name) FROM system.columns WHERE database = {db:String} GROUP BY table",
            {"db": self.database},
        )
        present = {table: set(names) for table, names in rows}
        for table, columns in expected_columns().items():
            missing = [column for column in columns if column not in present.get(table, set())]
            if missing:
                raise ConfigError(
                    f"ClickHouse table {self.database}.{table} lacks column(s) {', '.join(missing)}: it was "
                    "created by an earlier Touchstream; drop the metric tables (their rows are derived) "
                    "or use a new database or data dir"
                )

    def close(self, timeout: float = 2.0) -> None:
        """Close the client, unless a call still holds it after `timeout` seconds (a query
        that does not end): then the process leaves it to its exit."""
        if not self._lock.acquire(timeout=timeout):
            return
        try:
            self.client.close()
        finally:
            self._lock.release()


def month_blocks(
    rows: Sequence[tuple[Any, ...]], columns: Sequence[str], column: str | None, limit: int | None
) -> list[list[tuple[Any, ...]]]:
    """`rows` in blocks spanning at most `limit` months of `column` (UTC), in month order;
    one block when the table is not partitioned (or the rows leave the column to its
    default), there is no limit, or the rows fit."""
    if column is None or limit is None or column not in columns:
        return [list(rows)]
    index = columns.index(column)
    by_month: dict[tuple[int, int], list[tuple[Any, ...]]] = {}
    for row in rows:
        moment = row[index]
        if isinstance(moment, datetime) and moment.tzinfo is not None:
            moment = moment.astimezone(UTC)
        by_month.setdefault((moment.year, moment.month), []).append(row)
    if len(by_month) <= limit:
        return [list(rows)]
    months = sorted(by_month)
    return [
        [row for month in months[start : start + limit] for row in by_month[month]]
        for start in range(0, len(months), limit)
    ]


class Location(Protocol):
    """Where ClickHouse is (the wiring's settings): a server URL, or chDB under a path."""

    clickhouse_url: Any  # a pydantic SecretStr, or None for chDB
    clickhouse_database: str
    read_memory_mb: int

    @property
    def read_bound_seconds(self) -> float | None: ...

    @property
    def chdb_path(self) -> Path: ...

    def metrics_config(self) -> MetricsConfig: ...


def connect(
    settings: Location, *, migrate: bool = True, say: Callable[[str], None] | None = None
) -> ClickHouse:
    """The ClickHouse in use: chDB under the data dir, or the server at CLICKHOUSE_URL."""
    bounds: dict[str, Any] = {
        "read_seconds": settings.read_bound_seconds,
        "read_memory_bytes": settings.read_memory_mb << 20,
    }
    try:
        if settings.clickhouse_url is None:
            path: Path = settings.chdb_path
            path.mkdir(parents=True, exist_ok=True)
            client = clickhouse_connect.get_client(interface="chdb", path=str(path.resolve()))
            handle = ClickHouse(client, database=settings.clickhouse_database, embedded=True, **bounds)
        else:
            url = settings.clickhouse_url.get_secret_value()
            database = server_database(url, settings.clickhouse_database)
            handle = ClickHouse(_server_client(url), database=database, embedded=False, **bounds)
    except DriverError as error:
        raise wrap(error) from error
    except OSError as error:
        raise ClickHouseError(f"cannot open ClickHouse: {error}") from error
    if migrate:
        handle.migrate(settings.metrics_config(), say)
    # Unqualified table names in operators' queries resolve to Touchstream's database.
    handle.client.database = handle.database
    return handle
