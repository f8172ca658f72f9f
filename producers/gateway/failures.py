"""A job that ended without an answer, told as the API would have told it.

A drop-in caller (`POST /v1/chat/completions`) hears the provider's status and error body for
a permanent failure, and for a job that exhausted its retries the status and body of its last
error. The record keeps the provider's status, message, `code`, `param` and error `type`
(`JobError.api_type`); a record without the type (written before it was kept, or a failure the
API never answered) has it named here from the status, as the API names it. A failure with no
status (a timeout, a lost connection, the tier's time limit) answers 504 or
502, as a proxy in front of the API would.

Every such answer carries `x-should-retry: false`: tierq's workers already made the attempts
its retry settings allow, and only one layer retries (the SDK obeys the header).
"""

from __future__ import annotations

from typing import Any

from tierq.core.results import JobError, JobResult, JobStatus

# The API's error `type` by status, for a recorded error that does not carry the API's own.
API_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}
# tierq's kinds of failure that came without a status, as a proxy would answer them.
TIMEOUT_KINDS = frozenset({"timeout", "time_limit_exceeded"})
NOT_RETRIED = {"x-should-retry": "false"}


def error_status(error: JobError) -> int:
    if error.status_code is not None:
        return error.status_code
    return 504 if error.type in TIMEOUT_KINDS else 502


def api_type(error: JobError) -> str:
    if error.api_type:
        return error.api_type
    status = error_status(error)
    if error.code == "insufficient_quota":
        return "insufficient_quota"
    if status >= 500:
        return "timeout" if status == 504 else "server_error"
    return API_TYPES.get(status, "invalid_request_error")


def error_body(record: JobResult) -> tuple[int, dict[str, Any]]:
    """The status and the API's error body for a job that ended without an answer."""
    if record.status is JobStatus.CANCELLED:
        return 409, {
            "error": {
                "message": f"job {record.job_id} was cancelled before it answered",
                "type": "invalid_request_error",
                "param": None,
                "code": "job_cancelled",
            }
        }
    error = record.error or JobError(type="api_error", message="the job ended without an answer")
    return error_status(error), {
        "error": {
            "message": error.message,
            "type": api_type(error),
            "param": error.param,
            # A failure the provider never answered has no code of its own: tierq's kind.
            "code": error.code if error.status_code is not None else error.type,
        }
    }
