"""The gateway's ASGI app: tierq's job API, and the OpenAI Chat Completions, Models, Files and
Batches API over HTTP.

    tierq gateway --host 0.0.0.0 --port 8700

Routes (all but the health checks and /metrics need `Authorization: Bearer <key>`, a tenant's
key from `tierq keys create`):

    POST   /v1/jobs                  submit one job (Idempotency-Key header optional) -> 202
    POST   /v1/jobs:batch            submit many jobs at once -> 202
    GET    /v1/jobs/{id}[?wait=S]    the job's record, optionally long-polled
    DELETE /v1/jobs/{id}             cancel
    GET    /v1/jobs/{id}/events      Server-Sent Events: status changes and streamed deltas
    POST   /v1/chat/completions      the API's route, run as a job and held until it ends: its
                                     ChatCompletion (stream=true: the API's chunks); the job id
                                     in the Tierq-Job-Id header (chat_completions.py)
    GET    /v1/models[/{model}]      the models a tier serves, as the API lists them
    POST   /v1/files, GET /v1/files[/{id}[/content]], DELETE /v1/files/{id}  (Files API)
    POST   /v1/batches, GET /v1/batches[/{id}], POST /v1/batches/{id}/cancel  (Batches API)
    GET    /healthz, /readyz         liveness, and readiness (Redis reachable)
    GET    /metrics                  Prometheus metrics, to `Authorization: Bearer <metrics key>`
                                     (TIERQ_GATEWAY__METRICS_KEY; unset: 404, not served)
    GET    /metrics/queues           jobs waiting per tier (queue and backlogs), as JSON for an
                                     autoscaler; the same key
    GET    /openapi.json, /docs      the OpenAPI document

A gateway is a producer like `TierqClient`: it validates, enqueues and reads job records; the
workers are the same. It holds no state of its own, so any number can run behind a balancer.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis
import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from tierq.core.settings import Settings, get_settings
from tierq.producers.gateway import (
    batches,
    chat_completions,
    events,
    files,
    jobs,
    models,
    observability,
)
from tierq.producers.gateway.deps import Gateway, GatewayState, RequireKey
from tierq.producers.gateway.errors import install_error_handlers
from tierq.producers.gateway.limits import BodyLimit

log = structlog.get_logger("tierq.gateway")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.gateway = gateway = Gateway.open(settings)
        # Held requests' job ends, heard on one subscription (held_waits.py).
        listener = asyncio.create_task(gateway.held.run(), name="held-waits")
        try:
            async with batches.finalizer(gateway):
                yield
        finally:
            listener.cancel()
            await asyncio.gather(listener, return_exceptions=True)
            await gateway.aclose()

    app = FastAPI(
        title="tierq gateway",
        version="0.1.0",
        summary="OpenAI Chat Completions calls as durable, rate-limited background jobs.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(
        BodyLimit,
        max_body_bytes=settings.gateway.max_body_bytes,
        max_file_bytes=settings.gateway.max_file_bytes,
    )
    app.include_router(jobs.router)
    app.include_router(events.router)
    app.include_router(chat_completions.router)
    app.include_router(models.router)
    app.include_router(files.router)
    app.include_router(batches.router)
    app.include_router(observability.router)
    app.add_middleware(RequireKey)
    app.add_middleware(observability.RequestMetrics)

    @app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["health"],
        summary="Readiness: Redis answers",
        responses={503: {"description": "Redis is unreachable"}},
    )
    async def readyz(gateway: GatewayState) -> Any:
        try:
            await gateway.client.redis.ping()
        except (redis.RedisError, OSError) as error:
            # Said to whoever asks, without a key: no host, port or error text. The log has it.
            log.warning("gateway.not_ready", error=str(error))
            return JSONResponse({"status": "unavailable"}, status_code=503)
        return {"status": "ok"}

    return app
