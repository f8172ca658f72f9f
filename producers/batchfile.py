"""Batch files in the OpenAI Batch API's JSONL format: reading an input file, writing result lines.

    parsed = parse_batch_file(data, settings)       # never raises for bad content
    if parsed.errors: ...                           # the whole file is refused, as the API does
    for request in parsed.requests: ...             # run these (a JobRequest each)
    for rejected in parsed.rejected: rejected_line(rejected)   # error-file lines, never run
    output_line(custom_id, record)                  # a finished job's line
    cancelled_line(custom_id, "batch_cancelled")    # a request that never ran
    is_error_line(line)                             # which file a line belongs in

The API judges a file in two ways, and so does this module. A line that is not a request at all
(not JSON, no or a repeated custom_id, another method or endpoint) fails the whole batch with a
list of errors naming the line, and nothing of it runs. A well-formed line whose body breaks the
Chat Completions rules fails alone: it gets a 400 in the error file, as the API would have
answered it, and the rest of the batch runs.

Pure logic, no Redis and no HTTP: the gateway's Batches API and a command-line runner share it.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tierq.core.contract import JobRequest
from tierq.core.errors import InvalidJobError
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings
from tierq.producers.submission import prepare

# The one endpoint tierq runs; input lines must name it as their `url`.
ENDPOINT = "/v1/chat/completions"
# A file with more problems than this reports the first ones only, as the API does.
MAX_REPORTED_ERRORS = 100


@dataclass(frozen=True, slots=True)
class LineError:
    """Why a file was refused: the API's `BatchError` (`line` is 1-based; None: the whole file)."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """A line to run: its body already passed tierq's contract."""

    custom_id: str
    line: int
    request: JobRequest


@dataclass(frozen=True, slots=True)
class RejectedRequest:
    """A well-formed line whose body breaks the contract; it fails alone, without a call."""

    custom_id: str
    line: int
    error: InvalidJobError


@dataclass(frozen=True, slots=True)
class ParsedBatch:
    """A file read whole. When `errors` is not empty the file is refused and both request lists
    are empty, so nothing of a refused file can be run by mistake."""

    requests: list[BatchRequest] = field(default_factory=list)
    rejected: list[RejectedRequest] = field(default_factory=list)
    errors: list[LineError] = field(default_factory=list)

    @property
    def total(self) -> int:
        """Requests in the batch, as the API's `request_counts.total` counts them."""
        return len(self.requests) + len(self.rejected)

    @property
    def model(self) -> str | None:
        """The model every request names, or None when they differ (the API allows one)."""
        models = {r.request.model for r in self.requests}
        return models.pop() if len(models) == 1 else None


def parse_batch_file(data: bytes, settings: Settings) -> ParsedBatch:
    """Read a JSONL batch input file; blank lines are skipped, line numbers count them.

    Bodies are judged as `TierqClient.submit` judges them (`settings`: the contract's limits, the
    tier table); at most `settings.gateway.max_batch_lines` requests.
    """
    limit = settings.gateway.max_batch_lines
    requests: list[BatchRequest] = []
    rejected: list[RejectedRequest] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    count = 0
    for number, raw in enumerate(data.splitlines(), start=1):
        if not raw.strip():
            continue
        count += 1
        if count > limit:
            errors.append(
                LineError(
                    "too_many_requests_in_file",
                    f"The input file has more than {limit} requests, the most a batch may hold "
                    "(TIERQ_GATEWAY__MAX_BATCH_LINES).",
                    line=number,
                )
            )
            break
        parsed = _read_line(raw, number, seen)
        if isinstance(parsed, LineError):
            errors.append(parsed)
            if len(errors) >= MAX_REPORTED_ERRORS:
                break
            continue
        custom_id, body = parsed
        seen.add(custom_id)
        if errors:
            continue  # the file is refused anyway: only its other malformed lines matter now
        try:
            requests.append(BatchRequest(custom_id, number, prepare(settings, body).request))
        except InvalidJobError as error:
            rejected.append(RejectedRequest(custom_id, number, error))
    if count == 0:
        errors.append(LineError("empty_file", "The batch input file holds no requests."))
    if errors:
        return ParsedBatch(errors=errors)
    return ParsedBatch(requests=requests, rejected=rejected)


def _read_line(raw: bytes, number: int, seen: set[str]) -> tuple[str, dict[str, Any]] | LineError:
    try:
        item = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        item = None
    if not isinstance(item, dict):
        return LineError(
            "invalid_json_line", "This line is not parseable as a JSON object.", line=number
        )
    for name in ("custom_id", "method", "url", "body"):
        if name not in item:
            return LineError(
                "missing_required_parameter",
                f"Missing required parameter: '{name}'.",
                line=number,
                param=name,
            )
    custom_id = item["custom_id"]
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(
            "invalid_custom_id", "custom_id must be a non-empty string.", number, "custom_id"
        )
    if custom_id in seen:
        return LineError(
            "duplicate_custom_id",
            f"The custom_id {custom_id!r} is used more than once; each must be unique.",
            number,
            "custom_id",
        )
    if item["method"] != "POST":
        return LineError("invalid_method", "The method must be 'POST'.", number, "method")
    if item["url"] != ENDPOINT:
        return LineError(
            "invalid_url",
            f"The url {item['url']!r} does not match the batch's endpoint {ENDPOINT!r}.",
            number,
            "url",
        )
    if not isinstance(item["body"], dict):
        return LineError("invalid_body", "The body must be a JSON object.", number, "body")
    return custom_id, item["body"]


# --- result lines ---------------------------------------------------------------------------


def _line(
    custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": f"batch_req_{uuid.uuid4().hex}",
        "custom_id": custom_id,
        "response": response,
        "error": error,
    }


def _error_type(status_code: int, code: str | None) -> str:
    # The API's error `type` for a status; tierq's record keeps its own kind, not the API's type.
    if code == "insufficient_quota":
        return "insufficient_quota"
    if status_code == 429:
        return "rate_limit_error"
    if status_code >= 500:
        return "server_error"
    if status_code == 401:
        return "authentication_error"
    return "invalid_request_error"


def rejected_line(rejected: RejectedRequest) -> dict[str, Any]:
    """The error-file line of a body that broke the contract: the 400 the API would have sent."""
    first = rejected.error.errors[0] if rejected.error.errors else {}
    body = {
        "error": {
            "message": str(rejected.error),
            "type": "invalid_request_error",
            "param": first.get("field"),
            "code": "invalid_request",
        }
    }
    return _line(rejected.custom_id, {"status_code": 400, "request_id": None, "body": body}, None)


def cancelled_line(custom_id: str, code: str, message: str | None = None) -> dict[str, Any]:
    """The error-file line of a request that never ran (or whose answer was discarded): no
    response, only the reason, e.g. `batch_cancelled` or `batch_expired`."""
    reasons = {
        "batch_cancelled": "The batch was cancelled before this request completed.",
        "batch_expired": "The batch expired before this request could be completed.",
    }
    text = message or reasons.get(code, "This request was not completed.")
    return _line(custom_id, None, {"code": code, "message": text})


def output_line(
    custom_id: str, record: JobResult, *, cancelled_code: str = "batch_cancelled"
) -> dict[str, Any]:
    """A finished job's line in the API's shape; `request_id` is the tierq job id.

    A success carries the `chat.completion` (with its usage); a call the API refused carries its
    status and `{"error": ...}` body; a failure without an HTTP answer (timeouts, connection
    errors, tierq's time limit) and a cancelled job carry only `error`.
    """
    if not record.status.is_final:
        raise ValueError(f"job {record.job_id} is {record.status.value}, not finished")
    if record.status is JobStatus.SUCCEEDED and record.response is not None:
        body = record.response.model_dump(mode="json")
        if body.get("usage") is None and record.usage is not None:
            body["usage"] = record.usage.model_dump(mode="json")
        return _line(
            custom_id, {"status_code": 200, "request_id": record.job_id, "body": body}, None
        )
    if record.status is JobStatus.CANCELLED:
        return cancelled_line(custom_id, cancelled_code)
    error = record.error
    if error is None:
        return cancelled_line(custom_id, "job_failed", "The request failed without an error.")
    if error.status_code is None:
        return _line(custom_id, None, {"code": error.code or error.type, "message": error.message})
    body = {
        "error": {
            "message": error.message,
            "type": _error_type(error.status_code, error.code),
            "param": error.param,
            "code": error.code,
        }
    }
    response = {"status_code": error.status_code, "request_id": record.job_id, "body": body}
    return _line(custom_id, response, None)


def is_error_line(line: Mapping[str, Any]) -> bool:
    """Whether a result line belongs in the error file: an `error`, or an HTTP status of 400 or
    more (the API puts a refused call's error where the completion would be)."""
    if line.get("error") is not None:
        return True
    response = line.get("response")
    return not isinstance(response, Mapping) or int(response.get("status_code", 0)) >= 400
