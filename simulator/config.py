"""Settings of one simulator process.

One pydantic model so that the CLI, `create_app` and `PATCH /sim/config` validate values
the same way and a bad value fails loudly instead of skewing a benchmark silently.
"""

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tierq_simulator.catalog import spec_for

# Kinds of random fault `fail_rates` (and `--fail-rate`) may inject.
FAULT_KINDS = ("429", "500", "502", "503", "timeout", "disconnect")

# Context windows of models missing from `catalog.MODELS`, by family.
DEFAULT_CONTEXT_WINDOW_TOKENS = 128_000  # gpt-4o family
REASONING_CONTEXT_WINDOW_TOKENS = 200_000  # o-series

# Fields `PATCH /sim/config` may change while the server runs.
RUNTIME_FIELDS = frozenset(
    {
        "latency_ms",
        "chunk_delay_ms",
        "rpm",
        "tpm",
        "window_seconds",
        "fail_rates",
        "context_window",
        "prompt_cache_ttl_seconds",
        "flex_latency_factor",
        "flex_unavailable_rate",
        "batch_completion_seconds",
        "expire_next_batch_after_lines",
    }
)


class SimulatorConfig(BaseModel):
    """Everything that shapes how the simulator answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "127.0.0.1"  # interface to listen on
    port: int = Field(default=8711, ge=0, le=65535)  # 0 picks a free port
    latency_ms: float = Field(default=0.0, ge=0)  # delay before every answer
    chunk_delay_ms: float = Field(default=0.0, ge=0)  # delay between two chunks of a stream
    rpm: int = Field(default=0, ge=0)  # requests per minute per model; 0 = unlimited
    tpm: int = Field(default=0, ge=0)  # tokens per minute per model; 0 = unlimited
    window_seconds: float = Field(default=1.0, gt=0)  # burst allowed: limit x window / 60
    fail_rates: dict[str, float] = Field(default_factory=dict)  # fault kind -> probability
    seed: int | None = None  # makes generated text and random faults reproducible
    context_window: int | None = Field(default=None, gt=0)  # None: per-model default
    record_limit: int = Field(default=10_000, ge=0)  # requests kept for GET /sim/requests
    timeout_fault_seconds: float = Field(default=30.0, ge=0)  # how long a `timeout` hangs
    # How long a cached prompt prefix survives without use (the API: 5 to 10 minutes).
    prompt_cache_ttl_seconds: float = Field(default=300.0, ge=0)
    # Flex processing answers slower than the default tier: its latency is this many times
    # the default's; and a share of flex requests meets no capacity (429, nothing billed).
    flex_latency_factor: float = Field(default=2.0, ge=1.0)
    flex_unavailable_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # A provider batch completes this long after it was created (the API: within 24 h).
    batch_completion_seconds: float = Field(default=5.0, ge=0)
    # Set: the next batch to complete ends `expired` after answering this many of its lines
    # (then it is unset again), as a batch that outruns its window does.
    expire_next_batch_after_lines: int | None = Field(default=None, ge=0)
    # Reasoning models beyond `catalog.MODELS`: by name, and by prefix (o3-pro, o1-preview...).
    reasoning_models: tuple[str, ...] = ("o1-mini",)
    reasoning_model_prefixes: tuple[str, ...] = ("o1", "o3", "o4")

    @model_validator(mode="after")
    def _check_fail_rates(self) -> Self:
        for kind, probability in self.fail_rates.items():
            if kind not in FAULT_KINDS:
                raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
            if not 0.0 <= probability <= 1.0:
                raise ValueError(f"fail rate for {kind} must be within [0, 1]")
        if sum(self.fail_rates.values()) > 1.0 + 1e-9:
            raise ValueError("fail rates must add up to at most 1")
        return self

    def is_reasoning_model(self, model: str) -> bool:
        """Whether `model` thinks before answering (and takes o-series parameters)."""
        spec = spec_for(model)
        if spec is not None:
            return spec.reasoning
        return model in self.reasoning_models or model.startswith(self.reasoning_model_prefixes)

    def context_window_for(self, model: str) -> int:
        """The context window, in tokens, enforced for `model`."""
        if self.context_window is not None:
            return self.context_window
        spec = spec_for(model)
        if spec is not None:
            return spec.context_window_tokens
        if self.is_reasoning_model(model):
            return REASONING_CONTEXT_WINDOW_TOKENS
        return DEFAULT_CONTEXT_WINDOW_TOKENS


def describe(error: ValidationError) -> str:
    """A one-line account of what is wrong with a config, for CLI and HTTP answers."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or 'config'}: {e['msg']}" for e in error.errors()
    )
