"""The provider's Files and Batches API, as far as a client that batches chat completions needs.

A batch is a JSONL file of requests (`custom_id`, `method`, `url`, `body`) uploaded with
`purpose=batch`, then `POST /v1/batches` on it. The API answers within its completion window;
here a batch completes `batch_completion_seconds` after it was created, all at once, when it is
next read. Each line is answered as `POST /v1/chat/completions` would answer it (its `[sim]`
directives included, each recorded in `/sim/requests` like any call, so a test counts every
paid answer), billed at the default tier's usage. Answers go to the output file, refusals and
faults to the error file, each line naming its `custom_id`.

`expire_next_batch_after_lines` (set with `PATCH /sim/config`) makes the next batch to complete
end `expired` instead, after answering that many of its lines: as the API does, the answers are
in the output file (and billed), and every line not run is in the error file with code
`batch_expired`. A cancelled batch ends `cancelled` the same way.

Routes: `POST /v1/files`, `GET /v1/files/{id}`, `GET /v1/files/{id}/content`,
`DELETE /v1/files/{id}`, `POST /v1/batches`, `GET /v1/batches` (newest first, `limit`,
`after`), `GET /v1/batches/{id}`, `POST /v1/batches/{id}/cancel`.
"""

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import from_json, to_json
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from tierq_simulator import errors
from tierq_simulator.chat import has_bearer_token
from tierq_simulator.errors import ApiError
from tierq_simulator.generation import generate
from tierq_simulator.render import completion_body
from tierq_simulator.request import parse_chat_request
from tierq_simulator.responses import error_response, json_response
from tierq_simulator.state import SimulatorState

CHAT_URL = "/v1/chat/completions"
WINDOWS = {"24h": 86_400}
_ids = itertools.count(1)


def _id(prefix: str) -> str:
    return f"{prefix}-sim{next(_ids):012d}"


@dataclass(slots=True)
class StoredFile:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass(slots=True)
class Batch:
    id: str
    input_file_id: str
    completion_window: str
    metadata: dict[str, str] | None
    lines: list[dict[str, Any]]
    created_at: float = field(default_factory=time.time)
    status: str = "in_progress"
    ended_at: float | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    completed: int = 0
    failed: int = 0
    cancel_requested: bool = False

    def as_json(self) -> dict[str, Any]:
        created = int(self.created_at)
        ended = None if self.ended_at is None else int(self.ended_at)
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": CHAT_URL,
            "errors": None,
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": created,
            "in_progress_at": created,
            "expires_at": created + WINDOWS[self.completion_window],
            "finalizing_at": ended,
            "completed_at": ended if self.status == "completed" else None,
            "failed_at": None,
            "expired_at": ended if self.status == "expired" else None,
            "cancelling_at": ended if self.status == "cancelled" else None,
            "cancelled_at": ended if self.status == "cancelled" else None,
            "request_counts": {
                "total": len(self.lines),
                "completed": self.completed,
                "failed": self.failed,
            },
            "metadata": self.metadata,
        }


def _unauthorized(request: Request) -> Response | None:
    """The API's 401 for a request without `Authorization: Bearer <key>`, as chat answers."""
    if has_bearer_token(request.headers.get("authorization")):
        return None
    return _refused(errors.missing_api_key())


class FilesAndBatches:
    """The Files and Batches routes of one simulator, their state in memory."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, Batch] = {}

    # --- files ---------------------------------------------------------------------------

    async def create_file(self, request: Request) -> Response:
        if (refused := _unauthorized(request)) is not None:
            return refused
        form = await request.form()
        upload, purpose = form.get("file"), form.get("purpose")
        if not isinstance(upload, UploadFile):
            return _refused(errors.invalid_request("'file' is a required property", param="file"))
        if not isinstance(purpose, str) or not purpose:
            return _refused(
                errors.invalid_request("'purpose' is a required property", param="purpose")
            )
        stored = StoredFile(_id("file"), upload.filename or "upload", purpose, await upload.read())
        self.files[stored.id] = stored
        return json_response(stored.as_json())

    async def retrieve_file(self, request: Request) -> Response:
        if (refused := _unauthorized(request)) is not None:
            return refused
        stored = self.files.get(request.path_params["file_id"])
        if stored is None:
            return _refused(_no_file(request.path_params["file_id"]))
        return json_response(stored.as_json())

    async def file_content(self, request: Request) -> Response:
        if (refused := _unauthorized(request)) is not None:
            return refused
        stored = self.files.get(request.path_params["file_id"])
        if stored is None:
            return _refused(_no_file(request.path_params["file_id"]))
        return Response(stored.content, media_type="application/octet-stream")

    async def delete_file(self, request: Request) -> Response:
        if (refused := _unauthorized(request)) is not None:
            return refused
        file_id = request.path_params["file_id"]
        if self.files.pop(file_id, None) is None:
            return _refused(_no_file(file_id))
        return json_response({"id": file_id, "object": "file", "deleted": True})

    # --- batches -------------------------------------------------------------------------

    async def create_batch(self, request: Request) -> Response:
        if (refused := _unauthorized(request)) is not None:
            return refused
        try:
            body = from_json(await request.body())
        except ValueError:
            return _refused(errors.invalid_json_body())
        if not isinstance(body, dict):
            return _refused(errors.invalid_request("expected a JSON object"))
        if body.get("endpoint") != CHAT_URL:
            return _refused(
                errors.invalid_request(
                    f"endpoint must be {CHAT_URL!r} on this simulator", param="endpoint"
                )
            )
        window = body.get("completion_window")
        if window not in WINDOWS:
            return _refused(
                errors.invalid_request(
                    f"Invalid value: {window!r}. Supported values are: '24h'.",
                    param="completion_window",
                    code="invalid_value",
                )
            )
        stored = self.files.get(str(body.get("input_file_id")))
        if stored is None or stored.purpose != "batch":
            return _refused(
                errors.invalid_request(
                    f"No batch input file with id {body.get('input_file_id')!r}",
                    param="input_file_id",
                )
            )
        try:
            lines = [from_json(line) for line in stored.content.splitlines() if line.strip()]
        except ValueError:
            return _refused(errors.invalid_request("the input file is not JSONL"))
        if not all(isinstance(line, dict) for line in lines):
            return _refused(errors.invalid_request("each line of the input file must be an object"))
        metadata = body.get("metadata")
        batch = Batch(
            _id("batch"),
            stored.id,
            window,
            metadata if isinstance(metadata, dict) else None,
            lines,
        )
        self.batches[batch.id] = batch
        return json_response(batch.as_json())

    async def list_batches(self, request: Request) -> Response:
        if (refused := _unauthorized(request)) is not None:
            return refused
        for batch in self.batches.values():
            self._advance(batch)
        newest = sorted(self.batches.values(), key=lambda b: b.created_at, reverse=True)
        after = request.query_params.get("after")
        if after is not None:
            ids = [b.id for b in newest]
            newest = newest[ids.index(after) + 1 :] if after in ids else []
        raw_limit = request.query_params.get("limit", "20")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
            return _refused(
                errors.invalid_request("limit must be an integer from 1 to 100", param="limit")
            )
        limit = int(raw_limit)
        page = newest[:limit]
        return json_response(
            {
                "object": "list",
                "data": [b.as_json() for b in page],
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
                "has_more": len(newest) > limit,
            }
        )

    async def retrieve_batch(self, request: Request) -> Response:
        if (refused := _unauthorized(request)) is not None:
            return refused
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _refused(_no_batch(request.path_params["batch_id"]))
        self._advance(batch)
        return json_response(batch.as_json())

    async def cancel_batch(self, request: Request) -> Response:
        if (refused := _unauthorized(request)) is not None:
            return refused
        batch = self.batches.get(request.path_params["batch_id"])
        if batch is None:
            return _refused(_no_batch(request.path_params["batch_id"]))
        if batch.status == "in_progress":
            batch.cancel_requested = True
            self._end(batch, "cancelled", answered=0)
        return json_response(batch.as_json())

    # --- running -------------------------------------------------------------------------

    def _advance(self, batch: Batch) -> None:
        """Complete (or expire) a batch whose time has come."""
        config = self.state.config
        if batch.status != "in_progress":
            return
        if time.time() - batch.created_at < config.batch_completion_seconds:
            return
        expire_after = config.expire_next_batch_after_lines
        if expire_after is not None:
            self.state.config = config.model_copy(update={"expire_next_batch_after_lines": None})
            self._end(batch, "expired", answered=min(expire_after, len(batch.lines)))
        else:
            self._end(batch, "completed", answered=len(batch.lines))

    def _end(self, batch: Batch, status: str, *, answered: int) -> None:
        """Answer the first `answered` lines; the rest were not run (expired or cancelled)."""
        output: list[bytes] = []
        failed: list[bytes] = []
        for line in batch.lines[:answered]:
            status_code, body = self._answer(line.get("body"))
            entry = _entry(line, {"status_code": status_code, "body": body}, None)
            (output if status_code == 200 else failed).append(entry)
        code = "batch_expired" if status == "expired" else "batch_cancelled"
        message = (
            "This request could not be executed before the completion window expired."
            if status == "expired"
            else "This request was not executed: the batch was cancelled."
        )
        for line in batch.lines[answered:]:
            failed.append(_entry(line, None, {"code": code, "message": message}))
        batch.completed, batch.failed = len(output), len(failed)
        if output:
            batch.output_file_id = self._store_output(batch, "output", output)
        if failed:
            batch.error_file_id = self._store_output(batch, "errors", failed)
        batch.status, batch.ended_at = status, time.time()

    def _answer(self, body: Any) -> tuple[int, Any]:
        """One line's answer, as `POST /v1/chat/completions` would give it, and recorded."""
        state = self.state
        raw = to_json(body)
        now = time.time()
        try:
            chat = parse_chat_request(body, state.config)
            fault = state.faults.decide(body, chat.directives, chat.model, state.config)
            if fault is not None and fault.error is not None:
                raise fault.error
        except ApiError as error:
            state.recorder.add(now, raw, error.status)
            return error.status, error.body()
        choices = generate(chat, state.config.seed)
        completion_tokens = sum(choice.completion_tokens for choice in choices)
        state.recorder.add(
            now,
            raw,
            200,
            prompt_tokens=chat.prompt_tokens,
            completion_tokens=completion_tokens,
        )
        completion = completion_body(chat, choices, _id("chatcmpl"), int(now))
        return 200, from_json(completion)

    def _store_output(self, batch: Batch, kind: str, lines: list[bytes]) -> str:
        stored = StoredFile(
            _id("file"), f"{batch.id}_{kind}.jsonl", "batch_output", b"\n".join(lines) + b"\n"
        )
        self.files[stored.id] = stored
        return stored.id


def _entry(line: dict[str, Any], response: dict[str, Any] | None, error: Any) -> bytes:
    if response is not None:
        response = {"request_id": _id("req"), **response}
    return to_json(
        {
            "id": _id("batch_req"),
            "custom_id": line.get("custom_id"),
            "response": response,
            "error": error,
        }
    )


def _refused(error: ApiError) -> Response:
    return error_response(error, {})


def _no_file(file_id: str) -> ApiError:
    return ApiError(404, f"No such File object: {file_id}", param="id")


def _no_batch(batch_id: str) -> ApiError:
    return ApiError(404, f"No batch found with id '{batch_id}'.", param="batch_id")
