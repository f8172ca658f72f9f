"""The model catalog: everything tierq knows about a model, written once.

Per model: the tier that serves it, whether it is a reasoning (o-series) model, its context
window and maximum output, the `reasoning_effort` values it accepts, the parameters it refuses
or takes only at their default, and its prices. The producer's checks, the worker's call and
the cost on every result read it through `Settings.model_info`; no other module spells a
model's facts. Operators extend or correct it without code (`TIERQ_MODELS`, merged entry by
entry, field by field, over `SHIPPED_MODELS`).

Sources of the shipped figures:
- the seed models' tiers, context windows and prices are those tierq shipped before the catalog
  existed (OpenAI's published standard-tier prices when that table was written);
- the GPT-4.1 and GPT-5 families (added so an operator can route today's models without
  writing their facts): context window, maximum output and standard, flex and priority prices
  as OpenAI's model pages and pricing page published them in 2025 (GPT-4.1: 1,047,576 tokens
  in, 32,768 out; GPT-5: 400,000 in, 128,000 out); flex is billed at half the standard price,
  as OpenAI's flex-processing guide says ("Batch API prices"); priority prices only where
  OpenAI lists the model for it. Prices change: an operator whose bill differs corrects an
  entry with `TIERQ_MODELS`;
- maximum output tokens of the seed models: OpenAI's model pages
  (platform.openai.com/docs/models/<model>): 16,384 for gpt-4o and gpt-4o-mini, 100,000 for o3
  and o4-mini;
- `reasoning_effort` "low", "medium" or "high" for o3 and o4-mini: the reference guide's
  o-series section (/work/shared/reference/openai-chat-completions-guide.txt); GPT-5 models
  take "minimal" as well (OpenAI's GPT-5 guide);
- what reasoning models refuse: the guide ("they ... don't support temperature") and OpenAI's
  reasoning-models guide, whose error for a non-default sampling value reads "Only the default
  (1) value is supported": temperature and top_p are accepted at 1; the penalties, stop,
  logprobs, top_logprobs and logit_bias are refused outright ("Unsupported parameter").
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tierq.core.contract import ReasoningEffort
from tierq.core.pricing import ModelPrice

# Every `reasoning_effort` the contract allows: what a reasoning model the catalog does not
# describe is assumed to take (the API then judges the value).
ANY_REASONING_EFFORT: tuple[str, ...] = get_args(ReasoningEffort)
# The o-series' rules, the defaults of a reasoning model's entry.
O_SERIES_REASONING_EFFORTS: tuple[str, ...] = ("low", "medium", "high")
# GPT-5 models add "minimal" (few or no reasoning tokens).
GPT_5_REASONING_EFFORTS: list[str] = ["minimal", "low", "medium", "high"]
# The API answers "Only the default (1) value is supported" for these, and takes the default.
O_SERIES_DEFAULT_ONLY: Mapping[str, float] = {"temperature": 1, "top_p": 1}
# ... and "Unsupported parameter" for these, whatever the value.
O_SERIES_REFUSED: tuple[str, ...] = (
    "frequency_penalty",
    "presence_penalty",
    "stop",
    "logprobs",
    "top_logprobs",
    "logit_bias",
)


class ModelSpec(BaseModel):
    """One catalog entry as an operator writes it; an unset rule takes its kind's default."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    tier: str | None = None
    """The tier serving the model (unless a tier's `models` lists it elsewhere); null: none."""
    reasoning: bool | None = None
    """An o-series (reasoning) model; unset: as its tier's `reasoning` says."""
    context_window_tokens: Annotated[int, Field(ge=1)] | None = None
    """Prompt plus output, in tokens; a job over it is refused at submission. Unset: unchecked."""
    max_output_tokens: Annotated[int, Field(ge=1)] | None = None
    """Largest output cap (`max_tokens`/`max_completion_tokens`) the model takes; unset:
    unchecked."""
    reasoning_efforts: list[str] | None = None
    """`reasoning_effort` values accepted; unset: low, medium, high for a reasoning model, none
    for another."""
    refused_parameters: list[str] | None = None
    """Parameters refused whatever their value; unset: the penalties, stop, logprobs,
    top_logprobs and logit_bias for a reasoning model, none for another."""
    default_only_parameters: dict[str, float] | None = None
    """Parameters accepted only at the value given here (the API's default); unset: temperature
    and top_p at 1 for a reasoning model, none for another."""
    price: ModelPrice | None = None
    """USD per 1M tokens at the standard service tier; unset: cost unknown, not free."""
    service_tier_prices: dict[str, ModelPrice] = {}
    """Prices for the service tiers billed differently (`flex`, `priority`), by the
    `service_tier` the API reports on the answer."""

    @field_validator("reasoning_efforts")
    @classmethod
    def _efforts_the_contract_knows(cls, value: list[str] | None) -> list[str] | None:
        unknown = [effort for effort in value or [] if effort not in ANY_REASONING_EFFORT]
        if unknown:
            raise ValueError(
                f"unknown reasoning_effort {unknown[0]!r}; one of {', '.join(ANY_REASONING_EFFORT)}"
            )
        return value


def _price(input_usd: float, cached_input_usd: float, output_usd: float) -> ModelPrice:
    return ModelPrice(input=input_usd, cached_input=cached_input_usd, output=output_usd)


# GPT-4.1 family: 1,047,576 tokens in, 32,768 out; GPT-5 family: 400,000 in, 128,000 out.
GPT_4_1_WINDOW, GPT_4_1_MAX_OUTPUT = 1_047_576, 32_768
GPT_5_WINDOW, GPT_5_MAX_OUTPUT = 400_000, 128_000


def _flex(standard: ModelPrice) -> ModelPrice:
    """Flex processing is billed at half the standard price (OpenAI's flex guide)."""
    return ModelPrice(
        input=standard.input / 2,
        cached_input=standard.cached_input / 2,
        output=standard.output / 2,
    )


def _gpt_4_1(tier: str, standard: ModelPrice, priority: ModelPrice) -> ModelSpec:
    return ModelSpec(
        tier=tier,
        reasoning=False,
        context_window_tokens=GPT_4_1_WINDOW,
        max_output_tokens=GPT_4_1_MAX_OUTPUT,
        price=standard,
        service_tier_prices={"priority": priority},
    )


def _gpt_5(standard: ModelPrice, priority: ModelPrice | None) -> ModelSpec:
    tier_prices = {"flex": _flex(standard)}
    if priority is not None:
        tier_prices["priority"] = priority
    return ModelSpec(
        tier="reasoning",
        reasoning=True,
        context_window_tokens=GPT_5_WINDOW,
        max_output_tokens=GPT_5_MAX_OUTPUT,
        reasoning_efforts=GPT_5_REASONING_EFFORTS,
        price=standard,
        service_tier_prices=tier_prices,
    )


# Sources: see the module docstring. Non-reasoning models go to `fast` or `standard` by price;
# every reasoning model goes to `reasoning`, whose call timeout allows for long thinking.
SHIPPED_MODELS: Mapping[str, ModelSpec] = {
    "gpt-4o-mini": ModelSpec(
        tier="fast",
        reasoning=False,
        context_window_tokens=128_000,
        max_output_tokens=16_384,
        price=_price(0.15, 0.075, 0.60),
        service_tier_prices={"priority": _price(0.25, 0.125, 1.00)},
    ),
    "gpt-4o": ModelSpec(
        tier="standard",
        reasoning=False,
        context_window_tokens=128_000,
        max_output_tokens=16_384,
        price=_price(2.50, 1.25, 10.00),
        service_tier_prices={"priority": _price(4.25, 2.125, 17.00)},
    ),
    "o4-mini": ModelSpec(
        tier="reasoning",
        reasoning=True,
        context_window_tokens=200_000,
        max_output_tokens=100_000,
        price=_price(1.10, 0.275, 4.40),
        service_tier_prices={
            "flex": _flex(_price(1.10, 0.275, 4.40)),
            "priority": _price(2.00, 0.50, 8.00),
        },
    ),
    "o3": ModelSpec(
        tier="reasoning",
        reasoning=True,
        context_window_tokens=200_000,
        max_output_tokens=100_000,
        price=_price(2.00, 0.50, 8.00),
        service_tier_prices={
            "flex": _flex(_price(2.00, 0.50, 8.00)),
            "priority": _price(3.50, 0.875, 14.00),
        },
    ),
    "gpt-4.1-nano": _gpt_4_1("fast", _price(0.10, 0.025, 0.40), _price(0.20, 0.05, 0.80)),
    "gpt-4.1-mini": _gpt_4_1("fast", _price(0.40, 0.10, 1.60), _price(0.70, 0.175, 2.80)),
    "gpt-4.1": _gpt_4_1("standard", _price(2.00, 0.50, 8.00), _price(3.50, 0.875, 14.00)),
    "gpt-5-nano": _gpt_5(_price(0.05, 0.005, 0.40), None),
    "gpt-5-mini": _gpt_5(_price(0.25, 0.025, 2.00), _price(0.45, 0.045, 3.60)),
    "gpt-5": _gpt_5(_price(1.25, 0.125, 10.00), _price(2.50, 0.25, 20.00)),
}


def shipped_models() -> dict[str, ModelSpec]:
    return dict(SHIPPED_MODELS)


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A served model's facts with every default filled in: what the rules read."""

    name: str
    tier: str
    reasoning: bool
    context_window_tokens: int | None = None
    max_output_tokens: int | None = None
    # Empty: `reasoning_effort` is refused.
    reasoning_efforts: tuple[str, ...] = ()
    refused_parameters: tuple[str, ...] = ()
    default_only_parameters: Mapping[str, float] = field(default_factory=dict)
    price: ModelPrice | None = None
    service_tier_prices: Mapping[str, ModelPrice] = field(default_factory=dict)


def resolve(name: str, tier: str, tier_reasoning: bool, spec: ModelSpec | None) -> ModelInfo:
    """`spec` (None for a model only a tier's list names) with its kind's defaults filled in."""
    spec = spec or ModelSpec()
    reasoning = tier_reasoning if spec.reasoning is None else spec.reasoning
    if spec.reasoning_efforts is not None:
        efforts: tuple[str, ...] = tuple(spec.reasoning_efforts)
    elif reasoning:
        # An o-series model the catalog knows takes what the guide lists; an unknown one, any.
        efforts = O_SERIES_REASONING_EFFORTS if spec.reasoning else ANY_REASONING_EFFORT
    else:
        efforts = ()
    refused = spec.refused_parameters
    default_only = spec.default_only_parameters
    return ModelInfo(
        name=name,
        tier=tier,
        reasoning=reasoning,
        context_window_tokens=spec.context_window_tokens,
        max_output_tokens=spec.max_output_tokens,
        reasoning_efforts=efforts,
        refused_parameters=tuple(
            refused if refused is not None else (O_SERIES_REFUSED if reasoning else ())
        ),
        default_only_parameters=dict(
            default_only
            if default_only is not None
            else (O_SERIES_DEFAULT_ONLY if reasoning else {})
        ),
        price=spec.price,
        service_tier_prices=dict(spec.service_tier_prices),
    )
