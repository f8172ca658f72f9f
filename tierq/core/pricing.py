"""What a job cost: its usage times its model's price (USD per 1M tokens, as the API bills).

The API bills uncached prompt tokens at the input price, cached ones at the cached-input price,
and every completion token (reasoning tokens included: they are part of `completion_tokens`)
at the output price. The prices themselves are in the model catalog (`tierq.core.catalog`). A
model without a price costs None, not 0, so a report shows it as unknown rather than free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from tierq.core.results import Usage

PER_TOKENS = 1_000_000


class ModelPrice(BaseModel):
    """USD per 1M tokens."""

    # No inf or NaN: a price the ledger cannot add would stop outcomes being recorded.
    model_config = ConfigDict(
        extra="forbid", frozen=True, allow_inf_nan=False, use_attribute_docstrings=True
    )

    input: Annotated[float, Field(ge=0)]
    """USD per 1M uncached prompt tokens."""
    cached_input: Annotated[float, Field(ge=0)]
    """USD per 1M prompt tokens served from the provider's prompt cache."""
    output: Annotated[float, Field(ge=0)]
    """USD per 1M completion tokens, reasoning tokens included."""


def price_for(prices: Mapping[str, ModelPrice], model: str) -> ModelPrice | None:
    """The model's price; a dated snapshot ("gpt-4o-2024-08-06") falls back to its model."""
    if model in prices:
        return prices[model]
    base = max((name for name in prices if model.startswith(f"{name}-")), key=len, default=None)
    return prices[base] if base else None


def cost_usd(usage: Usage, price: ModelPrice) -> float:
    cached = min(usage.cached_tokens, usage.prompt_tokens)
    dollars = (
        (usage.prompt_tokens - cached) * price.input
        + cached * price.cached_input
        + usage.completion_tokens * price.output
    )
    return round(dollars / PER_TOKENS, 9)
