"""Between a job and its API call: wait for the shared budget, then teach it what the API said.

`before_call` reserves the job's start in its model's RPM/TPM budget. A start within
`max_wait_in_slot_seconds` is waited for in the worker's slot (a thread sleeping costs nothing,
and the queue behind it keeps the jobs that cannot start yet); a later one raises
`AdmissionDeferred` so the task re-queues the job with a countdown and frees the slot.
`after_answer` corrects the spent tokens with the real usage and applies the API's headers;
`after_rate_limited` pauses the whole group for every worker, so one 429 does not become N.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import redis
import structlog

from tierq.core.budget import JobCost, check_fits, job_cost, too_large_for_tpm
from tierq.core.contract import JobEnvelope
from tierq.core.errors import AdmissionDeferred, RateLimitedError
from tierq.core.ratelimit import SharedRateLimiter
from tierq.core.ratelimit_headers import RateLimitHeaders
from tierq.core.results import Usage
from tierq.core.settings import Settings
from tierq.worker.metrics import LIMITER_WAIT

log = structlog.get_logger("tierq.worker")

# How long to hold a group after a 429 that says nothing of when to come back.
DEFAULT_PAUSE_AFTER_429_SECONDS = 1.0
# Slots one call may take in a row, each replaced because a pause came while it waited; then
# the job goes back to the queue instead.
MAX_RESERVATIONS = 3


@dataclass(frozen=True, slots=True)
class Admitted:
    """A job may call now: what it reserved, and how long it waited in its slot for that."""

    cost: JobCost
    waited_seconds: float = 0.0


class AdmissionGate:
    """One per worker process; `limiter` None means only Celery's per-process cap applies."""

    def __init__(self, settings: Settings, limiter: SharedRateLimiter | None) -> None:
        self.settings = settings
        self.limiter = limiter

    def before_call(self, envelope: JobEnvelope) -> Admitted:
        """Block until the job may call the API; raises `AdmissionDeferred` for long waits."""
        request = envelope.request
        cost = job_cost(request, self.settings, envelope.estimated_prompt_tokens)
        check_fits(request, cost, self.settings)
        if self.limiter is None:
            return Admitted(cost)
        group = self.settings.limit_group_for(request.model)
        waited = 0.0
        for _ in range(MAX_RESERVATIONS):
            admission = self.limiter.acquire(group, cost.total)
            if admission.too_large:
                raise too_large_for_tpm(request, cost, admission.tpm, group)
            if not admission.reserved:
                log.info("job.deferred", wait_seconds=round(admission.wait_seconds, 3), group=group)
                raise AdmissionDeferred(admission.wait_seconds)
            if admission.wait_seconds <= 0:
                break
            time.sleep(admission.wait_seconds)
            waited += admission.wait_seconds
            # A 429 that came back while this call slept paused the group: its slot, reserved
            # before the pause, would go out into the API's empty budget (and every refused
            # call counts against the limit), so it takes a new one after the pause.
            if self.limiter.paused_for(group) <= 0:
                break
            log.info("job.slot_replaced_after_pause", group=group)
        else:
            raise AdmissionDeferred(self.settings.limiter.max_wait_in_slot_seconds)
        LIMITER_WAIT.labels(envelope.tier, group).observe(waited)
        return Admitted(cost, waited)

    def release(self, model: str, cost: JobCost) -> None:
        """Give back the tokens of an admitted call that was not made (its job was cancelled).

        The request it reserved stays counted: the RPM budget has no way back, and a spent
        slot only keeps the fleet a little further under the limit for a moment.
        """
        if self.limiter is None:
            return
        try:
            self.limiter.adjust(self.settings.limit_group_for(model), -cost.total)
        except redis.RedisError as error:
            # The tokens stay spent a little longer: the job is cancelled all the same.
            log.warning("ratelimit.release_lost", error=str(error))

    def after_answer(
        self, model: str, cost: JobCost, headers: Mapping[str, str], usage: Usage | None
    ) -> None:
        if self.limiter is None:
            return
        group = self.settings.limit_group_for(model)
        if usage is not None:
            self.limiter.adjust(
                group, cost.correction(usage.prompt_tokens, usage.completion_tokens)
            )
        self._apply_headers(group, RateLimitHeaders.parse(headers), cost)

    def after_rate_limited(self, model: str, cost: JobCost, error: RateLimitedError) -> None:
        if self.limiter is None:
            return
        group = self.settings.limit_group_for(model)
        parsed = RateLimitHeaders.parse(error.headers)
        self.limiter.learn(group, parsed)
        wait = error.retry_after_seconds
        if wait is None:
            wait = parsed.exhausted_for_seconds(cost.total) or DEFAULT_PAUSE_AFTER_429_SECONDS
        paused = self.limiter.pause(group, wait)
        log.warning("ratelimit.paused", group=group, seconds=round(paused, 3), reason="429")

    def _apply_headers(self, group: str, headers: RateLimitHeaders, cost: JobCost) -> None:
        assert self.limiter is not None
        self.limiter.learn(group, headers)
        # The API may count calls this fleet did not make (another app on the same key).
        spent_for = headers.exhausted_for_seconds(cost.total)
        if spent_for > 0:
            self.limiter.pause(group, spent_for)
            log.info("ratelimit.paused", group=group, seconds=round(spent_for, 3), reason="headers")
