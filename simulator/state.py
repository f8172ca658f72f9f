"""The mutable state of one running simulator, shared by its endpoints.

Kept apart from the endpoints so that a run-time reconfiguration (`PATCH /sim/config`)
swaps the config and the limiter in one place, and a reset clears everything in one place.
"""

from typing import Any

from tierq_simulator.caching import PromptCache
from tierq_simulator.config import RUNTIME_FIELDS, SimulatorConfig
from tierq_simulator.faults import FaultInjector
from tierq_simulator.ratelimit import RateLimiter
from tierq_simulator.recorder import Recorder


class SimulatorState:
    """Config, limiter, prompt cache, fault injector and recorder of one simulator."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.limiter = RateLimiter(config.rpm, config.tpm, config.window_seconds)
        self.faults = FaultInjector(config.seed)
        self.recorder = Recorder(config.record_limit)
        self.prompt_cache = PromptCache(config.prompt_cache_ttl_seconds)

    def reconfigure(self, changes: dict[str, Any]) -> SimulatorConfig:
        """Apply run-time changes; raise `ValueError` for fields that cannot change live.

        Pydantic's `ValidationError` (a `ValueError`) propagates for bad values, and the
        old config stays in force.
        """
        unknown = set(changes) - RUNTIME_FIELDS
        if unknown:
            raise ValueError(
                f"cannot change {sorted(unknown)} at run time; changeable: {sorted(RUNTIME_FIELDS)}"
            )
        config = SimulatorConfig.model_validate({**self.config.model_dump(), **changes})
        limits_changed = (config.rpm, config.tpm, config.window_seconds) != (
            self.config.rpm,
            self.config.tpm,
            self.config.window_seconds,
        )
        self.config = config
        self.prompt_cache.ttl_seconds = config.prompt_cache_ttl_seconds
        if limits_changed:
            self.limiter = RateLimiter(config.rpm, config.tpm, config.window_seconds)
        return config

    def reset(self) -> None:
        """Forget records, counters, `times=` counts, rate-limit usage and cached prompts."""
        self.recorder.clear_records()
        self.recorder.reset_stats()
        self.faults.reset()
        self.prompt_cache.clear()
        self.limiter = RateLimiter(self.config.rpm, self.config.tpm, self.config.window_seconds)
