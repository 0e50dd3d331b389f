"""The process's HTTP ports, each bounded so that a flood of connections costs that port alone.

`touchstream up` serves the collector, the dashboard, the worker's control port and the
ClickHouse HTTP endpoint from one process, which also needs descriptors for Kafka, chDB's
files and the state store. Unbounded, idle connections held open against the public
collector would use up the process's descriptors and take every other port (and the
pipeline) down with it. So:

- at start the soft descriptor limit is raised to the hard one (`raise_descriptor_limit`);
- each port takes at most `limit` connections at once, the process's descriptors less a
  reserve (`RESERVED_DESCRIPTORS`) shared between the ports (`connection_limit`); a
  connection beyond that is answered 503 and closed at once, so it holds no descriptor;
- a connection that sends no complete request within `idle` seconds (slow or no
  headers, or idle between requests; `TOUCHSTREAM_LISTENER_IDLE_SECONDS`) is closed, and
  a request with a body must arrive and be answered within `BODY_SECONDS` (408 otherwise).

The bound on connections replaces aiohttp's `TCPSite.start`, which needs members of
aiohttp's sites that are not public (`AIOHTTP_MEMBERS`); they are checked, with the
version, before the first site starts (`check`), as `streams.faustcompat` does for the
stream library: a mismatch stops with one line naming it.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata

from aiohttp import web
from mode import Service

from touchstream.schemas.errors import ConfigError
from touchstream.settings import Settings
from touchstream.streams.faustcompat import Member

#: The aiohttp version `BoundedSite` was written and tested against.
AIOHTTP_VERSION = "3.14.5"
#: What `BoundedSite.start` uses of aiohttp beyond its public interface.
AIOHTTP_MEMBERS = (
    Member(web.BaseSite, "_runner", None, source=web.BaseSite.__init__),
    Member(web.TCPSite, "_host", None, source=web.TCPSite.__init__),
    Member(web.TCPSite, "_port", None, source=web.TCPSite.__init__),
    Member(web.TCPSite, "_server", None, source=web.TCPSite.start),  # closed by BaseSite.stop
    Member(web.BaseSite, "start", ("self",)),
    Member(web.BaseRunner, "server", None),
    Member(web.Server, "connections", None),
)

#: Descriptors kept for Kafka, chDB, the state store and the process's own files.
RESERVED_DESCRIPTORS = 256
#: No port takes fewer connections than this, however low the descriptor limit.
MIN_CONNECTIONS = 16
#: A request with a body must arrive and be answered within this long.
BODY_SECONDS = 60.0
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 21\r\n\r\n"
    b"too many connections\n"
)


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open descriptors to the hard limit; the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


@dataclass(frozen=True)
class Bounds:
    """What each port of a process takes: `limit` connections at once, each idle at most
    `idle` seconds."""

    limit: int
    idle: float

    @classmethod
    def of(cls, settings: Settings, ports: int) -> Bounds:
        """For `ports` ports: at most the configured connections each, and the descriptors
        left after the reserve, shared (the soft descriptor limit raised first)."""
        descriptors = raise_descriptor_limit()
        shared = (descriptors - RESERVED_DESCRIPTORS) // max(1, ports)
        limit = max(MIN_CONNECTIONS, min(settings.listener_max_connections, shared))
        return cls(limit, settings.listener_idle_seconds)


class _Busy(asyncio.Protocol):
    """A connection past the port's limit: answered 503 and closed at once."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.Transport):
            transport.write(_BUSY)
        transport.close()


def problems() -> list[str]:
    """What differs in the installed aiohttp from what `BoundedSite` is written for."""
    installed = metadata.version("aiohttp")
    found = (
        [] if installed == AIOHTTP_VERSION else [f"aiohttp {installed} is installed, not {AIOHTTP_VERSION}"]
    )
    return found + [problem for member in AIOHTTP_MEMBERS if (problem := member.problem()) is not None]


def check() -> None:
    """Stop, naming the first mismatch, unless aiohttp is as `BoundedSite` expects."""
    if found := problems():
        raise ConfigError(f"aiohttp differs from the one the HTTP ports are built on: {found[0]}")


class BoundedSite(web.TCPSite):
    """A TCP site that takes at most `limit` connections at once."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, limit: int) -> None:
        check()
        super().__init__(runner, host, port)
        self.limit = limit

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None

        def connection() -> asyncio.BaseProtocol:
            return _Busy() if len(server.connections) >= self.limit else server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(connection, self._host, self._port, reuse_address=True)


@web.middleware
async def bounded_body(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A request with a body is answered within `BODY_SECONDS`, or 408: a body trickled in
    slowly holds its connection that long at most (the handler reads it, with its own
    size limits)."""
    if not request.body_exists:
        return await handler(request)
    try:
        async with asyncio.timeout(BODY_SECONDS):
            return await handler(request)
    except TimeoutError:
        return web.Response(status=408, text=f"the request was not done within {BODY_SECONDS:g} s\n")


class Listener(Service):
    """An aiohttp application on (host, port), bounded as above, as a service of the
    process's worker; `make` builds the application when the service starts."""

    def __init__(self, make: Callable[[], web.Application], host: str, port: int, *, bounds: Bounds) -> None:
        super().__init__()
        self.make = make
        self.host = host
        self.port = port
        self.bounds = bounds
        self._runner: web.AppRunner | None = None

    async def on_start(self) -> None:
        app = self.make()
        app.middlewares.append(bounded_body)
        self._runner = web.AppRunner(
            app, access_log=None, shutdown_timeout=1.0, keepalive_timeout=self.bounds.idle
        )
        await self._runner.setup()
        await BoundedSite(self._runner, self.host, self.port, limit=self.bounds.limit).start()

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
