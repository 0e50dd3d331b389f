"""How the ClickHouse HTTP endpoint reads a request: query, format, parameters, settings,
credentials (no ClickHouse needed)."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from touchstream.clickhouse_http import (
    CREDENTIALS_FILE,
    QueryError,
    bind,
    credentials,
    error_body,
    parse,
    presented,
)


def test_the_query_joins_the_url_and_the_body_and_its_format_clause_names_the_format() -> None:
    query = parse(
        {"query": "SELECT channel, count()"}, "FROM touchpoints GROUP BY channel FORMAT JSONEachRow;"
    )
    assert query.sql == "SELECT channel, count() FROM touchpoints GROUP BY channel"
    assert query.fmt == "JSONEachRow"


def test_without_a_format_clause_default_format_then_tab_separated() -> None:
    assert parse({"default_format": "JSONCompact"}, "SELECT 1").fmt == "JSONCompact"
    assert parse({}, "SELECT 1").fmt == "TabSeparated"
    with pytest.raises(QueryError) as refused:
        parse({"default_format": "JSON; DROP"}, "SELECT 1")
    assert refused.value.code == 73


def test_an_empty_query_is_a_syntax_error() -> None:
    with pytest.raises(QueryError) as refused:
        parse({}, "  ;")
    assert refused.value.code == 62


def test_only_settings_that_shape_the_output_are_taken() -> None:
    url = {
        "query": "SELECT 1",
        "output_format_json_quote_64bit_integers": "0",
        "date_time_output_format": "iso",
        "readonly": "0",
        "max_execution_time": "3600",
        "max_memory_usage": "0",
        "session_id": "abc",
        "param_x": "1",
        "output_format_evil": "1; DROP TABLE x",
    }
    assert parse(url, "").settings == {
        "output_format_json_quote_64bit_integers": "0",
        "date_time_output_format": "iso",
    }


def test_parameters_are_bound_as_values_of_their_type() -> None:
    sql = bind(
        "SELECT {n:UInt32}, {s:String}, {a:Array(String)}, {d:DateTime('UTC')} FROM {t:Identifier}",
        {
            "n": "41",
            "s": "it's\\ta \\\\ b",
            "a": "['x','y']",
            "d": "2026-01-02 03:04:05",
            "t": "touch`points",
        },
    )
    assert sql == (
        "SELECT _CAST('41', 'UInt32'), _CAST('it\\'s\ta \\\\ b', 'String'), _CAST('[\\'x\\',\\'y\\']', "
        "'Array(String)'), _CAST('2026-01-02 03:04:05', 'DateTime(\\'UTC\\')') FROM `touch\\`points`"
    )


def test_a_missing_parameter_is_named() -> None:
    with pytest.raises(QueryError) as refused:
        bind("SELECT {n:UInt8}", {})
    assert refused.value.code == 456 and "`n`" in str(refused.value)


def test_credentials_come_from_basic_auth_the_clickhouse_headers_or_the_url() -> None:
    basic = "Basic " + base64.b64encode(b"analyst:s3cr:et").decode()
    assert presented({"Authorization": basic}, {}) == ("analyst", "s3cr:et")
    assert presented({"X-ClickHouse-User": "a", "X-ClickHouse-Key": "k"}, {}) == ("a", "k")
    assert presented({}, {"user": "a", "password": "p"}) == ("a", "p")
    assert presented({"Authorization": "Basic !!"}, {}) is None
    assert presented({}, {}) is None


def test_credentials_are_made_once_0600_and_kept(tmp_path: Path) -> None:
    made, path = credentials(tmp_path, None, None)
    assert path == tmp_path / CREDENTIALS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == f"{made.user}:{made.password}"
    again, _ = credentials(tmp_path, None, None)
    assert again == made and again.admit(made.user, made.password)
    assert not again.admit(made.user, made.password + "x") and not again.admit("other", made.password)
    configured, kept = credentials(tmp_path, "grafana", "pw")
    assert (configured.user, configured.password, kept) == ("grafana", "pw", None)


def test_errors_read_as_clickhouse_writes_them() -> None:
    assert error_body(516, "a: Authentication failed", "26.9") == (
        b"Code: 516. DB::Exception: a: Authentication failed (AUTHENTICATION_FAILED) (version 26.9)\n"
    )
    wrapped = "query failed: code 60 UNKNOWN_TABLE: Code: 60. DB::Exception: Unknown table x. (UNKNOWN_TABLE)"
    assert (
        error_body(60, wrapped, "26.9")
        == b"Code: 60. DB::Exception: Unknown table x. (UNKNOWN_TABLE) (version 26.9)\n"
    )
