"""The few Starlette responses the simulator sends, tuned for low per-request CPU.

JSON is encoded with pydantic-core (Rust) rather than `json.dumps`. Streams, and answers cut
short, are sent by `simulator.streaming`.
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


class NoResponse(Response):
    """Sends nothing: the connection is closed, or the client has already gone."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        return None
