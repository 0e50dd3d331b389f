"""ClickHouse's HTTP interface on the embedded store, for analysts' own tools.

In embedded mode one process owns the chDB directory, so Grafana, Metabase, Superset,
dbt or DBeaver cannot open it; this endpoint, served by that process (`up`, `worker`),
answers them as a ClickHouse server would over HTTP: the query in the URL's `query`
parameter and/or the body, `{name:Type}` parameters as `param_name`, the output format
from the query's `FORMAT`, `default_format` or TabSeparated, compressed when
`enable_http_compression=1` and `Accept-Encoding` asks (gzip, deflate, zstd, lz4), and
errors as ClickHouse writes them (`Code: N. DB::Exception: ...`, the code in
`X-ClickHouse-Exception-Code`, the same HTTP statuses).

It is read-only, always: every statement runs with ClickHouse's `readonly = 1` (writes,
DDL and settings changes are refused with code 164, READONLY) after the `/sql` guard
(`sinks.sqlguard`: nothing that reaches files, hosts or processes), within the read
bounds of every read (`TOUCHSTREAM_READ_SECONDS`, `TOUCHSTREAM_READ_MEMORY_MB`), and
behind the sink's writes. On by default, on loopback: a local tool connects at once,
and nothing beyond the machine reaches the data unless an operator binds it wider. It
always wants the user and password (HTTP basic, `X-ClickHouse-User`/`-Key`, or the
`user`/`password` URL parameters): `TOUCHSTREAM_CLICKHOUSE_HTTP_USER`/`_PASSWORD`, or
else those kept in `<data dir>/clickhouse.credentials` (`user:password`, 0600, made at
the first start and kept, so a configured tool keeps working across restarts).

Unqualified table names resolve to Touchstream's database whatever `database` a client
names (ClickHouse's `default` is where most tools start). Settings a client sends in
the URL are applied when they shape the output (`output_format_*`, `date_time_output_format`,
result limits...); the rest (sessions, progress headers, other limits) are ignored,
since the read bounds and `readonly` are not the client's to change.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import gzip
import hmac
import json
import logging
import re
import secrets
import time
import uuid
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import lz4.frame
from aiohttp import web

from touchstream.broker import free_port, refuse_busy_port
from touchstream.datadir import write_secret
from touchstream.listeners import Bounds, Listener
from touchstream.schemas.errors import ClickHouseError, ConfigError
from touchstream.settings import Settings
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.sqlguard import SqlGuard

try:  # Python 3.14's compression.zstd, or its backport (a clickhouse-connect dependency)
    from compression import zstd  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - depends on the Python version
    from backports import zstd

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "clickhouse.credentials"
DEFAULT_USER = "analyst"
#: The largest query (URL and body) the endpoint reads.
MAX_QUERY_BYTES = 1 << 20
#: Queries that may wait for their turn at once; more are refused (code 202).
MAX_WAITING = 8
DEFAULT_FORMAT = "TabSeparated"
#: The statements the endpoint runs, by the first word of ClickHouse's parse.
READING_STATEMENTS = ("SelectWithUnionQuery", "Show", "Describe", "Exists", "Explain")

#: URL parameters of the HTTP protocol itself, not settings.
PROTOCOL_PARAMETERS = frozenset({
    "query", "database", "default_format", "user", "password", "query_id", "quota_key", "session_id",
    "session_timeout", "session_check", "compress", "decompress", "enable_http_compression",
    "http_zlib_compression_level", "wait_end_of_query", "buffer_size", "send_progress_in_http_headers",
    "http_headers_progress_interval_ms", "add_http_cors_header", "http_response_buffer_size",
    "role", "client_protocol_version", "http_wait_end_of_query",
    "cancel_http_readonly_queries_on_client_close",
})  # fmt: skip
#: Settings a client may send: they shape the output, not what the query may do or cost.
CLIENT_SETTINGS = re.compile(
    r"^(output_format_\w+|format_\w+|date_time_output_format|date_time_input_format|max_result_rows"
    r"|max_result_bytes|result_overflow_mode|extremes|join_use_nulls|max_block_size|limit|offset"
    r"|session_timezone|use_client_time_zone|input_format_\w+|allow_experimental_\w+"
    r"|join_algorithm|prefer_column_name_to_alias)$"
)
_SETTING_VALUE = re.compile(r"^[\w.:+\- ]*$")
#: What `sinks.clickhouse.wrap` puts before ClickHouse's own message.
_DRIVER_PREFIX = re.compile(r"(?:[^:]* failed: )?code \d+ \w+: $")
_TRAILING_FORMAT = re.compile(r"\bFORMAT\s+([A-Za-z][A-Za-z0-9]*)\s*;?\s*$", re.IGNORECASE)
#: Escapes of ClickHouse's TabSeparated text, in which a parameter's value is given.
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "b": "\b", "f": "\f", "0": "\0", "a": "\a", "v": "\v"}
_PARAMETER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*([^{}]+?)\s*\}")
#: HTTP statuses ClickHouse answers per error code (the rest: 500).
_STATUS = {
    **dict.fromkeys((192, 193, 194, 516), 401),  # UNKNOWN_USER, WRONG_PASSWORD, REQUIRED_PASSWORD, AUTH...
    **dict.fromkeys((164, 291, 497), 403),  # READONLY, DATABASE_ACCESS_DENIED, ACCESS_DENIED
    **dict.fromkeys((60, 81, 83), 404),  # UNKNOWN_TABLE, UNKNOWN_DATABASE, UNKNOWN_DATABASE_ENGINE
    **dict.fromkeys((26, 27, 36, 46, 47, 62, 73, 115, 456, 457), 400),  # parse errors, unknown names
    202: 503,  # TOO_MANY_SIMULTANEOUS_QUERIES
}
_ERROR_NAMES = {
    62: "SYNTAX_ERROR", 164: "READONLY", 202: "TOO_MANY_SIMULTANEOUS_QUERIES", 456: "UNKNOWN_QUERY_PARAMETER",
    516: "AUTHENTICATION_FAILED", 1002: "UNKNOWN_EXCEPTION",
}  # fmt: skip
_CONTENT_TYPES = (
    ("JSON", "application/json; charset=UTF-8"),
    ("TabSeparated", "text/tab-separated-values; charset=UTF-8"),
    ("TSV", "text/tab-separated-values; charset=UTF-8"),
    ("CSV", "text/csv; charset=UTF-8; header=absent"),
    ("Native", "application/octet-stream"),
    ("RowBinary", "application/octet-stream"),
    ("Arrow", "application/octet-stream"),
    ("Parquet", "application/octet-stream"),
)
_ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "deflate": zlib.compress,
    "zstd": zstd.compress,
    "lz4": lz4.frame.compress,
}
_DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.decompress,
    "deflate": zlib.decompress,
    "zstd": zstd.decompress,
    "lz4": lz4.frame.decompress,
}


def check_port(settings: Settings) -> None:
    refuse_busy_port(
        settings.clickhouse_http_host, settings.clickhouse_http_port, "TOUCHSTREAM_CLICKHOUSE_HTTP_PORT",
        suspect=" (a ClickHouse server?)", instead=", or TOUCHSTREAM_CLICKHOUSE_HTTP=false",
    )  # fmt: skip


class QueryError(Exception):
    """A request refused before ClickHouse runs it, with ClickHouse's code for the reason."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Credentials:
    user: str
    password: str = field(repr=False)

    def admit(self, user: str, password: str) -> bool:
        same_user = hmac.compare_digest(user.encode(), self.user.encode())
        return hmac.compare_digest(password.encode(), self.password.encode()) and same_user


def credentials(data_dir: Path, user: str | None, password: str | None) -> tuple[Credentials, Path | None]:
    """The endpoint's user and password: the configured ones, or those kept in the data
    dir's `clickhouse.credentials` (made 0600 at the first start); and that file, if used."""
    if password is not None:
        return Credentials(user or DEFAULT_USER, password), None
    path = data_dir / CREDENTIALS_FILE
    if path.exists():
        kept_user, separator, kept_password = path.read_text().strip().partition(":")
        if not separator or not kept_user or not kept_password:
            raise ConfigError(f"{path} must hold one line user:password")
        if user is None or user == kept_user:
            return Credentials(kept_user, kept_password), path
    made = Credentials(user or DEFAULT_USER, secrets.token_urlsafe(24))
    write_secret(path, f"{made.user}:{made.password}\n")
    return made, path


def presented(headers: Mapping[str, str], url: Mapping[str, str]) -> tuple[str, str] | None:
    """The user and password a request presents, as ClickHouse reads them, or None."""
    if "X-ClickHouse-User" in headers:
        return headers["X-ClickHouse-User"], headers.get("X-ClickHouse-Key", "")
    scheme, _, value = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return user, password
    if "user" in url:
        return url["user"], url.get("password", "")
    return None


@dataclass(frozen=True)
class Query:
    """What to run: the statement (parameters bound, no FORMAT clause), its output format
    and the client's output settings."""

    sql: str
    fmt: str
    settings: dict[str, str]


def parse(url: Mapping[str, str], body: str) -> Query:
    """The query a request asks for, as ClickHouse's HTTP interface reads it."""
    sql = " ".join(part for part in (url.get("query", ""), body) if part.strip()).strip().rstrip(";").strip()
    if not sql:
        raise QueryError(62, "Empty query")
    fmt = url.get("default_format") or DEFAULT_FORMAT
    found = _TRAILING_FORMAT.search(sql)
    if found is not None:
        fmt, sql = found.group(1), sql[: found.start()].rstrip()
    if not re.match(r"^[A-Za-z][A-Za-z0-9]*$", fmt):
        raise QueryError(73, f"Unknown format {fmt}")
    parameters = {name[len("param_") :]: value for name, value in url.items() if name.startswith("param_")}
    settings = {
        name: value
        for name, value in url.items()
        if name not in PROTOCOL_PARAMETERS
        and not name.startswith("param_")
        and CLIENT_SETTINGS.match(name)
        and _SETTING_VALUE.match(value)
    }
    return Query(bind(sql, parameters), fmt, settings)


def bind(sql: str, parameters: Mapping[str, str]) -> str:
    """`sql` with each `{name:Type}` replaced by its value parsed as that type, as ClickHouse
    does: the value is text in the type's escaped format (a `String` is unescaped first; an
    `Identifier` is a name)."""

    def value(match: re.Match[str]) -> str:
        name, kind = match.group(1), match.group(2)
        if name not in parameters:
            raise QueryError(456, f"Substitution `{name}` is not set")
        text = parameters[name]
        if kind == "Identifier":
            return "`" + text.replace("\\", "\\\\").replace("`", "\\`") + "`"
        if kind == "String":
            text = _ESCAPE.sub(lambda escape: _ESCAPES.get(escape.group(1), escape.group(1)), text)
        return f"_CAST({_literal(text)}, {_literal(kind)})"

    return _PARAMETER.sub(value, sql)


def _literal(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def content_type(fmt: str) -> str:
    for prefix, kind in _CONTENT_TYPES:
        if fmt.startswith(prefix):
            return kind
    return "text/plain; charset=UTF-8"


def error_body(code: int, message: str, version: str) -> bytes:
    """An error as ClickHouse writes it."""
    text = message.strip().splitlines()[0] if message.strip() else "Unknown error"
    if "Code: " in text:
        ours, text = text[: text.index("Code: ")], text[text.index("Code: ") :]
        hint = _DRIVER_PREFIX.sub("", ours).strip().rstrip(":")  # e.g. which read bound stopped it
        if hint:
            text = f"{text.rstrip()}; {hint}"
    else:
        name = _ERROR_NAMES.get(code, "")
        text = f"Code: {code}. DB::Exception: {text}" + (f" ({name})" if name else "")
    if "(version" not in text:
        text += f" (version {version})"
    return (text + "\n").encode()


class Endpoint:
    """The request handler: authenticate, parse, guard, run, answer."""

    def __init__(self, clickhouse: ClickHouse, admitted: Credentials) -> None:
        self.clickhouse = clickhouse
        self.admitted = admitted
        self.guard = SqlGuard(clickhouse)
        self.version = "unknown"
        self.timezone = "UTC"
        self._waiting = 0

    def describe_server(self) -> None:
        row = self.clickhouse.rows("SELECT version(), timezone()", read_only=True)[0]
        self.version, self.timezone = str(row[0]), str(row[1])

    def refusal(self, sql: str) -> tuple[int, str] | None:
        """Why the endpoint does not run `sql` (ClickHouse's code and a message), or None: it
        reads only (SELECT, SHOW, DESCRIBE, EXISTS, EXPLAIN), takes settings only from the URL
        (a SETTINGS clause could lift the read bounds), and reaches nothing beyond the
        database (`sinks.sqlguard`)."""
        readonly = 164, f"{self.admitted.user}: Cannot execute query in readonly mode. (READONLY)"
        if sql.split(maxsplit=1)[0].upper() == "INSERT":  # its data would follow: no parse of it
            return readonly
        tree = self.guard.parse(sql)
        root = tree[0].split()[0] if tree and tree[0].split() else ""
        if not root.startswith(READING_STATEMENTS):
            return readonly
        if any(line.strip() == "Set" for line in tree):
            return 164, (
                "Cannot modify settings in a SETTINGS clause on this endpoint: send output settings "
                "as URL parameters; the read bounds are the server's. (READONLY)"
            )
        why = self.guard.refusal(sql, tree)
        if why is not None:
            return 164, f"{why}: the endpoint is read-only. (READONLY)"
        return None

    def _error(self, code: int, message: str, query_id: str) -> web.Response:
        return web.Response(
            status=_STATUS.get(code, 500),
            body=error_body(code, message, self.version),
            content_type="text/plain",
            charset="UTF-8",
            headers={
                "X-ClickHouse-Exception-Code": str(code),
                "X-ClickHouse-Query-Id": query_id,
                "X-ClickHouse-Server-Display-Name": "touchstream",
            },
        )

    async def handle(self, request: web.Request) -> web.StreamResponse:
        query_id = request.query.get("query_id") or str(uuid.uuid4())
        if request.path in ("/ping", "/") and "query" not in request.query and not request.body_exists:
            return web.Response(text="Ok.\n")
        if request.path != "/":
            return self._error(1002, f"There is no handle {request.path}", query_id)
        given = presented(request.headers, request.query)
        if given is None or not self.admitted.admit(*given):
            user = given[0] if given else "default"
            return self._error(
                516, f"{user}: Authentication failed: password is incorrect, or there is no user with "
                "such name.", query_id,
            )  # fmt: skip
        try:
            raw = await request.read()
            encoding = request.headers.get("Content-Encoding", "").strip().lower()
            if encoding and encoding != "identity":
                if encoding not in _DECODERS:
                    raise QueryError(36, f"Unknown Content-Encoding {encoding}")
                raw = _DECODERS[encoding](raw)
            query = parse(request.query, raw.decode())
        except QueryError as bad:
            return self._error(bad.code, str(bad), query_id)
        except (UnicodeDecodeError, OSError, ValueError, RuntimeError) as error:
            return self._error(36, f"Cannot read the request body: {error}", query_id)
        log.debug("clickhouse http query %s: %s", query_id, query.sql)
        if self._waiting >= MAX_WAITING:
            return self._error(202, f"Too many simultaneous queries. Maximum: {MAX_WAITING}", query_id)
        self._waiting += 1
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        try:
            why: tuple[int, str] | None = await loop.run_in_executor(None, self.refusal, query.sql)
            if why is not None:
                return self._error(*why, query_id)
            settings = {**query.settings, "readonly": "2"}
            run = functools.partial(
                self.clickhouse.formatted, query.sql, query.fmt, bounded=True, settings=settings
            )
            output = await loop.run_in_executor(None, run)
        except ClickHouseError as error:
            return self._error(error.code or 1002, str(error), query_id)
        finally:
            self._waiting -= 1
        summary = {
            "read_rows": "0", "read_bytes": "0", "written_rows": "0", "written_bytes": "0",
            "total_rows_to_read": "0", "result_rows": "0", "result_bytes": str(len(output)),
            "elapsed_ns": str(int((time.monotonic() - started) * 1e9)),
        }  # fmt: skip
        headers = {
            "X-ClickHouse-Format": query.fmt,
            "X-ClickHouse-Timezone": self.timezone,
            "X-ClickHouse-Query-Id": query_id,
            "X-ClickHouse-Server-Display-Name": "touchstream",
            "X-ClickHouse-Summary": json.dumps(summary),
            "Content-Type": content_type(query.fmt),
        }
        if request.query.get("enable_http_compression") in ("1", "true"):
            accepted = request.headers.get("Accept-Encoding", "").split(",")
            for encoding in (part.split(";")[0].strip().lower() for part in accepted):
                if encoding in _ENCODERS:
                    output = _ENCODERS[encoding](output)
                    headers["Content-Encoding"] = encoding
                    break
        return web.Response(body=output, headers=headers)


def application(endpoint: Endpoint) -> web.Application:
    app = web.Application(client_max_size=MAX_QUERY_BYTES)
    app.router.add_route("*", "/{tail:.*}", endpoint.handle)
    return app


class ClickHouseHttpService(Listener):
    """The endpoint as a service of the process that owns chDB (`up`, `worker`)."""

    def __init__(
        self,
        clickhouse: ClickHouse,
        admitted: Credentials,
        host: str,
        port: int,
        *,
        bounds: Bounds,
        kept: Path | None = None,
    ) -> None:
        self.endpoint = Endpoint(clickhouse, admitted)
        super().__init__(lambda: application(self.endpoint), host, port, bounds=bounds)
        self.kept = kept

    @classmethod
    def configured(
        cls, settings: Settings, clickhouse: ClickHouse, *, bounds: Bounds
    ) -> ClickHouseHttpService:
        secret = settings.clickhouse_http_password
        password = secret.get_secret_value() if secret else None
        admitted, kept = credentials(settings.data_dir, settings.clickhouse_http_user, password)
        port = settings.clickhouse_http_port or free_port(settings.clickhouse_http_host)
        return cls(clickhouse, admitted, settings.clickhouse_http_host, port, bounds=bounds, kept=kept)

    def describe(self) -> str:
        where = "TOUCHSTREAM_CLICKHOUSE_HTTP_USER/_PASSWORD"
        if self.kept is not None:
            where = f"user and password in {self.kept}"
        return f"http://{self.host}:{self.port}  (read-only, user {self.endpoint.admitted.user}; {where})"

    async def on_start(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.endpoint.describe_server)
        await super().on_start()
