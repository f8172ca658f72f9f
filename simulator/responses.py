"""The few Starlette responses the simulator sends, tuned for low per-request CPU.

JSON is encoded with pydantic-core (Rust) rather than `json.dumps`, and a stream is sent as
one pre-built body with chunked transfer encoding, skipping `StreamingResponse`'s per-request
task group.
"""

from collections.abc import Mapping

from pydantic_core import to_json
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tierq_simulator.errors import ApiError


def json_response(
    payload: object, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response encoded by pydantic-core."""
    return Response(to_json(payload), status, headers, media_type="application/json")


def error_response(error: ApiError, headers: Mapping[str, str]) -> Response:
    """An `ApiError` as the API sends it: its status, JSON body and headers."""
    return json_response(error.body(), error.status, {**headers, **error.headers})


class EventStreamResponse(Response):
    """A `text/event-stream` body sent with chunked encoding, as the API streams."""

    def __init__(self, body: bytes, headers: Mapping[str, str]) -> None:
        super().__init__(body, 200, headers, media_type="text/event-stream")
        # Without content-length, uvicorn uses `transfer-encoding: chunked`.
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]


class NoResponse(Response):
    """Sends nothing: the connection is closed, or the client has already gone."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None
