"""Which tier serves a job, and the rules a tier's models impose on it.

Reasoning models (the o-series, and any model an operator puts in a tier with `reasoning: true`)
take a different parameter set: no sampling knobs, `max_completion_tokens` (which counts
reasoning tokens) instead of `max_tokens`, and `reasoning_effort`, which other models refuse.
Both the producer (before enqueueing) and the worker (building the API call) use this module,
so the rules are written once.
"""

from __future__ import annotations

from typing import Any

from tierq.core.contract import JobRequest
from tierq.core.errors import InvalidJobError, UnknownModelError
from tierq.core.settings import Settings, TierSettings

# Refused by reasoning models; the API answers "Unsupported parameter" for each.
NOT_FOR_REASONING_MODELS = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "logprobs",
    "top_logprobs",
)
# Accepted by reasoning models only.
ONLY_FOR_REASONING_MODELS = ("reasoning_effort",)


def route(request: JobRequest, settings: Settings) -> str:
    """The tier for `request`, after checking the tier's model rules; raises `InvalidJobError`."""
    tier_name = settings.tier_of(request.model)
    if tier_name is None:
        raise UnknownModelError(request.model, settings.known_models())
    check_model_rules(request, settings.tiers[tier_name])
    return tier_name


def check_model_rules(request: JobRequest, tier: TierSettings) -> None:
    """Refuse parameters the job's model does not take, naming each one."""
    given = request.model_fields_set
    if tier.reasoning:
        refused = [name for name in NOT_FOR_REASONING_MODELS if name in given]
        reason = f"{request.model} is a reasoning model, which does not support it"
    else:
        refused = [name for name in ONLY_FOR_REASONING_MODELS if name in given]
        reason = f"{request.model} is not a reasoning model; only reasoning models support it"
    if refused:
        raise InvalidJobError(
            "invalid job request: "
            + "; ".join(f"{name}: unsupported parameter ({reason})" for name in refused),
            [{"field": name, "message": f"unsupported parameter: {reason}"} for name in refused],
        )


def api_params(request: JobRequest, tier: TierSettings) -> dict[str, Any]:
    """The keyword arguments for `chat.completions.create`, translated for the tier's models."""
    params = request.api_fields()
    if tier.reasoning and "max_tokens" in params:
        # Reasoning models take only max_completion_tokens, which also bounds reasoning tokens.
        max_tokens = params.pop("max_tokens")
        if max_tokens is not None:
            params["max_completion_tokens"] = max_tokens
    if params.get("stream"):
        # The usage of a streamed call arrives only when asked for, in a last chunk.
        params["stream_options"] = {**(params.get("stream_options") or {}), "include_usage": True}
    return params
