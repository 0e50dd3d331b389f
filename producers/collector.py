"""The HTTP collector: channel systems send touchpoints here, and get an answer per item.

`POST /v1/events` takes one canonical event or a JSON array of them, with an API key
(`Authorization: Bearer KEY` or `X-API-Key: KEY`). Each item is validated on its own;
the valid ones are published, and the answer (202) comes only once Kafka has
acknowledged every one of them, with the accepted count and a reason per rejected
item. Nothing valid is published when the request as a whole is bad (4xx), and when
Kafka does not acknowledge in time the answer is 503: resending is safe, since
`event_id` makes redelivery idempotent downstream.

`received_at` is set here, by the adapter, as SPEC §2 says: a value sent by the
client is replaced.

`GET /healthz` and `GET /metrics` (Prometheus text) need no key; `GET /openapi.json`
describes the API.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web
from pydantic import ValidationError

from producers.metrics import CollectorMetrics
from schemas.codec import describe
from schemas.touchpoint import TouchpointEvent
from touchstream.errors import BrokerError

API_KEY_HEADER = "X-API-Key"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class EventSink(Protocol):
    """Where accepted events go: `AsyncPublisher` in production."""

    async def publish(self, events: Sequence[TouchpointEvent]) -> None: ...


@dataclass(frozen=True)
class CollectorConfig:
    api_keys: tuple[str, ...]
    max_body_bytes: int = 1_048_576
    max_batch: int = 500


@dataclass(frozen=True)
class ItemError:
    index: int
    reason: str
    event_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "event_id": self.event_id, "reason": self.reason}


def problem(status: int, error: str, *, reason: str, metrics: CollectorMetrics, **extra: Any) -> web.Response:
    """A JSON error answer; `reason` is the metric label (a short fixed word)."""
    metrics.rejected_requests.inc(reason)
    return web.json_response({"error": error, **extra}, status=status)


def validate_items(items: list[Any], received_at: datetime) -> tuple[list[TouchpointEvent], list[ItemError]]:
    accepted: list[TouchpointEvent] = []
    errors: list[ItemError] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(ItemError(index, f"an event must be a JSON object, not {type(item).__name__}"))
            continue
        event_id = item.get("event_id") if isinstance(item.get("event_id"), str) else None
        try:
            accepted.append(TouchpointEvent.model_validate({**item, "received_at": received_at}))
        except ValidationError as error:
            errors.append(ItemError(index, describe(error), event_id))
    return accepted, errors


class Collector:
    def __init__(
        self, config: CollectorConfig, sink: EventSink, metrics: CollectorMetrics | None = None
    ) -> None:
        self.config = config
        self.sink = sink
        self.metrics = metrics or CollectorMetrics()
        self._keys = [key.encode() for key in config.api_keys]

    def application(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body_bytes, middlewares=[self._errors_as_json])
        app.router.add_post("/v1/events", self.events)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.prometheus)
        app.router.add_get("/openapi.json", self.openapi)
        return app

    @web.middleware
    async def _errors_as_json(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return problem(
                413,
                f"request body exceeds {self.config.max_body_bytes} bytes",
                reason="body_too_large",
                metrics=self.metrics,
            )
        except web.HTTPException as error:
            if error.status < 400:
                raise
            return problem(error.status, error.reason, reason="http", metrics=self.metrics)

    def _authorized(self, request: web.Request) -> bool:
        offered = request.headers.get(API_KEY_HEADER, "")
        bearer = request.headers.get("Authorization", "")
        if not offered and bearer.lower().startswith("bearer "):
            offered = bearer[7:].strip()
        if not offered or not self._keys:
            return False
        # Compare with every key, always, so timing says nothing about which one nearly matched.
        matches = [hmac.compare_digest(offered.encode(), key) for key in self._keys]
        return any(matches)

    async def events(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return problem(
                401,
                f"missing or unknown API key (send it as `Authorization: Bearer KEY` "
                f"or `{API_KEY_HEADER}: KEY`)",
                reason="unauthorized",
                metrics=self.metrics,
            )
        if request.content_type != "application/json":
            return problem(
                415,
                f"Content-Type must be application/json, not {request.content_type or 'none'}",
                reason="content_type",
                metrics=self.metrics,
            )
        if (request.content_length or 0) > self.config.max_body_bytes:
            return problem(
                413,
                f"request body exceeds {self.config.max_body_bytes} bytes",
                reason="body_too_large",
                metrics=self.metrics,
            )
        body = await request.read()
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError) as error:
            return problem(
                400, f"body is not valid JSON: {error}", reason="invalid_json", metrics=self.metrics
            )
        items = payload if isinstance(payload, list) else [payload]
        if not items:
            return problem(
                400,
                "empty batch: send one event or a non-empty array",
                reason="empty_batch",
                metrics=self.metrics,
            )
        if len(items) > self.config.max_batch:
            return problem(
                413,
                f"batch of {len(items)} events exceeds the limit of {self.config.max_batch}",
                reason="batch_too_long",
                metrics=self.metrics,
            )

        accepted, errors = validate_items(items, datetime.now(UTC))
        for _ in errors:
            self.metrics.rejected_events.inc("invalid_event")
        if not accepted:
            return web.json_response(
                {
                    "error": "no valid event in the request",
                    "accepted": 0,
                    "rejected": len(errors),
                    "errors": [error.as_dict() for error in errors],
                },
                status=422,
            )
        began = time.perf_counter()
        try:
            await self.sink.publish(accepted)
        except BrokerError as error:
            self.metrics.publish_failures.inc()
            return problem(
                503,
                f"Kafka did not acknowledge the events; nothing is lost, retry later ({error})",
                reason="kafka_unavailable",
                metrics=self.metrics,
                retry_after_seconds=5,
            )
        self.metrics.publish_seconds.observe(time.perf_counter() - began)
        self.metrics.accepted_events.inc(amount=len(accepted))
        return web.json_response(
            {
                "accepted": len(accepted),
                "rejected": len(errors),
                "errors": [error.as_dict() for error in errors],
            },
            status=202,
        )

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def prometheus(self, request: web.Request) -> web.Response:
        return web.Response(
            text=self.metrics.render(),
            content_type="text/plain",
            charset="utf-8",
            headers={"X-Content-Type-Options": "nosniff"},
        )

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document(self.config))


def openapi_document(config: CollectorConfig) -> dict[str, Any]:
    event_schema = TouchpointEvent.model_json_schema(
        mode="validation", ref_template="#/components/schemas/{model}"
    )
    schemas = {"TouchpointEvent": event_schema, **event_schema.pop("$defs", {})}
    error = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}
    item_errors = {
        "type": "object",
        "properties": {
            "accepted": {"type": "integer"},
            "rejected": {"type": "integer"},
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
                                        {"$ref": "#/components/schemas/TouchpointEvent"},
                                        {
                                            "type": "array",
                                            "maxItems": config.max_batch,
                                            "items": {"$ref": "#/components/schemas/TouchpointEvent"},
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "202": answer(
                            "Kafka has every accepted event; rejected items have reasons", item_errors
                        ),
                        "400": answer("not JSON, or an empty batch", error),
                        "401": answer("missing or unknown API key", error),
                        "413": answer(f"body over {config.max_body_bytes} bytes or batch too long", error),
                        "415": answer("not application/json", error),
                        "422": answer("no valid event; reasons per item", item_errors),
                        "503": answer("Kafka did not acknowledge in time; retry", error),
                    },
                }
            },
            "/healthz": {"get": {"summary": "liveness", "responses": {"200": {"description": "ok"}}}},
            "/metrics": {
                "get": {"summary": "Prometheus text format", "responses": {"200": {"description": "ok"}}}
            },
        },
    }
