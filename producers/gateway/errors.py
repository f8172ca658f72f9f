"""Every gateway error leaves in the OpenAI API's shape: {"error": {message, type, param, code}}.

Clients written for the API (the `openai` SDK among them) read that shape into their own
exception classes, so tierq's errors reach them as the API's would. The status codes follow
the API where it has a route of the same kind; tierq's own job routes answer 422 for a request
that breaks the contract and 413 for one over a size limit.

This is the one place where errors become answers: the routes raise `APIError` for what they
check themselves, and tierq's own errors (a job's, the gateway storage's) are translated by the
handlers installed here, so the storage and the finalizer never speak HTTP.
"""

from __future__ import annotations

from typing import Any

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from tierq.core.errors import (
    BrokerUnavailableError,
    IdempotencyConflictError,
    InvalidJobError,
    JobNotFoundError,
    PayloadTooLargeError,
    StorageQuotaExceededError,
    StoreFullError,
    TenantQuotaExceededError,
)
from tierq.core.validation import describe_validation_error
from tierq.producers.gateway.job_models import JobSubmission
from tierq.producers.gateway.storage_errors import (
    NoSuchObjectError,
    StorageError,
    UnknownCursorError,
)


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """The API's error body, as the `openai` SDK reads it."""

    error: ErrorDetail


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the error answers a route can give, all in the API's shape."""
    meaning = {
        400: "Invalid parameters",
        401: "Missing, unknown or revoked API key",
        404: "No such object for this tenant",
        409: "Idempotency key reused for a different request",
        413: "Request over a size limit",
        422: "The request breaks the contract; the `param` names the field",
        429: "The tenant's quota of jobs in flight is full",
        503: "Redis (the queue) is unreachable",
        507: "Redis is nearly full (TIERQ_REDIS_MEMORY_GUARD_FRACTION): submit again later",
    }
    return {code: {"model": ErrorResponse, "description": meaning[code]} for code in codes}


class APIError(Exception):
    """An answer other than success, raised anywhere in a route and rendered by the handler."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status_code, headers=self.headers)


def not_found(what: str, ident: str) -> APIError:
    """Unknown and not-yours look the same: another tenant's id answers 404, never 403."""
    return APIError(404, f"No such {what}: {ident!r}", param=None, code=f"{what}_not_found")


def from_invalid_job(
    error: InvalidJobError, *, status_code: int = 422, at: str | None = None
) -> APIError:
    """The answer to a refused job; `at` names the job among several (`jobs.3`), before its
    field in `param` and before the message, so a client finds it among a thousand."""
    first = error.errors[0] if error.errors else {}
    field = first.get("field")
    param = ".".join(part for part in (at, field) if part) or None
    message = f"{at}: {error}" if at else str(error)
    if isinstance(error, PayloadTooLargeError):
        return APIError(413, message, param=param, code="request_too_large")
    if isinstance(error, IdempotencyConflictError):
        # Not str(error): it quotes the tenant-scoped key, an internal name.
        return APIError(
            409,
            f"the Idempotency-Key was used for a different request (job {error.job_id}); "
            "use a new key for a new request",
            param="Idempotency-Key",
            code="idempotency_conflict",
        )
    return APIError(status_code, message, param=param, code="invalid_request")


def _param(location: tuple[Any, ...]) -> str | None:
    # FastAPI's locations start with where the value came from ("body", "query", "path").
    parts = [str(part) for part in location[1:]] if len(location) > 1 else []
    return ".".join(parts) or (str(location[0]) if location else None)


def _contract_error(path: str, body: Any) -> APIError | None:
    """A job body's (or a batch's first bad job's) refusal as the contract describes it: the
    field and the API's rule, also for a rule between fields, which pydantic places on the
    job itself (`jobs.1`, not `jobs.1.top_logprobs`)."""
    if path == "/v1/jobs" and isinstance(body, dict):
        jobs, at = [body], None
    elif path == "/v1/jobs:batch" and isinstance(body, dict) and isinstance(body.get("jobs"), list):
        jobs, at = body["jobs"], "jobs"
    else:
        return None
    for index, job in enumerate(jobs):
        if not isinstance(job, dict):
            continue
        try:
            JobSubmission.model_validate(job)
        except ValidationError as error:
            invalid = describe_validation_error(error, JobSubmission)
            return from_invalid_job(invalid, at=None if at is None else f"{at}.{index}")
    return None


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    refused = _contract_error(request.url.path, error.body)
    if refused is not None:
        return refused.response()
    problems = error.errors()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return APIError(422, "the request body is not valid JSON", code="invalid_json").response()
    param = _param(tuple(first.get("loc", ())))
    message = f"invalid request: {param}: {first.get('msg')}" if param else str(first.get("msg"))
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more)"
    return APIError(422, message, param=param, code="invalid_request").response()


# FastAPI's answer to a body it cannot decode (not UTF-8, say); it is malformed JSON like any other.
FASTAPI_BODY_ERROR = "There was an error parsing the body"


async def _http_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400 and error.detail == FASTAPI_BODY_ERROR:
        return APIError(422, "the request body is not valid JSON", code="invalid_json").response()
    headers = dict(error.headers) if error.headers else None
    return APIError(error.status_code, str(error.detail), headers=headers).response()


async def _api_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, APIError)
    return error.response()


async def _tierq_error(_: Request, error: Exception) -> JSONResponse:
    if isinstance(error, InvalidJobError):
        return from_invalid_job(error).response()
    if isinstance(error, TenantQuotaExceededError):
        return APIError(
            429, str(error), type="rate_limit_error", code="tenant_quota_exceeded",
            headers={"Retry-After": "1"},
        ).response()  # fmt: skip
    if isinstance(error, StorageQuotaExceededError):
        # Retrying cannot help until files are deleted or expire: the SDK is told not to.
        return APIError(
            429, str(error), param="file", code="storage_quota_exceeded",
            headers={"x-should-retry": "false"},
        ).response()  # fmt: skip
    if isinstance(error, StoreFullError):
        return store_full(error).response()
    if isinstance(error, JobNotFoundError):
        return APIError(404, str(error), code="job_not_found").response()
    if isinstance(error, BrokerUnavailableError):
        return broker_unavailable().response()
    raise error


async def _storage_error(_: Request, error: Exception) -> JSONResponse:
    if isinstance(error, NoSuchObjectError):
        return not_found(error.kind, error.ident).response()
    if isinstance(error, UnknownCursorError):
        message = f"No {error.kind} {error.ident!r} to list after."
        return APIError(400, message, param="after", code="invalid_request").response()
    raise error


# What a client refused because Redis is nearly full waits before trying again: the queued
# jobs the guard makes room for take a while to drain.
STORE_FULL_RETRY_AFTER_SECONDS = 5


def store_full(error: StoreFullError) -> APIError:
    """507 Insufficient Storage: Redis is nearly full; nothing was stored or enqueued."""
    return APIError(
        507, str(error), type="server_error", code="store_full",
        headers={"Retry-After": str(STORE_FULL_RETRY_AFTER_SECONDS)},
    )  # fmt: skip


def broker_unavailable() -> APIError:
    return APIError(
        503, "the job queue is unreachable; try again shortly", type="server_error",
        code="broker_unavailable", headers={"Retry-After": "2"},
    )  # fmt: skip


async def _redis_error(_: Request, error: Exception) -> JSONResponse:
    # Redis read directly by a route (keys, files, batches) and not reached: a 503, never a
    # bare 500 that a client's retry would take for a lost request.
    return broker_unavailable().response()


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(redis.RedisError, _redis_error)
    app.add_exception_handler(StorageError, _storage_error)
    for kind in (
        InvalidJobError,
        TenantQuotaExceededError,
        StorageQuotaExceededError,
        StoreFullError,
        JobNotFoundError,
        BrokerUnavailableError,
    ):
        app.add_exception_handler(kind, _tierq_error)
