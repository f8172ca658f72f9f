"""Which tier serves a job, and the rules its model's catalog entry imposes on it.

Reasoning models (the o-series, and models of a tier with `reasoning: true` that the catalog
does not describe) take a different parameter set: sampling knobs only at their defaults,
no `stop`, `max_completion_tokens` (which counts reasoning tokens) instead of `max_tokens`,
and `reasoning_effort` at the values the model accepts, which other models refuse. Every
model's output cap is bounded by its maximum output. The facts come from the model catalog
(`tierq.core.catalog`, read through `Settings.model_info`); the producer (before enqueueing)
and the worker (building the API call) both apply them here, so the rules are written once.
"""

from __future__ import annotations

from typing import Any

from tierq.core.catalog import ModelInfo
from tierq.core.contract import JobRequest
from tierq.core.errors import InvalidJobError
from tierq.core.settings import Settings

OUTPUT_CAPS = ("max_tokens", "max_completion_tokens")


def route(request: JobRequest, settings: Settings) -> str:
    """The tier for `request`, after checking its model's rules; raises `InvalidJobError`
    (`UnknownModelError` when no tier serves the model)."""
    info = settings.model_info(request.model)
    check_model_rules(request, info)
    return info.tier


def model_rule_problems(request: JobRequest, info: ModelInfo) -> list[tuple[str, str]]:
    """(field, rule) for each parameter the model does not take, in a stable order."""
    given = request.model_fields_set
    values = request.model_dump(include=given)
    problems: list[tuple[str, str]] = []
    kind = "a reasoning model" if info.reasoning else "not a reasoning model"
    for name, default in info.default_only_parameters.items():
        # null is the API's "not set": the default applies.
        if name in given and values[name] is not None and values[name] != default:
            problems.append(
                (
                    name,
                    f"unsupported value {values[name]!r}: {info.name} is {kind}; only the "
                    f"default ({default:g}) value is supported",
                )
            )
    why = f"{info.name} is a reasoning model, which" if info.reasoning else info.name
    for name in info.refused_parameters:
        if name in given:
            problems.append((name, f"unsupported parameter ({why} does not support it)"))
    effort = values.get("reasoning_effort")
    if effort is not None and effort not in info.reasoning_efforts:
        if info.reasoning_efforts:
            accepted = ", ".join(info.reasoning_efforts)
            rule = f"unsupported value {effort!r}: {info.name} accepts {accepted}"
        else:
            rule = (
                f"unsupported parameter ({info.name} is {kind}; only reasoning models support it)"
            )
        problems.append(("reasoning_effort", rule))
    for name in OUTPUT_CAPS:
        cap = values.get(name)
        if cap is not None and info.max_output_tokens is not None and cap > info.max_output_tokens:
            problems.append(
                (
                    name,
                    f"{cap} is over {info.name}'s maximum output of "
                    f"{info.max_output_tokens} tokens",
                )
            )
    return problems


def check_model_rules(request: JobRequest, info: ModelInfo) -> None:
    """Refuse parameters the job's model does not take, naming each one and its rule."""
    problems = model_rule_problems(request, info)
    if problems:
        raise InvalidJobError(
            "invalid job request: " + "; ".join(f"{name}: {rule}" for name, rule in problems),
            [{"field": name, "message": rule} for name, rule in problems],
        )


def api_params(request: JobRequest, info: ModelInfo) -> dict[str, Any]:
    """The keyword arguments for `chat.completions.create`, translated for the model."""
    params = request.api_fields()
    if info.reasoning and "max_tokens" in params:
        # Reasoning models take only max_completion_tokens, which also bounds reasoning tokens.
        max_tokens = params.pop("max_tokens")
        if max_tokens is not None:
            params["max_completion_tokens"] = max_tokens
    if params.get("stream"):
        # The usage of a streamed call arrives only when asked for, in a last chunk.
        params["stream_options"] = {**(params.get("stream_options") or {}), "include_usage": True}
    return params
