"""The HTTP collector: channel systems send touchpoints here, and get an answer per item.

- `POST /v1/events` takes one canonical event or a JSON array of them, with an API key
  (`Authorization: Bearer KEY` or `X-API-Key: KEY`). A publishable web key (the one in
  the website snippet) may send only web page views and clicks.
- `POST /v1/webhooks/<kind>/<provider>` takes a platform's own webhook payload
  (`producers/providers.py` lists them), proven by the provider's signature scheme
  with its configured secret; `GET` on the same path answers Messenger's
  subscription check.
- `GET /v1/touchstream.js` serves the website snippet; `GET /healthz`, `GET /metrics`
  (Prometheus text) and `GET /openapi.json` need no key.

Each item is judged on its own: valid ones are published, and the answer (202 for
events, 200 for webhooks, since platforms retry anything else) comes only once Kafka has
acknowledged every one of them, with a reason per rejected item. Nothing is published
when the request as a whole is bad (4xx), and when Kafka does not acknowledge in time
the answer is 503: resending is safe, since `event_id` makes redelivery idempotent
downstream.

`received_at` is set here, by the adapter, as SPEC §2 says: a value sent by a client
is replaced.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, Protocol

from aiohttp import web

from touchstream.producers.health import Check, problems
from touchstream.producers.mapping import Mapped, MappingContext, PayloadError, Threads
from touchstream.producers.metrics import CollectorMetrics
from touchstream.producers.providers import PROVIDERS
from touchstream.producers.webhook import SignatureError, WebhookRequest
from touchstream.schemas.errors import BrokerError
from touchstream.schemas.touchpoint import MAX_CLOCK_SKEW, Channel, Kind, TouchpointEvent

API_KEY_HEADER = "X-API-Key"
#: The one webhook route that answers GET: Meta's subscription check.
SUBSCRIPTION_CHECK = "chat/messenger"
EVENTS = "events"
WEB_KINDS = frozenset({Kind.PAGE_VIEW, Kind.CLICK})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EventSink(Protocol):
    """Where accepted events go: `AsyncPublisher` in production."""

    async def publish(self, events: Sequence[TouchpointEvent]) -> None: ...


@dataclass(frozen=True)
class CollectorConfig:
    api_keys: tuple[str, ...]
    #: Publishable keys for websites: web page_view and click events only.
    web_keys: tuple[str, ...] = ()
    #: Origins allowed to call /v1/events from a browser ("*" for any).
    allowed_origins: tuple[str, ...] = ("*",)
    max_body_bytes: int = 1_048_576
    webhook_max_body_bytes: int = 33_554_432
    max_batch: int = 500
    #: Secret per provider, by route (`chat/intercom`) or provider name (`intercom`).
    webhook_secrets: Mapping[str, str] = field(default_factory=dict)
    webhook_tolerance_seconds: float = 300.0
    #: Messenger's subscription check token (chosen by the operator, typed into Meta's dashboard).
    webhook_verify_token: str | None = None
    brand_domains: frozenset[str] = frozenset()
    hash_email_addresses: bool = True
    bot_ids: frozenset[str] = frozenset()
    #: How far an event's occurred_at may lie after its arrival (422 for the item beyond).
    max_clock_skew: timedelta = MAX_CLOCK_SKEW


def map_events(
    items: list[Any], received_at: datetime, *, web_only: bool = False, max_skew: timedelta = MAX_CLOCK_SKEW
) -> Mapped:
    """Canonical events, each judged on its own. `web_only`: a publishable key's request."""
    mapped = Mapped(received_at, max_skew=max_skew)
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            mapped.reject(index, f"an event must be a JSON object, not {type(item).__name__}")
        elif web_only and not (item.get("channel") == Channel.WEB and _is_web_kind(item.get("kind"))):
            event_id = item.get("event_id") if isinstance(item.get("event_id"), str) else None
            mapped.reject(index, "a publishable web key may send only web page_view and click events",
                          event_id)  # fmt: skip
        else:
            mapped.add(index, item)
    return mapped


def _is_web_kind(kind: object) -> bool:
    return isinstance(kind, str) and kind in WEB_KINDS


def _check_key(offered: str, keys: Sequence[str]) -> bool:
    # Compare with every key, always, so timing says nothing about which one nearly matched.
    # A header with bytes that are not UTF-8 arrives with surrogates: it matches no key.
    given = offered.encode("utf-8", "surrogateescape")
    matches = [hmac.compare_digest(given, key.encode()) for key in keys]
    return bool(offered) and any(matches)


class Collector:
    """The HTTP app over `sink`. `guards` must pass before anything is acknowledged (free
    disk under the embedded broker); `readiness` is every check `/healthz` reports (Kafka,
    the disk, and in `touchstream up` the worker's sink); `more_metrics` renders further
    Prometheus lines for `/metrics` (the worker's, in `up`)."""

    def __init__(
        self,
        config: CollectorConfig,
        sink: EventSink,
        metrics: CollectorMetrics | None = None,
        *,
        guards: Sequence[Check] = (),
        readiness: Sequence[Check] = (),
        more_metrics: Callable[[], str] | None = None,
    ) -> None:
        self.config = config
        self.sink = sink
        self.metrics = metrics or CollectorMetrics()
        #: Authors of public comments, so a page's reply finds its customer (`Threads`).
        self.threads = Threads()
        self.guards = tuple(guards)
        self.readiness = tuple(readiness)
        self.more_metrics = more_metrics
        self._snippet = resources.files("touchstream.producers.web").joinpath("touchstream.js").read_bytes()

    def application(self) -> web.Application:
        limit = max(self.config.max_body_bytes, self.config.webhook_max_body_bytes)
        app = web.Application(client_max_size=limit, middlewares=[self._errors_as_json])
        app.router.add_post("/v1/events", self.events)
        app.router.add_route("OPTIONS", "/v1/events", self.preflight)
        app.router.add_get(f"/v1/webhooks/{SUBSCRIPTION_CHECK}", self.subscription_check)
        app.router.add_post("/v1/webhooks/{kind}/{provider}", self.webhook)
        app.router.add_get("/v1/touchstream.js", self.snippet)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/openapi.json", self.openapi)
        return app

    def problem(
        self,
        status: int,
        error: str,
        *,
        source: str,
        reason: str,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> web.Response:
        """A JSON error answer; `reason` is the metric label (a short fixed word)."""
        self.metrics.rejected_requests.inc(source, reason)
        return web.json_response({"error": error, **extra}, status=status, headers=headers)

    @web.middleware
    async def _errors_as_json(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        source = EVENTS if request.path == "/v1/events" else "http"
        try:
            response = await handler(request)
        except web.HTTPRequestEntityTooLarge:
            response = self.problem(413, "request body too large", source=source, reason="body_too_large")
        except web.HTTPException as error:
            if error.status < 400:
                raise
            allow = {"Allow": error.headers["Allow"]} if "Allow" in error.headers else None  # 405
            response = self.problem(error.status, error.reason, source=source, reason="http", headers=allow)
        if request.path == "/v1/events":
            self._cors(request, response)
        return response

    def _cors(self, request: web.Request, response: web.StreamResponse) -> None:
        origin = request.headers.get("Origin")
        if origin is None:
            return
        if "*" in self.config.allowed_origins or origin in self.config.allowed_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"

    async def preflight(self, request: web.Request) -> web.Response:
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": f"Authorization, Content-Type, {API_KEY_HEADER}",
                "Access-Control-Max-Age": "600",
            },
        )

    async def _body(self, request: web.Request, limit: int, *, source: str) -> bytes | web.Response:
        """The request body, or the 413 answer when it is over `limit`."""
        if (request.content_length or 0) <= limit:
            body = await request.read()
            if len(body) <= limit:
                return body
        return self.problem(
            413, f"request body exceeds {limit} bytes", source=source, reason="body_too_large"
        )

    # -- POST /v1/events ------------------------------------------------------------

    def _key_scope(self, request: web.Request) -> str | None:
        """ "full" or "web" for a known key, None otherwise."""
        offered = request.headers.get(API_KEY_HEADER, "")
        bearer = request.headers.get("Authorization", "")
        if not offered and bearer.lower().startswith("bearer "):
            offered = bearer[7:].strip()
        full = _check_key(offered, self.config.api_keys)
        web_only = _check_key(offered, self.config.web_keys)
        return "full" if full else "web" if web_only else None

    async def events(self, request: web.Request) -> web.Response:
        scope = self._key_scope(request)
        if scope is None:
            return self.problem(
                401,
                f"missing or unknown API key (send it as `Authorization: Bearer KEY` "
                f"or `{API_KEY_HEADER}: KEY`)",
                source=EVENTS,
                reason="unauthorized",
            )
        if request.content_type != "application/json":
            return self.problem(
                415,
                f"Content-Type must be application/json, not {request.content_type or 'none'}",
                source=EVENTS,
                reason="content_type",
            )
        body = await self._body(request, self.config.max_body_bytes, source=EVENTS)
        if isinstance(body, web.Response):
            return body
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            return self.problem(400, f"body is not valid JSON: {error}", source=EVENTS, reason="invalid_json")
        except RecursionError:
            return self.problem(
                400, "body is not valid JSON: nested too deeply", source=EVENTS, reason="invalid_json"
            )
        items = payload if isinstance(payload, list) else [payload]
        if not items:
            return self.problem(
                400, "empty batch: send one event or a non-empty array", source=EVENTS, reason="empty_batch"
            )
        if len(items) > self.config.max_batch:
            return self.problem(  # the schema's maxItems: a request to fix, not a body too large
                422,
                f"batch of {len(items)} events exceeds the limit of {self.config.max_batch}",
                source=EVENTS,
                reason="batch_too_long",
            )
        mapped = map_events(
            items, datetime.now(UTC), web_only=scope == "web", max_skew=self.config.max_clock_skew
        )
        return await self._publish(
            mapped, source=EVENTS, status=202, summary=_events_summary, batch=isinstance(payload, list)
        )

    # -- /v1/webhooks/<kind>/<provider> -----------------------------------------------

    async def webhook(self, request: web.Request) -> web.Response:
        route = f"{request.match_info['kind']}/{request.match_info['provider']}"
        provider = PROVIDERS.get(route)
        if provider is None:
            return self.problem(
                404,
                f"unknown webhook provider {route!r}; known: {', '.join(sorted(PROVIDERS))}",
                source="unknown",
                reason="unknown_provider",
            )
        secret = self.config.webhook_secrets.get(route) or self.config.webhook_secrets.get(provider.name)
        if not secret:
            return self.problem(
                403,
                f"webhooks from {route} are not enabled: no secret configured for it "
                f"(TOUCHSTREAM_WEBHOOK_SECRETS)",
                source=route,
                reason="not_enabled",
            )
        body = await self._body(request, self.config.webhook_max_body_bytes, source=route)
        if isinstance(body, web.Response):
            return body
        received_at = datetime.now(UTC)
        hook = WebhookRequest(
            body=body,
            headers={name.lower(): value for name, value in request.headers.items()},
            content_type=request.content_type,
            url=str(request.url),
            now=received_at.timestamp(),
        )
        try:
            provider.verify(hook, secret.encode(), self.config.webhook_tolerance_seconds)
        except SignatureError as error:
            return self.problem(401, str(error), source=route, reason=error.label)
        except PayloadError as error:
            return self.problem(_payload_status(error), str(error), source=route, reason=error.label)
        context = MappingContext(
            received_at=received_at,
            brand_domains=self.config.brand_domains,
            hash_email_addresses=self.config.hash_email_addresses,
            bot_ids=self.config.bot_ids,
            max_skew=self.config.max_clock_skew,
            threads=self.threads,
        )
        try:
            mapped = provider.map(hook, context)
        except PayloadError as error:
            return self.problem(_payload_status(error), str(error), source=route, reason=error.label)
        if len(mapped.events) > self.config.max_batch:
            return self.problem(
                413,
                f"payload holds {len(mapped.events)} events, over the limit of {self.config.max_batch}",
                source=route,
                reason="batch_too_long",
            )
        self.metrics.ignored_items.inc(route, amount=len(mapped.ignored))
        return await self._publish(mapped, source=route, status=200, summary=Mapped.summary)

    async def subscription_check(self, request: web.Request) -> web.Response:
        """Meta's webhook verification: echo hub.challenge when hub.verify_token matches."""
        route, query = SUBSCRIPTION_CHECK, request.query
        token = self.config.webhook_verify_token
        if query.get("hub.mode") != "subscribe":
            return self.problem(
                400, "not a subscription check (hub.mode=subscribe)", source=route, reason="not_subscription"
            )
        offered = query.get("hub.verify_token", "").encode("utf-8", "surrogateescape")
        if not token or not hmac.compare_digest(offered, token.encode()):
            return self.problem(
                403,
                "hub.verify_token does not match TOUCHSTREAM_WEBHOOK_VERIFY_TOKEN",
                source=route,
                reason="bad_verify_token",
            )
        return web.Response(text=query.get("hub.challenge", ""), content_type="text/plain")

    # -- shared ---------------------------------------------------------------------

    async def _publish(
        self,
        mapped: Mapped,
        *,
        source: str,
        status: int,
        summary: Callable[[Mapped], dict[str, Any]],
        batch: bool = False,
    ) -> web.Response:
        """Publish the valid events and answer `status` with the summary; 422 when nothing
        was valid, except for a `batch` (a JSON array of events), whose items are judged
        one by one: its answer is `status` with every item's reason, whatever they are."""
        self.metrics.rejected_events.inc(source, amount=len(mapped.errors))
        if not mapped.events and mapped.errors and not batch:
            answer = {"error": "no valid event in the request", **summary(mapped)}
            return web.json_response(answer, status=422)
        if mapped.events and (unsafe := problems(self.guards)):
            return self.problem(
                503,
                f"not accepting events: {'; '.join(unsafe)}; nothing was published, retry later",
                source=source,
                reason="disk_low",
                retry_after_seconds=30,
            )
        if mapped.events:
            began = time.perf_counter()
            try:
                await self.sink.publish(mapped.events)
            except BrokerError as error:
                self.metrics.publish_failures.inc(source)
                return self.problem(
                    503,
                    f"Kafka did not acknowledge the events; nothing is lost, retry later ({error})",
                    source=source,
                    reason="kafka_unavailable",
                    retry_after_seconds=5,
                )
            self.metrics.publish_seconds.observe(time.perf_counter() - began)
            self.metrics.accepted_events.inc(source, amount=len(mapped.events))
        return web.json_response(summary(mapped), status=status)

    async def snippet(self, request: web.Request) -> web.Response:
        return web.Response(
            body=self._snippet,
            content_type="application/javascript",
            charset="utf-8",
            headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
        )

    async def healthz(self, request: web.Request) -> web.Response:
        """200 while every readiness check passes; 503 with the reasons otherwise."""
        failing = await asyncio.get_running_loop().run_in_executor(None, problems, self.readiness)
        if failing:
            return web.json_response({"status": "not ready", "reasons": failing}, status=503)
        return web.json_response({"status": "ok"})

    async def prometheus(self, request: web.Request) -> web.Response:
        more = self.more_metrics() if self.more_metrics is not None else ""
        return web.Response(
            text=self.metrics.render() + more,
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self.config))


def _events_summary(mapped: Mapped) -> dict[str, Any]:
    errors = [error.as_dict() for error in sorted(mapped.errors, key=lambda error: error.index)]
    return {"accepted": len(mapped.events), "rejected": len(errors), "errors": errors}


def _payload_status(error: PayloadError) -> int:
    return {"content_type": 415, "empty_batch": 400, "invalid_json": 400}.get(error.label, 400)


def openapi_document(config: CollectorConfig) -> dict[str, Any]:
    event_schema = TouchpointEvent.model_json_schema(
        mode="validation", ref_template="#/components/schemas/{model}"
    )
    definitions = event_schema.pop("$defs", {})
    # What a caller sends: `received_at` is the collector's to set (a value sent is replaced).
    sent = {**event_schema, "required": [name for name in event_schema["required"] if name != "received_at"]}
    sent["properties"] = {
        **event_schema["properties"],
        "received_at": {
            "description": "set by the collector when the event arrives; any value sent is replaced"
        },
        "occurred_at": {
            **event_schema["properties"]["occurred_at"],
            "description": "with a timezone; from 1970-01-01T00:00:00Z to the clock skew "
            "(TOUCHSTREAM_MAX_CLOCK_SKEW_SECONDS, 1 h) after the event's arrival",
        },
    }
    sent.pop("$id", None)
    schemas = {"TouchpointEvent": event_schema, "TouchpointEventSent": sent, **definitions}
    sent_ref = {"$ref": "#/components/schemas/TouchpointEventSent"}
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    item_errors = {
        "type": "object",
        "properties": {
            "accepted": {"type": "integer"},
            "rejected": {"type": "integer"},
            "ignored": {"type": "integer", "description": "webhooks: items that carry no touchpoint"},
            "notes": {"type": "array", "items": {"type": "string"}},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "index": {"type": "integer"},
                        "event_id": {"type": ["string", "null"]},
                        "reason": {"type": "string"},
                    },
                },
            },
        },
    }

    def webhook_path(route: str) -> dict[str, Any]:
        provider = PROVIDERS[route]
        item: dict[str, Any] = {
            "post": {
                "summary": f"{provider.name}'s webhook, in its own format ({provider.source}), "
                "proven by its signature",
                "requestBody": {
                    "required": True,
                    "content": {
                        media_type: {"schema": dict(provider.body_schema)}
                        for media_type in provider.media_types
                    },
                },
                "responses": {
                    "200": answer("Kafka has every mapped event; reasons for the rest", item_errors),
                    "400": answer("payload cannot be read", error),
                    "401": answer("missing or wrong signature, or stale timestamp", error),
                    "403": answer("no secret configured for this provider", error),
                    "413": answer("body or event count over the limit", error),
                    "415": answer("wrong Content-Type for this provider", error),
                    "422": answer("no valid event; reasons per item", item_errors),
                    "503": answer("Kafka did not acknowledge in time, or the disk is low; retry", error),
                },
            }
        }
        if route == SUBSCRIPTION_CHECK:
            item["get"] = {
                "summary": "Meta's subscription check: hub.challenge back when hub.verify_token is "
                "TOUCHSTREAM_WEBHOOK_VERIFY_TOKEN",
                "parameters": [
                    {"name": "hub.mode", "in": "query", "required": True, "schema": {"const": "subscribe"}},
                    *(
                        {"name": name, "in": "query", "required": True, "schema": {"type": "string"}}
                        for name in ("hub.verify_token", "hub.challenge")
                    ),
                ],
                "responses": {
                    "200": {
                        "description": "hub.challenge",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    "400": answer("not a subscription check", error),
                    "403": answer("hub.verify_token does not match", error),
                },
            }
        return item

    def answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "Touchstream collector", "version": "1"},
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
            },
        },
        "paths": {
            "/v1/events": {
                "post": {
                    "summary": f"One event, or an array of at most {config.max_batch}",
                    "security": [{"bearer": []}, {"apiKey": []}],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        sent_ref,
                                        {
                                            "type": "array",
                                            "minItems": 1,
                                            "maxItems": config.max_batch,
                                            "description": "a batch: each item is judged on its own "
                                            "against TouchpointEventSent, the valid ones are published "
                                            "and the answer (202) gives every other item's reason",
                                            "items": {
                                                "anyOf": [
                                                    {"$ref": "#/components/schemas/TouchpointEventSent"},
                                                    {},
                                                ]
                                            },
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": answer(
                            "Kafka has every accepted event; rejected items have reasons (a batch is "
                            "answered 202 even when no item was valid)",
                            item_errors,
                        ),
                        "400": answer("not JSON, or an empty batch", error),
                        "401": answer("missing or unknown API key", error),
                        "413": answer(f"body over {config.max_body_bytes} bytes", error),
                        "415": answer("not application/json", error),
                        "422": answer(
                            "a single event that is not valid, with the reason; or more than "
                            f"{config.max_batch} events",
                            {"anyOf": [item_errors, error]},
                        ),
                        "503": answer("Kafka did not acknowledge in time, or the disk is low; retry", error),
                    },
                }
            },
            **{f"/v1/webhooks/{route}": webhook_path(route) for route in sorted(PROVIDERS)},
            "/v1/touchstream.js": {
                "get": {"summary": "the website snippet", "responses": {"200": {"description": "JavaScript"}}}
            },
            "/healthz": {
                "get": {
                    "summary": "readiness: Kafka answers, the disk has room, the sink writes",
                    "responses": {
                        "200": answer("ready", {"type": "object", "properties": {"status": {"const": "ok"}}}),
                        "503": answer(
                            "not ready, with the reasons",
                            {
                                "type": "object",
                                "properties": {
                                    "status": {"const": "not ready"},
                                    "reasons": {"type": "array", "items": {"type": "string"}},
                                },
                            },
                        ),
                    },
                }
            },
            "/metrics": {
                "get": {"summary": "Prometheus text format", "responses": {"200": {"description": "ok"}}}
            },
        },
    }
