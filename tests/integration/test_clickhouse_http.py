"""The ClickHouse HTTP endpoint on the embedded chDB, as real clients use it:
clickhouse-connect over HTTP, and plain HTTP requests as Grafana's and dbt's drivers send."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import clickhouse_connect
import lz4.frame
import pytest
from aiohttp import web
from clickhouse_connect.driver.exceptions import DatabaseError

from tests.factories import event
from touchstream.broker import free_port
from touchstream.clickhouse_http import Credentials, Endpoint, application
from touchstream.listeners import bounded_body
from touchstream.schemas.topics import Source
from touchstream.sinks import touchpoints
from touchstream.sinks.clickhouse import ClickHouse

USER, PASSWORD = "analyst", "correct horse"
EVENTS = 5


@pytest.fixture
def endpoint(clickhouse: ClickHouse) -> Iterator[int]:
    """The endpoint on the test's database, with five touchpoints; yields its port."""
    sources = [Source("t", 0, n) for n in range(EVENTS)]
    events = [event(event_id=f"e-{n}", customer_id=f"c-{n % 2}") for n in range(EVENTS)]
    touchpoints.write(clickhouse, list(zip(events, sources, strict=True)), sources)
    serving = Endpoint(clickhouse, Credentials(USER, PASSWORD))
    serving.describe_server()
    with served(serving) as port:
        yield port


@contextmanager
def served(serving: Endpoint) -> Iterator[int]:
    """`serving` on a free loopback port, in a thread of its own; yields the port."""
    port = free_port()
    loop = asyncio.new_event_loop()
    app = application(serving)
    app.middlewares.append(bounded_body)  # as every listener of the process has it
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    loop.run_until_complete(start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def client(port: int, **options: Any) -> Any:
    return clickhouse_connect.get_client(
        host="127.0.0.1", port=port, username=USER, password=PASSWORD, **options
    )


def http(
    port: int, query: str, *, params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
    auth: bool = True,
) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    sent = {"X-ClickHouse-User": USER, "X-ClickHouse-Key": PASSWORD} if auth else {}
    url = f"http://127.0.0.1:{port}/?" + urllib.parse.urlencode(params or {})
    request = urllib.request.Request(url, data=query.encode(), headers={**sent, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def test_clickhouse_connect_connects_and_reads_rows(endpoint: int) -> None:
    reader = client(endpoint)
    assert reader.server_version.count(".") >= 2
    rows = reader.query(
        "SELECT customer_id, count() FROM touchpoints GROUP BY customer_id ORDER BY 1"
    ).result_rows
    assert rows == [("c-0", 3), ("c-1", 2)]
    bound = reader.query(
        "SELECT count() FROM touchpoints WHERE customer_id = {customer:String} AND event_id != {skip:String}",
        parameters={"customer": "c-0", "skip": "e-0"},
    )
    assert bound.result_rows == [(2,)]
    client_side = reader.query(
        "SELECT count() FROM touchpoints WHERE customer_id = %(c)s", parameters={"c": "c-1"}
    )
    assert client_side.result_rows == [(2,)]
    assert reader.command("SELECT currentUser() != ''") == 1
    # Settings are the client's to send (in the URL, readonly = 2), the statement's are not.
    assert reader.command("SELECT getSetting('readonly')") == 2
    shown = reader.query("SHOW TABLES").result_rows
    assert ("touchpoints",) in shown


@pytest.mark.parametrize("compression", ["lz4", "zstd", "gzip"])
def test_compressed_answers_read_the_same(endpoint: int, compression: str) -> None:
    rows = (
        client(endpoint, compress=compression)
        .query("SELECT event_id FROM touchpoints ORDER BY 1")
        .result_rows
    )
    assert rows == [(f"e-{n}",) for n in range(EVENTS)]


def test_the_answer_is_compressed_when_asked(endpoint: int) -> None:
    query = "SELECT event_id FROM touchpoints ORDER BY 1 FORMAT TSV"
    for encoding, decode in (("gzip", gzip.decompress), ("lz4", lz4.frame.decompress)):
        status, headers, body = http(
            endpoint, query, params={"enable_http_compression": "1"}, headers={"Accept-Encoding": encoding}
        )
        assert (status, headers["Content-Encoding"]) == (200, encoding)
        assert decode(body).decode().split() == [f"e-{n}" for n in range(EVENTS)]
    status, headers, body = http(endpoint, query, headers={"Accept-Encoding": "gzip"})
    assert "Content-Encoding" not in headers and body.decode().split()[0] == "e-0"


def test_the_formats_clients_ask_for(endpoint: int) -> None:
    query = "SELECT customer_id, count() AS n FROM touchpoints GROUP BY customer_id ORDER BY 1"
    status, headers, body = http(endpoint, query, params={"default_format": "JSONCompact"})
    assert status == 200 and headers["X-ClickHouse-Format"] == "JSONCompact"
    assert json.loads(body)["data"] == [["c-0", 3], ["c-1", 2]]
    status, headers, body = http(endpoint, query + " FORMAT TabSeparatedWithNamesAndTypes")
    assert body.decode().splitlines() == ["customer_id\tn", "String\tUInt64", "c-0\t3", "c-1\t2"]
    status, _, body = http(
        endpoint, query + " FORMAT JSONEachRow", params={"output_format_json_quote_64bit_integers": "1"}
    )
    assert [json.loads(line) for line in body.splitlines()] == [
        {"customer_id": "c-0", "n": "3"},  # the client's output setting applies
        {"customer_id": "c-1", "n": "2"},
    ]
    for fmt in ("RowBinaryWithNamesAndTypes", "Native"):
        status, headers, body = http(endpoint, query + f" FORMAT {fmt}")
        assert status == 200 and headers["Content-Type"] == "application/octet-stream" and b"c-0" in body
    status, headers, body = http(endpoint, "", params={"query": "SELECT {n:UInt8} + 1", "param_n": "41"})
    assert (status, body) == (200, b"42\n")


def test_a_wrong_password_is_refused_with_clickhouse_code_516(endpoint: int) -> None:
    with pytest.raises(DatabaseError) as refused:
        clickhouse_connect.get_client(host="127.0.0.1", port=endpoint, username=USER, password="wrong")
    assert "516" in str(refused.value) and "AUTHENTICATION_FAILED" in str(refused.value)
    status, headers, _ = http(endpoint, "SELECT 1", auth=False)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (401, "516")
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert http(endpoint, "SELECT 1", auth=False, headers={"Authorization": basic})[::2] == (200, b"1\n")


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO touchpoints (event_id, customer_id) VALUES ('x', 'y')",
        "DROP TABLE touchpoints",
        "TRUNCATE TABLE touchpoints",
        "ALTER TABLE touchpoints DELETE WHERE 1",
        "CREATE TABLE scratch (a Int32) ENGINE = Memory",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT count() FROM numbers(10) SETTINGS max_execution_time = 3600",
        "SET max_execution_time = 0",
        "USE system",
        "OPTIMIZE TABLE touchpoints FINAL",
        "KILL QUERY WHERE 1",
    ],
)
def test_writes_and_reaches_beyond_the_database_are_refused_with_code_164(
    endpoint: int, clickhouse: ClickHouse, statement: str
) -> None:
    with pytest.raises(DatabaseError) as refused:
        client(endpoint).command(statement)
    assert "164" in str(refused.value)
    status, headers, _ = http(endpoint, statement)
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (403, "164")
    assert clickhouse.scalar("SELECT count() FROM touchpoints") == EVENTS


def test_errors_carry_clickhouse_codes(endpoint: int) -> None:
    status, headers, body = http(endpoint, "SELECT * FROM no_such_table")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (404, "60")
    assert body.startswith(b"Code: 60. DB::Exception:")
    status, headers, _ = http(endpoint, "SELEC 1")
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (400, "62")


def test_a_read_past_its_bound_is_stopped(chdb_client: Any, clickhouse: ClickHouse) -> None:
    bounded = ClickHouse(chdb_client, database=clickhouse.database, embedded=True, read_seconds=0.5)
    with served(Endpoint(bounded, Credentials(USER, PASSWORD))) as port:
        status, headers, body = http(
            port, "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = 0"
        )
    assert (status, headers["X-ClickHouse-Exception-Code"]) == (500, "159"), body
    assert b"TOUCHSTREAM_READ_SECONDS" in body


def test_ping(endpoint: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{endpoint}/ping", timeout=10) as answer:
        assert answer.read() == b"Ok.\n"
