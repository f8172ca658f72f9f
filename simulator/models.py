"""`GET /v1/models` and `GET /v1/models/{model}`, so clients that list models first work.

The simulator answers for any model name; the list names the aliases and snapshots of its model
table (`simulator.catalog`).
"""

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tierq_simulator import errors
from tierq_simulator.catalog import listed_names
from tierq_simulator.chat import has_bearer_token
from tierq_simulator.responses import error_response, json_response

MODEL_CREATED = 1_715_367_049  # a fixed `created` timestamp for every listed model


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": MODEL_CREATED, "owned_by": "system"}


async def list_models(request: Request) -> Response:
    """`GET /v1/models`."""
    if not has_bearer_token(request.headers.get("authorization")):
        return error_response(errors.missing_api_key(), {})
    return json_response({"object": "list", "data": [_model(name) for name in listed_names()]})


async def retrieve_model(request: Request) -> Response:
    """`GET /v1/models/{model}`: any name exists."""
    if not has_bearer_token(request.headers.get("authorization")):
        return error_response(errors.missing_api_key(), {})
    return json_response(_model(request.path_params["model"]))
