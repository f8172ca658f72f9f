"""The gateway's /metrics, and a count of its requests by route template and status.

The count is taken by a pure ASGI middleware: Starlette's BaseHTTPMiddleware would buffer
around streamed answers (Server-Sent Events). The route label is the template
("/v1/jobs/{job_id}"), never the path, so ids do not multiply the series.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from prometheus_client import Counter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tierq.core.exposition import exposed_registry, render
from tierq.producers.gateway.deps import GatewayState

GATEWAY_REQUESTS = Counter(
    "tierq_gateway_requests",
    "Gateway requests by route template and status",
    ["method", "route", "status"],
)

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics (queues, jobs, requests)")
async def metrics(gateway: GatewayState) -> Response:
    registry = exposed_registry(gateway.client.sync_redis, gateway.settings)
    # The queue gauges read Redis with a blocking client: off the event loop.
    body = await asyncio.to_thread(render, registry)
    return Response(body, media_type="text/plain; version=0.0.4")


class RequestMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            GATEWAY_REQUESTS.labels(scope["method"], template, str(status)).inc()
