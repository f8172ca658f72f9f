"""The simulator's Starlette application: the OpenAI routes plus `/sim/*` controls.

`/sim/*` lets tests and benchmarks see what was sent (`/sim/requests`), count what was
served (`/sim/stats`), and change latency, limits and fault rates without a restart
(`/sim/config`). Routes:

- ``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{model}``
- the Files and Batches API a batching client needs (`simulator/batches.py`)
- ``GET /sim/requests[?model=M]`` -> ``{"data": [{"received_at", "body", "status", "fault"}]}``
  (``status`` 0: the connection was closed without a response); ``DELETE`` clears them
- ``GET /sim/stats`` (``DELETE`` resets the counters)
- ``GET /sim/config``; ``PATCH /sim/config`` with any of its run-time fields
  (``config.RUNTIME_FIELDS``); returns the effective config
- ``POST /sim/reset``: records, counters, ``times=`` counts, rate-limit usage and cached
  prompts
- ``GET /healthz``
"""

from typing import Any

from pydantic import ValidationError
from pydantic_core import from_json
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tierq_simulator import errors
from tierq_simulator.batches import FilesAndBatches
from tierq_simulator.chat import ChatCompletions
from tierq_simulator.config import SimulatorConfig, describe
from tierq_simulator.errors import ApiError
from tierq_simulator.models import list_models, retrieve_model
from tierq_simulator.responses import error_response, json_response
from tierq_simulator.state import SimulatorState
from tierq_simulator.tokenizer import load_all as load_tokenizers


class SimControls:
    """The `/sim/*` endpoints and the health check."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def health(self, request: Request) -> Response:
        """`GET /healthz`."""
        return json_response({"status": "ok"})

    async def list_requests(self, request: Request) -> Response:
        """`GET /sim/requests`: the recorded requests, optionally for one model."""
        model = request.query_params.get("model")
        return json_response({"data": self.state.recorder.records(model)})

    async def clear_requests(self, request: Request) -> Response:
        """`DELETE /sim/requests`."""
        return json_response({"deleted": self.state.recorder.clear_records()})

    async def stats(self, request: Request) -> Response:
        """`GET /sim/stats`."""
        return json_response(self.state.recorder.stats.as_json())

    async def reset_stats(self, request: Request) -> Response:
        """`DELETE /sim/stats`."""
        self.state.recorder.reset_stats()
        return json_response(self.state.recorder.stats.as_json())

    async def get_config(self, request: Request) -> Response:
        """`GET /sim/config`."""
        return json_response(self.state.config.model_dump(mode="json"))

    async def patch_config(self, request: Request) -> Response:
        """`PATCH /sim/config`: change run-time settings, answer with the effective config."""
        try:
            changes = from_json(await request.body())
        except ValueError:
            return error_response(errors.invalid_json_body(), {})
        if not isinstance(changes, dict):
            return error_response(errors.invalid_request("expected a JSON object"), {})
        try:
            config = self.state.reconfigure(changes)
        except ValidationError as exc:
            error = errors.invalid_request(describe(exc), code="invalid_config")
            return error_response(error, {})
        except ValueError as exc:
            return error_response(errors.invalid_request(str(exc), code="invalid_config"), {})
        return json_response(config.model_dump(mode="json"))

    async def reset(self, request: Request) -> Response:
        """`POST /sim/reset`."""
        self.state.reset()
        return json_response({"status": "reset"})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown URLs and methods answered in the API's error shape, not Starlette's text."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = f"Invalid URL ({request.method} {request.url.path})"
    return error_response(ApiError(status, message), {})


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """Build the simulator application for `config` (defaults if omitted)."""
    state = SimulatorState(config or SimulatorConfig())
    # Load the tokenizer now, not on the first request (a few hundred ms).
    load_tokenizers()
    chat = ChatCompletions(state)
    sim = SimControls(state)
    batching = FilesAndBatches(state)
    routes: list[Any] = [
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/files", batching.create_file, methods=["POST"]),
        Route("/v1/files/{file_id}", batching.retrieve_file, methods=["GET"]),
        Route("/v1/files/{file_id}", batching.delete_file, methods=["DELETE"]),
        Route("/v1/files/{file_id}/content", batching.file_content, methods=["GET"]),
        Route("/v1/batches", batching.create_batch, methods=["POST"]),
        Route("/v1/batches", batching.list_batches, methods=["GET"]),
        Route("/v1/batches/{batch_id}", batching.retrieve_batch, methods=["GET"]),
        Route("/v1/batches/{batch_id}/cancel", batching.cancel_batch, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
        Route("/sim/requests", sim.list_requests, methods=["GET"]),
        Route("/sim/requests", sim.clear_requests, methods=["DELETE"]),
        Route("/sim/stats", sim.stats, methods=["GET"]),
        Route("/sim/stats", sim.reset_stats, methods=["DELETE"]),
        Route("/sim/config", sim.get_config, methods=["GET"]),
        Route("/sim/config", sim.patch_config, methods=["PATCH"]),
        Route("/sim/reset", sim.reset, methods=["POST"]),
        Route("/healthz", sim.health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.simulator = state
    return app
