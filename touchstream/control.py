"""The owning process's small HTTP control surface, and the client `touchstream sql` uses.

In embedded mode one process (the worker started by `touchstream up`) holds the chDB
directory, so other processes cannot open it; they ask that process instead. The
worker writes `control.json` in the data dir with its URL and PID while it runs.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust
from faust.web import Request, Response, View

from sinks.clickhouse import ClickHouse
from streams.app import PipelineStats
from touchstream.errors import ClickHouseError, TouchstreamError

CONTROL_FILE = "control.json"
#: ClickHouse output format names are identifiers; anything else is refused before the query.
_FORMAT = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


def check_format(fmt: str) -> str:
    if not _FORMAT.match(fmt):
        raise TouchstreamError(f"not a ClickHouse output format: {fmt!r}")
    return fmt


def register(app: faust.App, clickhouse: ClickHouse, stats: PipelineStats) -> None:
    """Add `/status` to the worker's web server, and `/sql` when it owns an embedded chDB.

    `/sql` runs any statement, so it exists only for the embedded case, where the worker
    is the one process able to open chDB and binds to loopback; against a ClickHouse
    server, `touchstream sql` connects to that server with its own credentials.
    """

    @app.page("/status")
    class Status(View):
        async def get(self, request: Request) -> Response:
            return self.json({"pid": os.getpid(), **stats.as_dict()})

    if not clickhouse.embedded:
        return

    @app.page("/sql")
    class Sql(View):
        async def post(self, request: Request) -> Response:
            try:
                body = json.loads(await request.read())
                query, fmt = str(body["query"]), check_format(str(body.get("format", "TSV")))
            except (ValueError, KeyError, TypeError, TouchstreamError) as error:
                return self.text(f"bad request: {error}\n", status=400)
            loop = app.loop
            try:
                output = await loop.run_in_executor(None, clickhouse.formatted, query, fmt)
            except ClickHouseError as error:
                return self.text(f"{error}\n", status=400)
            return self.bytes(output, content_type="application/octet-stream")


@dataclass(frozen=True)
class ControlInfo:
    url: str
    pid: int
    bootstrap: str
    #: The ops dashboard this process serves, if any (`touchstream top` reads it).
    dashboard: str | None = None


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
        info = ControlInfo(
            url=str(raw["url"]),
            pid=int(raw["pid"]),
            bootstrap=str(raw["bootstrap"]),
            dashboard=str(dashboard) if dashboard else None,
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


def remote_sql(info: ControlInfo, query: str, fmt: str, timeout: float = 60.0) -> bytes:
    request = urllib.request.Request(
        f"{info.url}/sql",
        data=json.dumps({"query": query, "format": check_format(fmt)}).encode(),
        headers={"Content-Type": "application/json"},
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
