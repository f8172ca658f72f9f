"""The one place where the `openai` SDK's exceptions become tierq's.

The split mirrors the SDK's own `_should_retry`: connection faults, timeouts, 408, 409, 429 and
5xx are transient; 400, 401, 403, 404 and 422 are not. Two refinements: a 429 whose code is
`insufficient_quota` is a billing problem, not a rate limit, so it is permanent; and the
server's `x-should-retry` header, when present, overrides the status (as in the SDK).
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping
from typing import Any

import openai

from tierq.core.errors import (
    AccessDeniedError,
    PermanentProviderError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitedError,
    RequestRejectedError,
)

_TRANSIENT_KINDS = {408: "timeout", 409: "conflict", 429: "rate_limited"}
_PERMANENT_KINDS = {
    400: "bad_request",
    401: "authentication_error",
    403: "permission_denied",
    404: "not_found",
    422: "unprocessable_entity",
}


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The server's requested wait: `retry-after-ms`, then `retry-after` (seconds or a date)."""
    for header, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(header)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
        except ValueError:
            continue
        if math.isfinite(seconds) and seconds >= 0:
            return seconds
    date = headers.get("retry-after")
    if date:
        parsed = email.utils.parsedate_tz(date)
        if parsed is not None:
            return max(0.0, float(email.utils.mktime_tz(parsed) - time.time()))
    return None


def translate(error: openai.OpenAIError) -> ProviderError:
    """A tierq `ProviderError` for an SDK exception; the caller raises it `from` the original."""
    if isinstance(error, openai.APITimeoutError):
        return ProviderTimeoutError("the API call timed out", kind="timeout")
    if isinstance(error, openai.APIConnectionError):
        # Refused, reset, or cut mid-answer: the connection failed, the API said nothing.
        return ProviderUnavailableError("the connection to the API failed", kind="connection_error")
    if isinstance(error, openai.APIStatusError):
        return _from_status(error)
    if isinstance(error, openai.APIResponseValidationError):
        # The body did not match the API's schema; the SDK does not retry this either.
        return PermanentProviderError(str(error), kind="invalid_response")
    if isinstance(error, openai.APIError):
        # An error event inside a stream: no status, and the next attempt may well succeed.
        return ProviderUnavailableError(
            _api_message(error), kind="api_error", code=error.code, api_type=error.type
        )
    # Anything else the SDK raises is not a transport fault; calling again would repeat it.
    return PermanentProviderError(str(error), kind="sdk_error")


def _api_message(error: openai.APIError) -> str:
    body = error.body
    if isinstance(body, Mapping) and isinstance(body.get("message"), str):
        return str(body["message"])
    return error.message


def _from_status(error: openai.APIStatusError) -> ProviderError:
    status = error.status_code
    headers = error.response.headers
    message = _api_message(error)
    fields: dict[str, Any] = {
        "status_code": status,
        "code": error.code,
        "param": error.param,
        "api_type": error.type,
        "headers": {
            name: value
            for name, value in headers.items()
            if name.startswith("x-ratelimit-") or name.startswith("retry-after")
        },
    }
    kind = _TRANSIENT_KINDS.get(status) or _PERMANENT_KINDS.get(status)
    should_retry = headers.get("x-should-retry")

    if status == 429 and "insufficient_quota" in (error.code, error.type):
        return QuotaExceededError(message, kind="quota_exceeded", **fields)
    transient = status in _TRANSIENT_KINDS or status >= 500
    if should_retry is not None:
        # The server's explicit word wins over the status, as in the SDK's _should_retry.
        transient = should_retry == "true"
    if not transient:
        kind = kind or ("server_error" if status >= 500 else "api_error")
        if status in (401, 403):
            return AccessDeniedError(message, kind=kind, **fields)
        if status >= 500:
            return PermanentProviderError(message, kind=kind, **fields)
        return RequestRejectedError(message, kind=kind, **fields)
    retryable = {429: RateLimitedError, 408: ProviderTimeoutError}.get(
        status, ProviderUnavailableError
    )
    return retryable(
        message,
        kind=kind or "server_error",
        retry_after_seconds=retry_after_seconds(headers),
        **fields,
    )
