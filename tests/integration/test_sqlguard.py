"""What the worker's `POST /sql` refuses, judged by ClickHouse's own parse (chDB)."""

from __future__ import annotations

import pytest

from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.sqlguard import SqlGuard

REFUSED = [
    ("SELECT * FROM file('/etc/passwd', 'LineAsString')", "file"),
    ("select * from /* quoted, commented */ `FILE`('/etc/passwd')", "FILE"),
    ("SELECT file('/etc/passwd')", "file"),
    ("INSERT INTO FUNCTION file('/tmp/x.csv', 'CSV', 'a Int32') SELECT 1", "file"),
    ("SELECT 1 INTO OUTFILE '/tmp/touchstream-outfile'", "OUTFILE"),
    ("INSERT INTO touchpoints FROM INFILE '/etc/hosts' FORMAT CSV", "INFILE"),
    ("SELECT * FROM url('http://127.0.0.1:8081/api/snapshot', 'JSONAsString')", "url"),
    ("WITH x AS (SELECT * FROM url('http://h/', CSV)) SELECT * FROM x", "url"),
    ("SELECT * FROM remote('127.0.0.1', system.one)", "remote"),
    ("SELECT * FROM s3('http://h/k')", "s3"),
    ("SELECT * FROM executable('x.sh', TSV, 'a Int32')", "executable"),
    ("CREATE TABLE f (a Int32) ENGINE = File(CSV)", "File"),
    ("CREATE TABLE u (a Int32) ENGINE = URL('http://h/', CSV)", "URL"),
    ("CREATE DICTIONARY d (k UInt64, v String) PRIMARY KEY k SOURCE(HTTP(url 'http://h' format 'TSV')) "
     "LAYOUT(FLAT()) LIFETIME(0)", "dictionaries"),
    ("BACKUP TABLE touchpoints TO File('/tmp/b')", "BACKUP"),
    ("ATTACH TABLE z FROM '/etc' (a Int32) ENGINE = MergeTree ORDER BY a", "ATTACH"),
    ("SYSTEM SHUTDOWN", "SYSTEM"),
]  # fmt: skip
ALLOWED = [
    "SELECT count() FROM touchpoints FINAL",
    "SELECT channel, count() FROM touchpoints GROUP BY channel FORMAT CSV",
    "SELECT * FROM numbers(3)",
    "SELECT format('{} events', 3)",
    "DELETE FROM waiting WHERE customer_id = 'c-1'",
    "OPTIMIZE TABLE engagement FINAL",
    "CREATE TABLE scratch (a Int32) ENGINE = ReplacingMergeTree ORDER BY a",
    "CREATE TABLE scratch2 (a Int32) ENGINE = Memory",
    "SHOW TABLES",
    "DESCRIBE TABLE touchpoints",
]


@pytest.mark.parametrize(("query", "named"), REFUSED)
def test_statements_reaching_beyond_the_database_are_refused(
    clickhouse: ClickHouse, query: str, named: str
) -> None:
    why = SqlGuard(clickhouse).refusal(query)
    assert why is not None and named in why


def test_statements_on_the_database_run(clickhouse: ClickHouse) -> None:
    guard = SqlGuard(clickhouse)
    assert {query: guard.refusal(query) for query in ALLOWED} == dict.fromkeys(ALLOWED)
