from __future__ import annotations

import asyncio

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from tests.factories import event
from touchstream.schemas.errors import ClickHouseError
from touchstream.schemas.topics import Source
from touchstream.sinks import touchpoints
from touchstream.sinks.clickhouse import wrap
from touchstream.sinks.ddl import TABLES, migrations
from touchstream.sinks.retry import Backoff, until_written


def test_row_matches_columns_and_carries_the_source() -> None:
    row = touchpoints.row(
        event(kind="survey_response", survey={"type": "nps", "score": 9}, attributes={"a": "b"}),
        Source("touchpoints.chat", 3, 17),
    )
    assert len(row) == len(touchpoints.COLUMNS)
    values = dict(zip(touchpoints.COLUMNS, row, strict=True))
    assert values["survey_type"] == "nps" and values["survey_score"] == 9
    assert values["occurred_at"].tzinfo is not None
    assert (values["source_topic"], values["source_partition"], values["source_offset"]) == (
        "touchpoints.chat", 3, 17,
    )  # fmt: skip
    assert values["attributes"] == {"a": "b"}


def test_every_row_column_exists_in_the_table_ddl() -> None:
    ddl = TABLES["touchpoints"]
    for column in touchpoints.COLUMNS:
        assert f"\n        {column} " in ddl


def test_dedup_token_identifies_the_records_not_their_order() -> None:
    a, b, c = Source("t", 0, 1), Source("t", 0, 2), Source("t", 1, 1)
    assert touchpoints.dedup_token([a, b, c]) == touchpoints.dedup_token([c, a, b])
    assert touchpoints.dedup_token([a, b]) != touchpoints.dedup_token([a, c])
    assert touchpoints.dedup_token([a]) != touchpoints.dedup_token([a, b])


def test_migrations_are_idempotent_statements() -> None:
    statements = migrations("touchstream")
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS touchstream"
    assert all(
        "IF NOT EXISTS" in statement or statement.startswith("CREATE OR REPLACE VIEW")
        for statement in statements
    )
    assert {
        "touchpoints",
        "responses",
        "engagement",
        "engagement_changes",
        "surveys",
        "waiting",
    } <= set(TABLES)


def test_backoff_grows_and_is_capped() -> None:
    backoff = Backoff(first_seconds=0.5, factor=2, max_seconds=3)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]


def test_until_written_retries_transient_clickhouse_errors_until_success() -> None:
    attempts: list[int] = []
    slept: list[float] = []
    failures = [
        wrap(DatabaseError("Code: 252. DB::Exception: Too many parts", code=252, name="TOO_MANY_PARTS")),
        wrap(OperationalError("Error HTTPConnectionPool: Connection refused")),
        wrap(DatabaseError("Code: 241. DB::Exception: Memory limit", code=241, name="MEMORY_LIMIT_EXCEEDED")),
    ]

    async def write() -> str:
        attempts.append(1)
        if len(attempts) <= len(failures):
            raise failures[len(attempts) - 1]
        return "written"

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    result = asyncio.run(until_written(write, what="test", backoff=Backoff(0.1, 2, 1), sleep=sleep))
    assert result == "written"
    assert len(attempts) == 4
    assert slept == [0.1, 0.2, 0.4]


@pytest.mark.parametrize(
    ("code", "name"),
    [(60, "UNKNOWN_TABLE"), (16, "NO_SUCH_COLUMN_IN_TABLE"), (53, "TYPE_MISMATCH"), (62, "SYNTAX_ERROR"),
     (516, "AUTHENTICATION_FAILED")],
)  # fmt: skip
def test_until_written_raises_a_permanent_error_at_once_with_its_code_and_name(code: int, name: str) -> None:
    attempts: list[int] = []
    driver = DatabaseError(f"Code: {code}. DB::Exception: something ({name}) (version 26.9.2.1)", code=code,
                           name=name)  # fmt: skip

    async def write() -> None:
        attempts.append(1)
        raise wrap(driver, "insert into touchstream.waiting")

    with pytest.raises(ClickHouseError) as raised:
        asyncio.run(until_written(write, what="test", sleep=lambda _s: asyncio.sleep(0)))
    assert attempts == [1], "not retried"
    error = raised.value
    assert (error.code, error.name, error.transient) == (code, name, False)
    assert str(error).startswith(f"insert into touchstream.waiting failed: code {code} {name}: Code: {code}.")


def test_until_written_does_not_swallow_other_errors() -> None:
    async def write() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        asyncio.run(until_written(write, what="test"))
