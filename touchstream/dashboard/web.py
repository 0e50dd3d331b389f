"""The ops dashboard over HTTP: a static page, its snapshot as JSON, and server-sent events.

* `GET /`: the page (static HTML, CSS and JS in `static/`; no build step).
* `GET /customers/<id>`: a customer's page (Customer 360), its timeline drawn with the
  vendored vis-timeline (`static/vendor/vis-timeline/`, with its licence).
* `GET /experience`: the experience view (churn, attribution, tickets, SLA, social),
  charts drawn with the vendored uPlot (`static/vendor/uplot/`, with its licence).
* `GET /api/snapshot`: every panel as JSON (`touchstream.dashboard.panels`).
* `GET /api/experience`: the experience view's panels as JSON
  (`touchstream.dashboard.experience`), read at most every 30 s and only when asked for.
* `GET /teams`: reports per team and per agent for a range (`touchstream.dashboard.teams`).
* `GET /api/teams[?since=...&until=...]`: those reports as JSON (ISO 8601 dates or
  instants, `until` exclusive; by default the week up to the newest event); 400 on a bad
  range.
* `GET /api/stream`: server-sent events, one `snapshot` event per refresh interval.
* `GET /api/customers/<id>[?after=...&limit=N]`: one customer's whole record (Customer
  360, `touchstream.dashboard.customer`), touchpoints paged; 404 when there is none.

Snapshots are read at most once per interval however many pages are open. With
`TOUCHSTREAM_DASHBOARD_TOKEN` set, every route wants `?token=` or a bearer header;
binding beyond loopback without a token is refused. `touchstream up` serves it from
the process that owns chDB (`DashboardService`); `touchstream dashboard` serves it
alone against any ClickHouse (`serve`).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from touchstream.broker import is_loopback, refuse_busy_port
from touchstream.dashboard import customer, teams
from touchstream.dashboard.experience import charts, experience
from touchstream.dashboard.panels import behaviour, reference, snapshot
from touchstream.listeners import Bounds, Listener, raise_descriptor_limit
from touchstream.schemas.errors import ConfigError
from touchstream.settings import Settings
from touchstream.sinks.clickhouse import ClickHouse

STATIC = Path(__file__).parent / "static"
#: How often the behaviour panels (journeys, profiles) and the ops page's charts are read again.
BEHAVIOUR_SECONDS = 15.0
#: How often the experience view is read again (its views read every stored event).
EXPERIENCE_SECONDS = 30.0
TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".txt": "text/plain",
         ".md": "text/plain", ".svg": "image/svg+xml"}  # fmt: skip
#: The files the page may load: its own, and the vendored timeline library with its licence.
VENDORED = {
    "vis-timeline": ("vis-timeline-graph2d.min.js", "vis-timeline-graph2d.min.css", "LICENSE.md",
                     "LICENSE.MIT.txt", "LICENSE.Apache-2.0.txt", "README.md"),
    "uplot": ("uPlot.iife.min.js", "uPlot.min.css", "LICENSE", "README.md"),
}  # fmt: skip
ASSETS = frozenset({
    "dashboard.js", "dashboard.css", "customer.js", "search.js", "tables.js", "charts.js", "experience.js",
    "teams.js", "favicon.svg",
    *(f"vendor/{library}/{name}" for library, names in VENDORED.items() for name in names),
})  # fmt: skip


class Snapshots:
    """The latest snapshot, read again when older than `max_age` (one reader at a time)."""

    def __init__(self, read: Callable[[], dict[str, Any]], max_age: float) -> None:
        self.read = read
        self.max_age = max_age
        self._latest: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, Any]:
        async with self._lock:
            if self._latest is None or time.monotonic() - self._latest[0] >= self.max_age:
                data = await asyncio.get_running_loop().run_in_executor(None, self.read)
                self._latest = (time.monotonic(), data)
            return self._latest[1]


def check_binding(settings: Settings) -> None:
    """Refuse a dashboard beyond loopback without a token, or on a port in use."""
    host = settings.dashboard_host
    refuse_busy_port(host, settings.dashboard_port, "TOUCHSTREAM_DASHBOARD_PORT")
    if not is_loopback(host) and settings.dashboard_token is None:
        raise ConfigError(
            f"the dashboard binds to {host}, beyond loopback: set TOUCHSTREAM_DASHBOARD_TOKEN to protect it"
        )


Lookup = Callable[[str, customer.Page], dict[str, Any]]
#: The Teams view's reports for a range asked for as (since, until) text (None: the default).
Report = Callable[[str | None, str | None], dict[str, Any]]


def application(
    settings: Settings,
    snapshots: Snapshots,
    lookup: Lookup | None = None,
    experience_view: Snapshots | None = None,
    report: Report | None = None,
) -> web.Application:
    token = settings.dashboard_token.get_secret_value() if settings.dashboard_token else None

    @web.middleware
    async def guard(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if token is None and not is_loopback(request.host.rpartition(":")[0] or request.host):
            # Without a token the dashboard serves loopback only; a page of another site
            # whose name was made to resolve to 127.0.0.1 (DNS rebinding) names itself here.
            return web.Response(status=403, text="the Host header must name this dashboard on loopback\n")
        if token is not None:
            given = request.query.get("token", "")
            header = request.headers.get("Authorization", "")
            if header.startswith("Bearer "):
                given = header.removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return web.Response(status=401, text="a valid dashboard token is required (?token=...)\n")
        response = await handler(request)
        response.headers.setdefault("Cache-Control", "no-store")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    async def page(request: web.Request) -> web.StreamResponse:
        return static_file("index.html")

    async def asset(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return static_file(name)

    async def customer_page(request: web.Request) -> web.StreamResponse:
        return static_file("customer.html")

    async def current(request: web.Request) -> web.StreamResponse:
        return web.json_response(await snapshots.get())

    async def experience_page(request: web.Request) -> web.StreamResponse:
        return static_file("experience.html")

    async def experience_panels(request: web.Request) -> web.StreamResponse:
        if experience_view is None:
            raise web.HTTPNotFound()
        return web.json_response(await experience_view.get())

    async def teams_page(request: web.Request) -> web.StreamResponse:
        return static_file("teams.html")

    async def team_reports(request: web.Request) -> web.StreamResponse:
        if report is None:
            raise web.HTTPNotFound()
        since, until = request.query.get("since"), request.query.get("until")
        try:
            found = await asyncio.get_running_loop().run_in_executor(None, report, since, until)
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        return web.json_response(found)

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store"}
        )
        await response.prepare(request)
        try:
            while True:
                data = json.dumps(await snapshots.get(), separators=(",", ":"))
                await response.write(f"event: snapshot\ndata: {data}\n\n".encode())
                await asyncio.sleep(settings.dashboard_refresh_seconds)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return response

    async def customer_record(request: web.Request) -> web.StreamResponse:
        if lookup is None:
            raise web.HTTPNotFound()
        customer_id = request.match_info["customer_id"]
        try:
            wanted = customer.Page.parse(request.query.get("after"), request.query.get("limit"))
        except ValueError as error:
            return web.json_response({"error": str(error)}, status=400)
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(None, lookup, customer_id, wanted)
        except customer.NoRecord as error:
            return web.json_response({"error": str(error)}, status=404)
        return web.json_response(found)

    async def favicon(request: web.Request) -> web.StreamResponse:
        return static_file("favicon.svg")  # browsers ask for it whatever the page links

    app = web.Application(middlewares=[guard])
    app.router.add_get("/", page)
    app.router.add_get("/api/customers/{customer_id}", customer_record)
    app.router.add_get("/static/{name:.+}", asset)  # only the ASSETS, whatever the path says
    app.router.add_get("/favicon.ico", favicon)
    app.router.add_get("/customers/{customer_id}", customer_page)
    app.router.add_get("/api/snapshot", current)
    app.router.add_get("/experience", experience_page)
    app.router.add_get("/api/experience", experience_panels)
    app.router.add_get("/teams", teams_page)
    app.router.add_get("/api/teams", team_reports)
    app.router.add_get("/api/stream", stream)
    return app


def static_file(name: str) -> web.Response:
    path = STATIC / name
    return web.Response(body=path.read_bytes(), content_type=TYPES[path.suffix], charset="utf-8")


def reader(
    settings: Settings, clickhouse: ClickHouse, health: Callable[[], dict[str, Any]] | None = None
) -> Callable[[], dict[str, Any]]:
    config = settings.metrics_config()
    patterns: list[tuple[float, dict[str, Any]]] = []
    fetch = read_only(clickhouse)

    def read() -> dict[str, Any]:
        panels = snapshot(fetch, config, settings.sla_seconds, health)
        # The behaviour patterns and the charts move slowly and read every event: at most every 15 s.
        if not patterns or time.monotonic() - patterns[0][0] >= BEHAVIOUR_SECONDS:
            patterns[:] = [(time.monotonic(), {**behaviour(fetch), **charts(fetch)})]
        return {**panels, **patterns[0][1]}

    return read


def read_only(clickhouse: ClickHouse) -> Callable[[str, Mapping[str, Any]], list[tuple[Any, ...]]]:
    """The dashboard's queries: bound parameters, ClickHouse's `readonly = 1`."""

    def fetch(sql: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return clickhouse.rows(sql, dict(params), read_only=True)

    return fetch


def experience_reader(clickhouse: ClickHouse) -> Snapshots:
    """The experience view, read-only, read again at most every `EXPERIENCE_SECONDS`."""
    fetch = read_only(clickhouse)
    return Snapshots(lambda: experience(fetch), EXPERIENCE_SECONDS)


def teams_reader(clickhouse: ClickHouse) -> Report:
    """The Teams view's reports (`touchstream.dashboard.teams`), read-only, for the range
    asked for."""
    fetch = read_only(clickhouse)

    def read(since: str | None, until: str | None) -> dict[str, Any]:
        newest = None if since and until else reference(fetch)
        start, end = teams.parse_range(since, until, newest)
        return teams.teams(fetch, start, end)

    return read


def customer_reader(settings: Settings, clickhouse: ClickHouse) -> Lookup:
    """Customer 360 records (`touchstream.dashboard.customer`), read-only."""
    config, fetch = settings.metrics_config(), read_only(clickhouse)

    def lookup(customer_id: str, page: customer.Page) -> dict[str, Any]:
        return customer.record(fetch, customer_id, config, page)

    return lookup


class DashboardService(Listener):
    """The dashboard inside the process that runs the worker (`touchstream up`)."""

    def __init__(
        self,
        settings: Settings,
        read: Callable[[], dict[str, Any]],
        port: int,
        lookup: Lookup | None = None,
        experience_view: Snapshots | None = None,
        report: Report | None = None,
        *,
        bounds: Bounds,
    ) -> None:
        super().__init__(self._application, settings.dashboard_host, port, bounds=bounds)
        self.settings = settings
        self.read = read
        self.lookup = lookup
        self.experience_view = experience_view
        self.report = report

    def _application(self) -> web.Application:
        snapshots = Snapshots(self.read, self.settings.dashboard_refresh_seconds)
        return application(self.settings, snapshots, self.lookup, self.experience_view, self.report)


def url(settings: Settings, port: int) -> str:
    query = "?token=..." if settings.dashboard_token else ""
    return f"http://{settings.dashboard_host}:{port}/{query}"


def serve(settings: Settings, clickhouse: ClickHouse) -> None:
    """`touchstream dashboard`: serve until SIGINT/SIGTERM."""
    check_binding(settings)
    app = application(
        settings,
        Snapshots(reader(settings, clickhouse), settings.dashboard_refresh_seconds),
        customer_reader(settings, clickhouse),
        experience_reader(clickhouse),
        teams_reader(clickhouse),
    )
    print(f"dashboard  {url(settings, settings.dashboard_port)}", flush=True)
    raise_descriptor_limit()
    web.run_app(
        app, host=settings.dashboard_host, port=settings.dashboard_port, print=None, access_log=None,
        shutdown_timeout=1.0, keepalive_timeout=settings.listener_idle_seconds,
    )  # fmt: skip
