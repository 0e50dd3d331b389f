"""The owning process's small HTTP control surface, and the client `touchstream sql` uses.

In embedded mode one process (the worker started by `touchstream up`) holds the chDB
directory, so other processes cannot open it; they ask that process instead. The
worker writes `control.json` in the data dir with its URL and PID while it runs.

`POST /sql` runs any statement, so it wants a token, always: `TOUCHSTREAM_WORKER_TOKEN`,
or else one the worker makes at start in `<data dir>/control.token` (mode 0600, so only
the data dir's owner can read it; `touchstream sql` does). It also wants a JSON body and
the worker's own address in `Host`: a web page in a browser can send neither a bearer
header nor, across origins, `application/json` without a preflight the worker never
answers, and a foreign `Host` is what DNS rebinding looks like. Beyond loopback the
worker does not start without `TOUCHSTREAM_WORKER_TOKEN`. And it refuses statements that
reach beyond the database, files, hosts or processes (`sinks.sqlguard`), unless
`TOUCHSTREAM_WORKER_SQL_EXTERNAL` allows them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import os
import re
import secrets
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from touchstream.broker import is_loopback
from touchstream.datadir import write_secret
from touchstream.producers.health import Check, problems
from touchstream.schemas.errors import ClickHouseError, ConfigError, TouchstreamError
from touchstream.settings import Settings
from touchstream.sinks.clickhouse import ClickHouse
from touchstream.sinks.sqlguard import SqlGuard
from touchstream.worker import PipelineStats

CONTROL_FILE = "control.json"
FOREIGN_HOST = "the Host header must name this worker on loopback"
TOKEN_FILE = "control.token"
#: ClickHouse output format names are identifiers; anything else is refused before the query.
_FORMAT = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def check_format(fmt: str) -> str:
    if not _FORMAT.match(fmt):
        raise TouchstreamError(f"not a ClickHouse output format: {fmt!r}")
    return fmt


def control_token(settings: Settings) -> str:
    """The token `/sql` wants: the configured one, or a new one written 0600 in the data dir.
    Beyond loopback a configured token is required."""
    path = settings.data_dir / TOKEN_FILE
    if settings.worker_token is not None:
        path.unlink(missing_ok=True)  # a token of an earlier start would only mislead
        return settings.worker_token.get_secret_value()
    if not is_loopback(settings.worker_host):
        raise ConfigError(
            f"the worker binds to {settings.worker_host}, beyond loopback: set TOUCHSTREAM_WORKER_TOKEN "
            "to protect its control port"
        )
    token = secrets.token_urlsafe(32)
    write_secret(path, token)
    return token


def refusal(headers: Mapping[str, str], token: str, port: int) -> tuple[int, str] | None:
    """Why a `/sql` request is refused (status, reason), or None to serve it."""
    given = headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return 401, "a bearer token is required (the data dir's control.token, or TOUCHSTREAM_WORKER_TOKEN)"
    if headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
        return 415, "the body must be application/json"
    if foreign_host(headers, port):
        return 403, FOREIGN_HOST
    return None


def foreign_host(headers: Mapping[str, str], port: int) -> bool:
    """Whether `Host` names anything but this port on loopback (DNS rebinding)."""
    host, _, host_port = headers.get("Host", "").rpartition(":")
    return not is_loopback(host.strip("[]")) or host_port != str(port)


def application(
    clickhouse: ClickHouse,
    stats: PipelineStats,
    *,
    port: int,
    loopback: bool = True,
    token: str | None = None,
    external: bool = False,
    stopping: asyncio.Event | None = None,
    readiness: Sequence[Check] = (),
) -> web.Application:
    """The worker's control port: `/status`, `/healthz` (503 with the reasons while a
    `readiness` check fails) and `/metrics` (Prometheus) always, and `/sql` when the
    process owns an embedded chDB (`token` given: see the module docstring; `external`
    allows statements that reach files, hosts or processes; `stopping` is set when the
    worker begins to stop). On loopback (`loopback`), every route wants this port's own
    loopback address in `Host`, so a page in a browser cannot read it through DNS rebinding.

    `/sql` exists only for the embedded case, where the worker is the one process able to
    open chDB; against a ClickHouse server, `touchstream sql` connects to that server
    with its own credentials.
    """
    routes = web.RouteTableDef()

    @web.middleware
    async def own_host(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if loopback and foreign_host(request.headers, port):
            return web.Response(
                status=403, text="refused: the Host header must name this worker on loopback\n"
            )
        return await handler(request)

    @routes.get("/status")
    async def status(request: web.Request) -> web.Response:
        return web.json_response({"pid": os.getpid(), **stats.as_dict()})

    @routes.get("/healthz")
    async def health(request: web.Request) -> web.Response:
        failing = await asyncio.get_running_loop().run_in_executor(None, problems, readiness)
        if failing:
            return web.json_response({"status": "not ready", "reasons": failing}, status=503)
        return web.json_response({"status": "ok"})

    @routes.get("/metrics")
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text=stats.prometheus(), headers={"Content-Type": "text/plain; version=0.0.4"})

    if clickhouse.embedded and token is not None:
        required: str = token
        guard = None if external else SqlGuard(clickhouse)
        shutdown: asyncio.Event = stopping or asyncio.Event()

        @routes.post("/sql")
        async def sql(request: web.Request) -> web.Response:
            refused = refusal(request.headers, required, port)
            if refused is not None:
                status, reason = refused
                return web.Response(status=status, text=f"refused: {reason}\n")
            try:
                body = json.loads(await request.read())
                query, fmt = str(body["query"]), check_format(str(body.get("format", "TSV")))
            except (ValueError, KeyError, TypeError, TouchstreamError) as error:
                return web.Response(status=400, text=f"bad request: {error}\n")
            loop = asyncio.get_running_loop()
            try:
                why = None if guard is None else await loop.run_in_executor(None, guard.refusal, query)
                if why is not None:
                    return web.Response(
                        status=403, text=f"refused: {why} (TOUCHSTREAM_WORKER_SQL_EXTERNAL=true allows it)\n"
                    )
                work: asyncio.Future[bytes] = loop.run_in_executor(
                    None, functools.partial(clickhouse.formatted, query, fmt, bounded=True)
                )
                # A query can outlast the worker's shutdown, which waits for open requests:
                # the answer then says so, and the query is left to the process's exit.
                stop: asyncio.Future[Any] = asyncio.ensure_future(shutdown.wait())
                await asyncio.wait([work, stop], return_when=asyncio.FIRST_COMPLETED)
                stop.cancel()
                if not work.done():
                    return web.Response(status=503, text="the worker is stopping; the query did not finish\n")
                output = work.result()
            except ClickHouseError as error:
                return web.Response(status=400, text=f"{error}\n")
            return web.Response(body=output, content_type="application/octet-stream")

    app = web.Application(middlewares=[own_host])
    app.add_routes(routes)
    return app


@dataclass(frozen=True)
class ControlInfo:
    url: str
    pid: int
    bootstrap: str
    #: The ops dashboard this process serves, if any (`touchstream top` reads it).
    dashboard: str | None = None
    #: The token its `/sql` wants (read from the data dir, never written to control.json).
    token: str | None = None


def write_info(data_dir: Path, info: ControlInfo) -> Path:
    path = data_dir / CONTROL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = {"url": info.url, "pid": info.pid, "bootstrap": info.bootstrap, "dashboard": info.dashboard}
    path.write_text(json.dumps(fields))
    return path


def read_info(data_dir: Path) -> ControlInfo | None:
    """The running owner of `data_dir`, or None when no live process claims it."""
    try:
        raw: dict[str, Any] = json.loads((data_dir / CONTROL_FILE).read_text())
        dashboard = raw.get("dashboard")
        token_file = data_dir / TOKEN_FILE
        info = ControlInfo(
            url=str(raw["url"]),
            pid=int(raw["pid"]),
            bootstrap=str(raw["bootstrap"]),
            dashboard=str(dashboard) if dashboard else None,
            token=token_file.read_text().strip() if token_file.exists() else None,
        )
    except (OSError, ValueError, KeyError):
        return None
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return info


def _running_file() -> Path:
    """Where the last `up` started by this user notes its data dir: the user's runtime dir
    (`XDG_RUNTIME_DIR`), else `~/.cache`."""
    base = os.environ.get("XDG_RUNTIME_DIR") or str(Path.home() / ".cache")
    return Path(base) / "touchstream" / "running.json"


def note_running(data_dir: Path, pid: int) -> None:
    """Note that `pid` serves `data_dir`, so reading verbs run elsewhere find it."""
    path = _running_file()
    with contextlib.suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"data_dir": str(data_dir.absolute()), "pid": pid}))


def forget_running(data_dir: Path) -> None:
    """Remove the note if it is still this data dir's."""
    path = _running_file()
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(path.read_text())["data_dir"] == str(data_dir.absolute()):
            path.unlink()


def running_data_dir() -> Path | None:
    """The data dir of the running `up` this user started last, if it still runs."""
    try:
        raw = json.loads(_running_file().read_text())
        data_dir, pid = Path(raw["data_dir"]), int(raw["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    info = read_info(data_dir)
    return data_dir if info is not None and info.pid == pid else None


def remote_sql(
    info: ControlInfo, query: str, fmt: str, timeout: float = 60.0, token: str | None = None
) -> bytes:
    """Run `query` on the worker that owns the data dir; `token` overrides the data dir's."""
    headers = {"Content-Type": "application/json"}
    if (token := token or info.token) is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(
        f"{info.url}/sql",
        data=json.dumps({"query": query, "format": check_format(fmt)}).encode(),
        headers=headers,
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return bytes(response.read())
    except urllib.error.HTTPError as error:
        message = error.read().decode(errors="replace").strip()
        raise ClickHouseError(message or f"HTTP {error.code}") from None
    except (urllib.error.URLError, TimeoutError) as error:
        raise TouchstreamError(f"the running worker at {info.url} did not answer: {error}") from None
