"""Which requests fail, and how: `[sim]` directives first, then the random fail rates.

A directive's `times=N` is counted per exact request body (sha256 of its canonical JSON),
so a client retrying the same body fails N times and then succeeds, which is what retry
tests need. Random faults draw from one `random.Random` seeded by the server's seed, so a
benchmark run with a seed sees the same fault sequence every time.
"""

import hashlib
import json
from dataclasses import dataclass
from random import Random
from typing import Literal

from tierq_simulator import errors
from tierq_simulator.config import FAULT_KINDS, SimulatorConfig
from tierq_simulator.directives import Directives
from tierq_simulator.errors import ApiError
from tierq_simulator.ratelimit import format_duration, retry_after_headers

MAX_TRACKED_BODIES = 100_000  # bodies whose `times=` count is kept; oldest forgotten first


@dataclass(frozen=True, slots=True)
class Fault:
    """A fault to inject: an error answer, a hang past the client's timeout, a hang-up, or a
    stream that fails after `after` chunks."""

    kind: Literal["error", "timeout", "disconnect", "stream_cut", "stream_error"]
    label: str  # what the request records show: "500", "insufficient_quota", "timeout"...
    error: ApiError | None = None
    delay_seconds: float = 0.0
    after: int = 0  # chunks a stream sends before a stream fault


class FaultInjector:
    """Decides, per admitted request, whether and how it fails."""

    def __init__(self, seed: int | None) -> None:
        self._rng = Random(seed)
        self._seen: dict[bytes, int] = {}

    def reset(self) -> None:
        """Forget how often each body was seen."""
        self._seen.clear()

    def decide(
        self, body: object, directives: Directives, model: str, config: SimulatorConfig
    ) -> Fault | None:
        """The fault this request gets, if any."""
        if directives.wants_fault and self._still_failing(body, directives.times):
            return _fault(
                directives.fail,
                directives.code,
                directives.retry_after_seconds,
                directives.delay_seconds,
                model,
                config,
                after=directives.after or 0,
            )
        if config.fail_rates:
            draw, threshold = self._rng.random(), 0.0
            for kind in FAULT_KINDS:
                threshold += config.fail_rates.get(kind, 0.0)
                if draw < threshold:
                    return _fault(kind, None, None, None, model, config)
        return None

    def flex_unavailable(self, directives: Directives, config: SimulatorConfig) -> bool:
        """Whether a request served at flex meets no capacity: asked for by its directives,
        or drawn at `flex_unavailable_rate` (from the same seeded generator as the faults)."""
        if directives.flex_unavailable:
            return True
        rate = config.flex_unavailable_rate
        return rate > 0 and self._rng.random() < rate

    def _still_failing(self, body: object, times: int | None) -> bool:
        if times is None:
            return True
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        key = hashlib.sha256(canonical.encode()).digest()
        seen = self._seen.pop(key, 0) + 1
        self._seen[key] = seen  # re-inserted: most recently seen last
        if len(self._seen) > MAX_TRACKED_BODIES:
            del self._seen[next(iter(self._seen))]
        return seen <= times


def _fault(
    kind: str | None,
    code: str | None,
    retry_after_seconds: float | None,
    delay_seconds: float | None,
    model: str,
    config: SimulatorConfig,
    *,
    after: int = 0,
) -> Fault:
    if kind == "timeout":
        delay = config.timeout_fault_seconds if delay_seconds is None else delay_seconds
        return Fault("timeout", "timeout", delay_seconds=delay)
    if kind == "disconnect":
        return Fault("disconnect", "disconnect")
    if kind == "stream_cut":
        return Fault("stream_cut", "stream_cut", after=after)
    if kind == "stream_error":
        return Fault("stream_error", "stream_error", errors.stream_server_error(), after=after)
    status = int(kind) if kind is not None else errors.STATUS_BY_CODE.get(code or "", 400)
    error = errors.fault(
        status,
        code=code,
        model=model,
        context_window=config.context_window_for(model),
        wait=format_duration(20.0 if retry_after_seconds is None else retry_after_seconds),
    )
    if retry_after_seconds is not None:
        error.headers.update(retry_after_headers(retry_after_seconds))
    return Fault("error", code or str(status), error=error)
