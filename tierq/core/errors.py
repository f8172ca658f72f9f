"""tierq's exceptions: one root, and a hierarchy that tells the caller what to do next.

- `ConfigurationError`: fix the environment and restart.
- `InvalidJobError` and its children: fix the request; nothing was enqueued.
- `BrokerUnavailableError`: Redis is unreachable; nothing was enqueued, try again later.
- `JobNotFoundError`, `JobWaitTimeout`: about a job id the caller holds.
- `JobNotSucceededError`, `StructuredOutputError` and its children: reading a job's answer
  (`JobResult.parsed`, `JobResult.message_param`) found none, or none of the shape asked for.
- `ProviderError`: what an API call ended with, inside a worker. `RetryableProviderError`s are
  retried by Celery (after `retry_after_seconds` at least); `PermanentProviderError`s fail the
  job at once, because sending the same request again cannot succeed.

This module imports neither Celery nor `openai`: producers use it too.
"""

from __future__ import annotations

from typing import Any


def _rebuild(cls: type[TierqError], args: tuple[Any, ...], state: dict[str, Any]) -> TierqError:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


class TierqError(Exception):
    """Raised for every error tierq itself signals; catch this to catch them all."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle by state, not by re-calling __init__ with `args`: subclasses take keyword
        # arguments, and Celery hands `on_failure` a copy that must survive a pickle round trip
        # (else it substitutes the nearest picklable base class and the details are lost).
        return (_rebuild, (type(self), self.args, self.__dict__))


class ConfigurationError(TierqError):
    """Raised at start-up when a setting is missing or wrong; the message names the variable."""


class InvalidJobError(TierqError, ValueError):
    """Raised when a job request breaks the contract; nothing was enqueued.

    `errors` lists each problem as `{"field": "temperature", "message": "..."}` so an HTTP
    gateway or a CLI can point at the exact parameter.
    """

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class UnknownModelError(InvalidJobError):
    """Raised when a job names a model that no tier serves; `known_models` lists those that are."""

    def __init__(self, model: str, known_models: list[str]) -> None:
        super().__init__(
            f"model {model!r} is not served by any tier; known models: {', '.join(known_models)}",
            [{"field": "model", "message": f"unknown model {model!r}"}],
        )
        self.model = model
        self.known_models = known_models


class PayloadTooLargeError(InvalidJobError):
    """Raised when a job request is larger than `max_request_bytes` once serialized."""

    def __init__(self, size_bytes: int, limit_bytes: int) -> None:
        super().__init__(
            f"job request is {size_bytes} bytes, over the limit of {limit_bytes} bytes "
            "(TIERQ_MAX_REQUEST_BYTES)",
            [{"field": "messages", "message": "request too large"}],
        )
        self.size_bytes = size_bytes
        self.limit_bytes = limit_bytes


class IdempotencyConflictError(InvalidJobError):
    """Raised when an idempotency key was used for a different request; nothing was enqueued."""

    def __init__(self, key: str, job_id: str) -> None:
        super().__init__(
            f"idempotency key {key!r} was used for a different request (job {job_id}); "
            "use a new key for a new request",
            [{"field": "idempotency_key", "message": "used for a different request"}],
        )
        self.key = key
        self.job_id = job_id


class RequestTooLargeError(InvalidJobError):
    """Raised when a job could never run: over its model's context window or whole TPM limit."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(
            f"invalid job request: {field}: {message}", [{"field": field, "message": message}]
        )
        self.field = field


class TenantQuotaExceededError(TierqError):
    """Raised when a gateway tenant has as many jobs in flight as its quota allows; nothing was
    enqueued. Submit again once some of its jobs have finished."""

    def __init__(self, tenant: str, in_flight: int, limit: int) -> None:
        super().__init__(
            f"tenant {tenant!r} has {in_flight} jobs in flight, the most its quota allows is "
            f"{limit} (TIERQ_GATEWAY__TENANT_MAX_IN_FLIGHT); submit again when some have finished"
        )
        self.tenant = tenant
        self.in_flight = in_flight
        self.limit = limit


class StorageQuotaExceededError(TierqError):
    """Raised when a gateway tenant's uploaded files would pass its storage quota (files kept,
    or their bytes); nothing was kept. Delete files, or wait for some to expire, and retry."""

    def __init__(self, tenant: str, what: str, used: int, limit: int, setting: str) -> None:
        super().__init__(
            f"tenant {tenant!r} would keep more than {limit} {what} (it keeps {used}; "
            f"{setting}); delete some files or wait for them to expire"
        )
        self.tenant = tenant
        self.what = what
        self.used = used
        self.limit = limit


class StoreFullError(TierqError):
    """Raised when Redis is near its `maxmemory` (TIERQ_REDIS_MEMORY_GUARD_FRACTION): new
    submissions and uploads are refused so the jobs already queued can run and store their
    results. Nothing was enqueued; submit again later."""

    def __init__(self, used_bytes: int, max_bytes: int, fraction: float) -> None:
        super().__init__(
            f"the job store is nearly full: Redis uses {used_bytes} of its {max_bytes} bytes "
            f"(refusing new work from {fraction:.0%}, TIERQ_REDIS_MEMORY_GUARD_FRACTION); "
            "submit again later"
        )
        self.used_bytes = used_bytes
        self.max_bytes = max_bytes
        self.fraction = fraction


class AdmissionDeferred(TierqError):
    """Raised inside a worker when the shared rate limit cannot admit a job soon.

    The task puts the job back on its queue to start after `wait_seconds`, which frees the
    worker's slot and does not count as an attempt.
    """

    def __init__(self, wait_seconds: float) -> None:
        super().__init__(f"rate limit: next start in {wait_seconds:.2f}s")
        self.wait_seconds = wait_seconds


class BrokerUnavailableError(TierqError, ConnectionError):
    """Raised when Redis cannot be reached; the job was not enqueued and may be submitted again.

    From `submit_many`, `job_ids` lists the jobs that were (or may have been) enqueued before
    the failure; they will run. The others were not enqueued and may be submitted again.
    """

    def __init__(self, message: str, job_ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.job_ids = job_ids or []


class NotDurableError(BrokerUnavailableError):
    """Raised when jobs were queued but Redis did not confirm them durable (TIERQ_DURABILITY)
    in time: they will most likely run, but may be lost if the primary fails now. `job_ids`
    names them; submitting again with the same idempotency keys is safe either way."""


class JobNotFoundError(TierqError, LookupError):
    """Raised for a job id that was never submitted, or whose record expired after its TTL."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job {job_id!r} (never submitted, or its record expired)")
        self.job_id = job_id


class JobWaitTimeout(TierqError, TimeoutError):
    """Raised when `wait` gives up; the job itself carries on and can be polled again."""

    def __init__(self, job_id: str, timeout_seconds: float, status: str) -> None:
        super().__init__(
            f"job {job_id!r} still {status} after waiting {timeout_seconds:g}s; "
            "it keeps running, poll it again later"
        )
        self.job_id = job_id
        self.timeout_seconds = timeout_seconds
        self.status = status


class JobNotSucceededError(TierqError):
    """Raised when an answer is read from a job that has not succeeded (still queued or
    running, failed, or cancelled); `status` says where it is, `error` why it failed."""

    def __init__(self, job_id: str, status: str, error: str | None = None) -> None:
        why = f": {error}" if error else ""
        super().__init__(f"job {job_id!r} has no answer to read: it is {status}{why}")
        self.job_id = job_id
        self.status = status
        self.error = error


class StructuredOutputError(TierqError, ValueError):
    """Raised when a succeeded job's answer cannot be read as the structured object asked for;
    the job ran and was billed, so the fix is in the prompt, the schema or the output cap."""

    def __init__(self, job_id: str, message: str) -> None:
        super().__init__(f"job {job_id!r}: {message}")
        self.job_id = job_id


class StructuredOutputRefusal(StructuredOutputError):
    """Raised when the model refused to answer (`message.refusal`); `refusal` is its text."""

    def __init__(self, job_id: str, refusal: str) -> None:
        super().__init__(job_id, f"the model refused: {refusal}")
        self.refusal = refusal


class StructuredOutputTruncated(StructuredOutputError):
    """Raised when the answer was cut at the output cap (`finish_reason == "length"`), so its
    JSON is incomplete; `content` is what was written. Raise the cap or ask for less."""

    def __init__(self, job_id: str, content: str | None) -> None:
        super().__init__(
            job_id,
            "the answer was cut at the output cap (finish_reason 'length'); raise "
            "max_completion_tokens or ask for less",
        )
        self.content = content


class StructuredOutputInvalid(StructuredOutputError):
    """Raised when the answer does not validate as the class asked for; `errors` lists
    pydantic's findings (`type`, `loc`, `msg`)."""

    def __init__(self, job_id: str, schema_name: str, errors: list[dict[str, Any]]) -> None:
        found = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '(root)'}: {e['msg']}" for e in errors[:5]
        )
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        super().__init__(job_id, f"the answer is not a valid {schema_name}: {found}{more}")
        self.schema_name = schema_name
        self.errors = errors


class ProviderError(TierqError):
    """Raised inside a worker when the API call failed; carries what the API said.

    `kind` is a stable machine name (`rate_limited`, `timeout`, `bad_request`, ...), `status_code`
    the HTTP status when there was a response, `code`, `param` and `api_type` the API's own
    error fields (`api_type` is its `type`).
    """

    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        kind: str,
        status_code: int | None = None,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        api_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.kind = kind
        self.status_code = status_code
        self.code = code
        self.param = param
        # The API's own error `type` (`invalid_request_error`, ...), when it gave one.
        self.api_type = api_type
        # The answer's x-ratelimit-* and retry-after headers: the limiter learns from them.
        self.headers = headers or {}

    def __repr__(self) -> str:
        status = f" {self.status_code}" if self.status_code is not None else ""
        return f"<{type(self).__name__} {self.kind}{status}>"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.kind,
            "status_code": self.status_code,
            "code": self.code,
            "param": self.param,
            "message": self.message,
            "api_type": self.api_type,
        }


class RetryableProviderError(ProviderError):
    """Raised for a transient fault; Celery retries it after `retry_after_seconds` at least."""

    retryable = True

    def __init__(
        self, message: str, *, retry_after_seconds: float | None = None, **fields: Any
    ) -> None:
        super().__init__(message, **fields)
        self.retry_after_seconds = retry_after_seconds

    def __repr__(self) -> str:
        wait = (
            f" retry-after {self.retry_after_seconds:.2f}s"
            if self.retry_after_seconds is not None
            else ""
        )
        return f"{super().__repr__()[:-1]}{wait}>"


class RateLimitedError(RetryableProviderError):
    """Raised for a 429 that is a rate limit (not a quota): the budget refills; wait, retry."""


class ProviderTimeoutError(RetryableProviderError):
    """Raised when the call outlived `request_timeout_seconds` (or the server answered 408)."""


class ProviderUnavailableError(RetryableProviderError):
    """Raised for connection failures, 409 and 5xx answers: the service may answer next time."""


class PermanentProviderError(ProviderError):
    """Raised when the API refused the request itself; retrying the same request cannot help."""


class QuotaExceededError(PermanentProviderError):
    """Raised for a 429 `insufficient_quota`: a billing problem, which no wait will fix."""


class RequestRejectedError(PermanentProviderError):
    """Raised for 400, 404 and 422 answers: the request is wrong for this API or model."""


class AccessDeniedError(PermanentProviderError):
    """Raised for 401 and 403 answers: the key is wrong or lacks access; fix the key."""
