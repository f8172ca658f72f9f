"""The models the simulator knows by name: their limits and the parameters they take.

The API refuses what a model cannot do (an output cap above its maximum, a reasoning effort
it does not offer) and reports the dated snapshot that answered; a client that routes by
model must meet those answers here first. A model not listed is still served, with the
defaults of its family (see `SimulatorConfig.is_reasoning_model`): the simulator must not
break a client that names a fine-tune or a model newer than this table.

Figures are the ones OpenAI's model pages give. Every listed model counts its prompt with the
o200k_base encoding.
"""

import re
from dataclasses import dataclass

O200K = "o200k_base"
# The efforts o-series models take, and the ones gpt-5 models take (`minimal` added).
O_SERIES_EFFORTS = ("low", "medium", "high")
GPT5_EFFORTS = ("minimal", "low", "medium", "high")
GPT5_CONTEXT, GPT5_OUTPUT = 400_000, 128_000
# A dated snapshot of an alias: `gpt-4o-2024-08-06` is served as `gpt-4o`.
_SNAPSHOT_SUFFIX = re.compile(r"-\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """What the API enforces for one model."""

    name: str
    snapshot: str  # what the answer's `model` field says
    context_window_tokens: int
    max_output_tokens: int
    reasoning_efforts: tuple[str, ...] = ()  # empty: not a reasoning model
    encoding: str = O200K
    flex: bool = False  # served at `service_tier="flex"` (the pricing page's flex models)

    @property
    def reasoning(self) -> bool:
        """Whether the model thinks before answering (and takes o-series parameters)."""
        return bool(self.reasoning_efforts)


def _chat(name: str, snapshot: str, context: int, output: int) -> ModelSpec:
    return ModelSpec(name, snapshot, context, output)


def _reasoning(
    name: str,
    snapshot: str,
    context: int,
    output: int,
    efforts: tuple[str, ...],
    *,
    flex: bool = False,
) -> ModelSpec:
    return ModelSpec(name, snapshot, context, output, efforts, flex=flex)


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _chat("gpt-4o", "gpt-4o-2024-08-06", 128_000, 16_384),
        _chat("gpt-4o-mini", "gpt-4o-mini-2024-07-18", 128_000, 16_384),
        _chat("gpt-4.1", "gpt-4.1-2025-04-14", 1_047_576, 32_768),
        _chat("gpt-4.1-mini", "gpt-4.1-mini-2025-04-14", 1_047_576, 32_768),
        _chat("gpt-4.1-nano", "gpt-4.1-nano-2025-04-14", 1_047_576, 32_768),
        _reasoning("o1", "o1-2024-12-17", 200_000, 100_000, O_SERIES_EFFORTS),
        _reasoning("o3-mini", "o3-mini-2025-01-31", 200_000, 100_000, O_SERIES_EFFORTS),
        _reasoning("o3", "o3-2025-04-16", 200_000, 100_000, O_SERIES_EFFORTS, flex=True),
        _reasoning("o4-mini", "o4-mini-2025-04-16", 200_000, 100_000, O_SERIES_EFFORTS, flex=True),
        _reasoning("gpt-5", "gpt-5-2025-08-07", GPT5_CONTEXT, GPT5_OUTPUT, GPT5_EFFORTS, flex=True),
        _reasoning(
            "gpt-5-mini",
            "gpt-5-mini-2025-08-07",
            GPT5_CONTEXT,
            GPT5_OUTPUT,
            GPT5_EFFORTS,
            flex=True,
        ),
        _reasoning(
            "gpt-5-nano",
            "gpt-5-nano-2025-08-07",
            GPT5_CONTEXT,
            GPT5_OUTPUT,
            GPT5_EFFORTS,
            flex=True,
        ),
    )
}


def spec_for(model: str) -> ModelSpec | None:
    """The spec of `model`, or of the alias whose dated snapshot it names; None if unknown."""
    spec = MODELS.get(model)
    if spec is None and _SNAPSHOT_SUFFIX.search(model):
        spec = MODELS.get(_SNAPSHOT_SUFFIX.sub("", model))
    return spec


def snapshot_for(model: str) -> str:
    """The model name an answer reports: the dated snapshot of a known alias."""
    spec = MODELS.get(model)
    return spec.snapshot if spec is not None else model


def listed_names() -> list[str]:
    """Every alias and snapshot `GET /v1/models` lists."""
    return sorted({name for spec in MODELS.values() for name in (spec.name, spec.snapshot)})
