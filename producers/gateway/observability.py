"""The gateway's /metrics and /metrics/queues, and a count of its requests by route template
and status.

/metrics/queues is the same figures an autoscaler needs, as JSON: each tier's jobs waiting
(on its queue and in its fair-dispatch backlogs), for KEDA's metrics-api trigger
(ops/k8s/base/scaling.yaml), since a Redis list trigger sees only the short queue.

Both are served only with `TIERQ_GATEWAY__METRICS_KEY` set, and only to a caller that sends
that key as its bearer token: the figures (queue depths, tenants' traffic by route) are not for
whoever reaches the port, and a tenant's API key does not open them. Unset, the route answers
404, as if it were not there.

The count is taken by a pure ASGI middleware: Starlette's BaseHTTPMiddleware would buffer
around streamed answers (Server-Sent Events). The route label is the template
("/v1/jobs/{job_id}"), never the path, so ids do not multiply the series.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter
from pydantic import SecretStr
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tierq.core.exposition import exposed_registry, render
from tierq.core.queues import waiting_per_tier
from tierq.producers.gateway.deps import GatewayState
from tierq.producers.gateway.errors import APIError, ErrorResponse

GATEWAY_REQUESTS = Counter(
    "tierq_gateway_requests",
    "Gateway requests by route template and status",
    ["method", "route", "status"],
)

router = APIRouter(tags=["health"])

metrics_bearer = HTTPBearer(
    scheme_name="MetricsKey",
    auto_error=False,
    description="The gateway's metrics key (`TIERQ_GATEWAY__METRICS_KEY`), not a tenant's key.",
)

METRICS_OFF = (
    "The gateway serves /metrics only with TIERQ_GATEWAY__METRICS_KEY set "
    "(then to 'Authorization: Bearer <that key>')."
)
WRONG_METRICS_KEY = (
    "Missing or incorrect metrics key: send 'Authorization: Bearer <TIERQ_GATEWAY__METRICS_KEY>'."
)


def check_metrics_key(
    expected: SecretStr | None, credentials: HTTPAuthorizationCredentials | None
) -> None:
    """Nothing if `credentials` carry the metrics key; `APIError` 404 when no key is set (an
    empty one counts as none: it would open the route to everyone), 401 for any other caller
    (no key, a wrong key, a tenant's key)."""
    if expected is None or not expected.get_secret_value():
        raise APIError(404, METRICS_OFF, code="metrics_disabled")
    offered = credentials.credentials.encode() if credentials is not None else b""
    # Constant time, so the key cannot be guessed a character at a time.
    if not hmac.compare_digest(offered, expected.get_secret_value().encode()):
        raise APIError(
            401, WRONG_METRICS_KEY, code="invalid_metrics_key",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )  # fmt: skip


@router.get(
    "/metrics",
    summary="Prometheus metrics (queues, jobs, requests); needs the metrics key",
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong metrics key"},
        404: {"model": ErrorResponse, "description": "No metrics key set: not served"},
    },
)
async def metrics(
    gateway: GatewayState,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(metrics_bearer)],
) -> Response:
    check_metrics_key(gateway.settings.gateway.metrics_key, credentials)
    registry = exposed_registry(gateway.client.sync_redis, gateway.settings)
    # The queue gauges read Redis with a blocking client: off the event loop.
    body = await asyncio.to_thread(render, registry)
    return Response(body, media_type="text/plain; version=0.0.4")


@router.get(
    "/metrics/queues",
    summary="Jobs waiting per tier, on its queue and in its backlogs (JSON, for an "
    "autoscaler); needs the metrics key",
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong metrics key"},
        404: {"model": ErrorResponse, "description": "No metrics key set: not served"},
    },
)
async def queue_metrics(
    gateway: GatewayState,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(metrics_bearer)],
) -> dict[str, dict[str, dict[str, int]]]:
    """`{"tiers": {"fast": {"queued": 3, "backlog": 40, "waiting": 43}, ...}}`."""
    check_metrics_key(gateway.settings.gateway.metrics_key, credentials)
    tiers = await asyncio.to_thread(waiting_per_tier, gateway.client.sync_redis, gateway.settings)
    return {"tiers": tiers}


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
