"""Which SQL an operator's `POST /sql` may run: anything on the database, nothing beyond it.

In embedded mode chDB runs inside the worker with the worker's own rights, so a table
function or engine that reaches files or the network (`file()`, `url()`, `s3()`,
`remote()`, `ENGINE = File`, a dictionary's HTTP source, `INTO OUTFILE`, `FROM
INFILE`, `BACKUP ... TO File`) would read and write the machine's files as that user,
or call back into the worker's own ports and deadlock it (a `url()` query to the
dashboard held chDB's lock while the dashboard waited for it).

The check reads ClickHouse's own parse of the statement (`EXPLAIN AST`), not its text,
so comments, quoting and case do not hide a name. It refuses:

- every function node naming a table function or table engine that is not on the
  allow list below (an allow list: a table function added by a later ClickHouse is
  refused until someone looks at it), and the scalar `file()`;
- dictionary definitions (their sources reach files, hosts and processes);
- `INTO OUTFILE` / `FROM INFILE` (the file name is a literal child of the statement);
- `BACKUP`, `RESTORE`, `ATTACH` (which reads a path the parse does not show) and
  `SYSTEM` statements (`SYSTEM SHUTDOWN` would stop the worker).
"""

from __future__ import annotations

import re

from touchstream.sinks.clickhouse import ClickHouse

#: Table functions that read only what ClickHouse generates or already holds.
SAFE_TABLE_FUNCTIONS = frozenset({
    "numbers", "numbers_mt", "zeros", "zeros_mt", "generaterandom", "generateseries", "generate_series",
    "primes", "values", "null", "view", "merge", "format", "mergetreeindex", "mergetreeprojection",
})  # fmt: skip
#: Table engines whose data stays in ClickHouse's own storage (or in memory).
SAFE_ENGINES = frozenset({
    "memory", "null", "log", "tinylog", "stripelog", "set", "join", "buffer", "view", "materializedview",
    "merge", "dictionary", "generaterandom", "alias", "embeddedrocksdb", "timeseries",
})  # fmt: skip
#: Statements refused whole, by the first word of their parse.
REFUSED_STATEMENTS = {
    "BackupQuery": "BACKUP and RESTORE write and read files",
    "AttachQuery": "ATTACH reads files from a path",
    "SYSTEM": "SYSTEM statements act on the server the worker runs in",
}
_FUNCTION = re.compile(r"^\s*(?:Function|FunctionWithKeyValueArguments)\s+(\S+)")


class SqlGuard:
    """`refusal(query)`: why a statement reaches beyond the database, or None to run it."""

    def __init__(self, clickhouse: ClickHouse) -> None:
        self.clickhouse = clickhouse
        self._outside: frozenset[str] | None = None

    def outside(self) -> frozenset[str]:
        """Lower-cased names of the table functions and engines that reach files, hosts or
        processes: every one ClickHouse knows except the allow lists'."""
        if self._outside is None:
            functions = {
                str(row[0]).lower() for row in self.clickhouse.rows("SELECT name FROM system.table_functions")
            }
            engines = {
                str(row[0]).lower() for row in self.clickhouse.rows("SELECT name FROM system.table_engines")
            }
            mergetrees = {name for name in engines if name.endswith("mergetree") and "replicated" not in name}
            self._outside = frozenset(
                (functions - SAFE_TABLE_FUNCTIONS) | (engines - SAFE_ENGINES - mergetrees) | {"file"}
            )
        return self._outside

    def parse(self, query: str) -> list[str]:
        """ClickHouse's parse of `query` (`EXPLAIN AST`), a line per node."""
        return str(self.clickhouse.command(f"EXPLAIN AST {query}")).splitlines()

    def refusal(self, query: str, tree: list[str] | None = None) -> str | None:
        """Why `query` (whose parse `tree` may be given) reaches beyond the database, or None."""
        tree = self.parse(query) if tree is None else tree
        if not tree:
            return None
        root = tree[0].split()[0] if tree[0].split() else ""
        for statement, why in REFUSED_STATEMENTS.items():
            if root == statement or tree[0].startswith(statement):
                return why
        outside = self.outside()
        for line in tree:
            if "Dictionary definition" in line:
                return "dictionaries load from sources outside the database"
            match = _FUNCTION.match(line)
            if match and match.group(1).lower() in outside:
                return f"{match.group(1)} reaches files, hosts or processes outside the database"
        children = [line for line in tree[1:] if line.startswith(" ") and not line.startswith("  ")]
        if root in {"SelectWithUnionQuery", "InsertQuery"} and any(
            line.strip().startswith("Literal") for line in children
        ):
            return "INTO OUTFILE and FROM INFILE write and read files"
        return None
