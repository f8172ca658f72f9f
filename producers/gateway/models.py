"""GET /v1/models and GET /v1/models/{model}: the model catalog, as the API lists its models.

The models are those a tier serves (the catalog, tierq/core/catalog.py, with the operator's
`TIERQ_MODELS` and `TIERQ_TIERS`), so `client.models.list()` shows what a job may name.
The API's `created` (when the model was made) and `owned_by` are not in the catalog: every
model says `created: 0` and `owned_by: "tierq"`.
"""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel

from tierq.core.settings import Settings
from tierq.producers.gateway.deps import GatewayState, Tenant
from tierq.producers.gateway.errors import APIError, error_responses

router = APIRouter(prefix="/v1", tags=["openai"], responses=error_responses(401, 503))


class Model(BaseModel):
    """One model, as the API describes it."""

    id: str
    object: Literal["model"] = "model"
    created: int = 0
    owned_by: str = "tierq"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


def served(settings: Settings) -> list[Model]:
    return [Model(id=name) for name in settings.known_models()]


@router.get("/models", summary="List the models a tier serves")
async def list_models(gateway: GatewayState, tenant: Tenant) -> ModelList:
    return ModelList(data=served(gateway.settings))


@router.get(
    "/models/{model}",
    summary="Describe a model a tier serves",
    responses=error_responses(404),
)
async def retrieve_model(model: str, gateway: GatewayState, tenant: Tenant) -> Model:
    if gateway.settings.tier_of(model) is None:
        raise APIError(
            404,
            f"The model '{model}' does not exist or you do not have access to it.",
            param="model",
            code="model_not_found",
        )
    return Model(id=model)
