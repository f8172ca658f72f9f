"""Translating the openai SDK's exceptions into tierq's: retry or fail, and what the API said.

The SDK exceptions here are real objects built as the SDK builds them (`_make_status_error`):
the message is "Error code: <status> - <api message>", and `body` is the inner `error` object
of the response's JSON.
"""

from __future__ import annotations

import email.utils
import pickle
import time
from typing import Any

import httpx2
import openai
import pytest

from tierq.core.errors import (
    AccessDeniedError,
    PermanentProviderError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    QuotaExceededError,
    RateLimitedError,
    RequestRejectedError,
    RetryableProviderError,
)
from tierq.worker.sdk_errors import retry_after_seconds, translate

REQUEST = httpx2.Request("POST", "https://api.test/v1/chat/completions")
# Something a caller would not want in logs: it must reach `message`, never `repr`.
SENSITIVE = "Invalid 'messages[0].content': patient Jane Roe's diagnosis is too long"


def status_error(
    sdk_class: type[openai.APIStatusError],
    status: int,
    *,
    message: str = "The API said no.",
    error_type: str | None = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> openai.APIStatusError:
    body = {"message": message, "type": error_type, "param": param, "code": code}
    response = httpx2.Response(status, headers=headers or {}, json={"error": body}, request=REQUEST)
    return sdk_class(f"Error code: {status} - {message}", response=response, body=body)


# --- which errors are retried -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sdk_class", "status", "tierq_class", "kind"),
    [
        (openai.RateLimitError, 429, RateLimitedError, "rate_limited"),
        (openai.APIStatusError, 408, ProviderTimeoutError, "timeout"),
        (openai.ConflictError, 409, ProviderUnavailableError, "conflict"),
        (openai.InternalServerError, 500, ProviderUnavailableError, "server_error"),
        (openai.InternalServerError, 502, ProviderUnavailableError, "server_error"),
        (openai.InternalServerError, 503, ProviderUnavailableError, "server_error"),
        (openai.InternalServerError, 504, ProviderUnavailableError, "server_error"),
    ],
)
def test_a_transient_status_becomes_a_retryable_error(
    sdk_class: type[openai.APIStatusError], status: int, tierq_class: type, kind: str
) -> None:
    error = translate(status_error(sdk_class, status))

    assert type(error) is tierq_class
    assert isinstance(error, RetryableProviderError)
    assert error.retryable is True
    assert (error.kind, error.status_code) == (kind, status)


@pytest.mark.parametrize(
    ("sdk_class", "status", "tierq_class", "kind"),
    [
        (openai.BadRequestError, 400, RequestRejectedError, "bad_request"),
        (openai.AuthenticationError, 401, AccessDeniedError, "authentication_error"),
        (openai.PermissionDeniedError, 403, AccessDeniedError, "permission_denied"),
        (openai.NotFoundError, 404, RequestRejectedError, "not_found"),
        (openai.UnprocessableEntityError, 422, RequestRejectedError, "unprocessable_entity"),
        (openai.APIStatusError, 413, RequestRejectedError, "api_error"),
    ],
)
def test_a_refusal_status_becomes_a_permanent_error(
    sdk_class: type[openai.APIStatusError], status: int, tierq_class: type, kind: str
) -> None:
    error = translate(status_error(sdk_class, status))

    assert type(error) is tierq_class
    assert isinstance(error, PermanentProviderError)
    assert error.retryable is False
    assert (error.kind, error.status_code) == (kind, status)
    assert not hasattr(error, "retry_after_seconds")


def test_a_timeout_is_retryable_and_has_no_status() -> None:
    error = translate(openai.APITimeoutError(request=REQUEST))

    assert type(error) is ProviderTimeoutError
    assert (error.kind, error.status_code, error.retry_after_seconds) == ("timeout", None, None)
    assert error.message == "the API call timed out"


def test_a_connection_failure_is_retryable_and_has_no_status() -> None:
    error = translate(openai.APIConnectionError(request=REQUEST))

    assert type(error) is ProviderUnavailableError
    assert (error.kind, error.status_code, error.retry_after_seconds) == (
        "connection_error",
        None,
        None,
    )
    assert error.message == "the connection to the API failed"


def test_an_error_event_inside_a_stream_is_retryable_with_the_apis_message_and_code() -> None:
    sdk_error = openai.APIError(
        "An error occurred during streaming",
        REQUEST,
        body={"message": "The server had an error while processing your request.", "code": "x1"},
    )

    error = translate(sdk_error)

    assert type(error) is ProviderUnavailableError
    assert (error.kind, error.status_code, error.code) == ("api_error", None, "x1")
    assert error.message == "The server had an error while processing your request."


def test_any_other_sdk_error_still_becomes_a_provider_error() -> None:
    error = translate(openai.OpenAIError("something the SDK raised"))

    assert isinstance(error, ProviderError)
    assert error.message == "something the SDK raised"


# --- 429: rate limit or quota -------------------------------------------------------------------


def test_a_rate_limit_carries_the_apis_code_and_message() -> None:
    sdk_error = status_error(
        openai.RateLimitError,
        429,
        message="Rate limit reached for gpt-4o on requests per min (RPM): Limit 500.",
        error_type="requests",
        code="rate_limit_exceeded",
    )

    error = translate(sdk_error)

    assert type(error) is RateLimitedError
    assert error.code == "rate_limit_exceeded"
    assert error.message == "Rate limit reached for gpt-4o on requests per min (RPM): Limit 500."


def test_a_429_for_insufficient_quota_is_permanent_even_with_a_retry_after() -> None:
    sdk_error = status_error(
        openai.RateLimitError,
        429,
        message="You exceeded your current quota, please check your plan and billing details.",
        error_type="insufficient_quota",
        code="insufficient_quota",
        headers={"retry-after": "20"},
    )

    error = translate(sdk_error)

    assert type(error) is QuotaExceededError
    assert isinstance(error, PermanentProviderError)
    assert (error.kind, error.status_code, error.code) == (
        "quota_exceeded",
        429,
        "insufficient_quota",
    )
    assert error.message.startswith("You exceeded your current quota")


def test_a_429_whose_type_alone_says_insufficient_quota_is_permanent() -> None:
    sdk_error = status_error(openai.RateLimitError, 429, error_type="insufficient_quota", code=None)

    assert type(translate(sdk_error)) is QuotaExceededError


# --- the server's x-should-retry header ---------------------------------------------------------


@pytest.mark.parametrize(
    ("sdk_class", "status"),
    [(openai.InternalServerError, 503), (openai.RateLimitError, 429), (openai.ConflictError, 409)],
)
def test_x_should_retry_false_makes_a_transient_status_permanent(
    sdk_class: type[openai.APIStatusError], status: int
) -> None:
    error = translate(status_error(sdk_class, status, headers={"x-should-retry": "false"}))

    assert isinstance(error, PermanentProviderError)
    assert error.status_code == status


def test_x_should_retry_true_keeps_a_server_error_retryable() -> None:
    error = translate(
        status_error(openai.InternalServerError, 500, headers={"x-should-retry": "true"})
    )

    assert isinstance(error, RetryableProviderError)


def test_x_should_retry_true_makes_a_refusal_status_retryable() -> None:
    error = translate(status_error(openai.BadRequestError, 400, headers={"x-should-retry": "true"}))

    assert isinstance(error, RetryableProviderError)


# --- what the API said --------------------------------------------------------------------------


def test_a_refusal_carries_the_apis_own_message_code_and_param() -> None:
    sdk_error = status_error(
        openai.BadRequestError,
        400,
        message="Invalid 'temperature': decimal above maximum value. Expected a value <= 2.",
        code="decimal_above_max_value",
        param="temperature",
    )

    error = translate(sdk_error)

    assert error.message == (
        "Invalid 'temperature': decimal above maximum value. Expected a value <= 2."
    )
    assert str(error) == error.message
    assert (error.code, error.param) == ("decimal_above_max_value", "temperature")
    assert error.to_dict() == {
        "type": "bad_request",
        "status_code": 400,
        "code": "decimal_above_max_value",
        "param": "temperature",
        "message": "Invalid 'temperature': decimal above maximum value. Expected a value <= 2.",
        "api_type": "invalid_request_error",
    }


def test_a_response_without_a_json_error_keeps_the_sdks_message() -> None:
    response = httpx2.Response(502, text="<html>Bad Gateway</html>", request=REQUEST)
    sdk_error = openai.InternalServerError(
        "Error code: 502", response=response, body="<html>Bad Gateway</html>"
    )

    error = translate(sdk_error)

    assert type(error) is ProviderUnavailableError
    assert (error.kind, error.status_code, error.code, error.param) == (
        "server_error",
        502,
        None,
        None,
    )
    assert error.message == "Error code: 502"


@pytest.mark.parametrize(
    "sdk_error",
    [
        status_error(openai.BadRequestError, 400, message=SENSITIVE, param="messages"),
        status_error(openai.AuthenticationError, 401, message=SENSITIVE),
        status_error(openai.RateLimitError, 429, message=SENSITIVE, headers={"retry-after": "2"}),
        status_error(openai.RateLimitError, 429, message=SENSITIVE, code="insufficient_quota"),
        status_error(openai.InternalServerError, 500, message=SENSITIVE),
        openai.APIError("stream", REQUEST, body={"message": SENSITIVE}),
    ],
    ids=["400", "401", "429", "quota", "500", "stream"],
)
def test_repr_never_contains_the_message_text(sdk_error: openai.OpenAIError) -> None:
    error = translate(sdk_error)

    assert error.message == SENSITIVE
    assert SENSITIVE not in repr(error)
    assert "Jane Roe" not in repr(error)


def test_repr_names_the_class_kind_status_and_wait() -> None:
    sdk_error = status_error(openai.RateLimitError, 429, headers={"retry-after-ms": "1500"})

    assert repr(translate(sdk_error)) == "<RateLimitedError rate_limited 429 retry-after 1.50s>"
    assert repr(translate(openai.APITimeoutError(request=REQUEST))) == (
        "<ProviderTimeoutError timeout>"
    )
    assert repr(translate(status_error(openai.NotFoundError, 404))) == (
        "<RequestRejectedError not_found 404>"
    )


@pytest.mark.parametrize(
    "sdk_error",
    [
        status_error(
            openai.RateLimitError, 429, code="rate_limit_exceeded", headers={"retry-after": "3"}
        ),
        status_error(openai.BadRequestError, 400, code="bad", param="n"),
        status_error(openai.RateLimitError, 429, code="insufficient_quota"),
        openai.APITimeoutError(request=REQUEST),
    ],
    ids=["rate-limited", "bad-request", "quota", "timeout"],
)
def test_a_translated_error_survives_pickling_with_everything_the_api_said(
    sdk_error: openai.OpenAIError,
) -> None:
    error = translate(sdk_error)

    # Celery pickles a task's exception for on_failure; these are our own bytes.
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301

    assert type(copy) is type(error)
    assert copy.to_dict() == error.to_dict()
    assert repr(copy) == repr(error)
    assert str(copy) == str(error)


# --- the server's requested wait ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "1500"}, 1.5),
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
    ],
    ids=["milliseconds", "seconds", "fractional-seconds", "zero", "milliseconds-first"],
)
def test_a_retryable_error_waits_as_long_as_the_server_asks(
    headers: dict[str, str], seconds: float
) -> None:
    error = translate(status_error(openai.RateLimitError, 429, headers=headers))

    assert isinstance(error, RetryableProviderError)
    assert error.retry_after_seconds == pytest.approx(seconds)


def test_a_server_error_with_retry_after_carries_the_wait() -> None:
    error = translate(status_error(openai.InternalServerError, 503, headers={"retry-after": "4"}))

    assert isinstance(error, ProviderUnavailableError)
    assert error.retry_after_seconds == 4.0


def test_a_retryable_error_without_retry_after_has_no_wait() -> None:
    error = translate(status_error(openai.RateLimitError, 429))

    assert isinstance(error, RateLimitedError)
    assert error.retry_after_seconds is None


def test_retry_after_as_an_http_date_is_the_time_until_then() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)

    error = translate(status_error(openai.RateLimitError, 429, headers={"retry-after": when}))

    assert isinstance(error, RetryableProviderError)
    assert error.retry_after_seconds is not None
    # The date has whole seconds, and the clock moves on while the test runs.
    assert 28.0 <= error.retry_after_seconds <= 30.0


def test_retry_after_as_an_http_date_in_the_past_means_no_wait() -> None:
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after-ms": "soon", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "-5", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "nan", "retry-after": "3"}, 3.0),
        ({"retry-after-ms": "inf", "retry-after": "3"}, 3.0),
    ],
    ids=["unparsable", "negative", "nan", "infinite"],
)
def test_an_unusable_retry_after_ms_falls_back_to_retry_after(
    headers: dict[str, str], seconds: float
) -> None:
    assert retry_after_seconds(headers) == seconds


@pytest.mark.parametrize(
    "headers",
    [{}, {"retry-after": "soon"}, {"retry-after": "-1"}, {"retry-after": ""}, {"other": "5"}],
    ids=["none", "unparsable", "negative", "empty", "unrelated"],
)
def test_no_usable_retry_header_means_no_wait(headers: dict[str, str]) -> None:
    assert retry_after_seconds(headers) is None


def test_retry_headers_are_read_case_insensitively_from_a_response() -> None:
    headers = httpx2.Headers({"Retry-After-Ms": "100", "Retry-After": "9"})

    assert retry_after_seconds(headers) == pytest.approx(0.1)


def _sdk_errors_for_every_status() -> list[Any]:
    return [
        status_error(openai.APIStatusError, status)
        for status in (400, 401, 403, 404, 408, 409, 413, 422, 429, 500, 503)
    ]


@pytest.mark.parametrize(
    "sdk_error", _sdk_errors_for_every_status(), ids=lambda e: str(e.status_code)
)
def test_the_split_mirrors_the_sdks_own_retry_rule(sdk_error: openai.APIStatusError) -> None:
    sdk_retries = sdk_error.status_code in (408, 409, 429) or sdk_error.status_code >= 500

    assert translate(sdk_error).retryable is sdk_retries
