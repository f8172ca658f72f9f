"""One attempt of a job: decode the message, record progress, call the API, record the outcome.

This is the domain side of the Celery task and imports no Celery, so its steps read in order
and its decisions (skip a finished job, which error ends a job) are testable without a broker.
The task wrapper (`worker.tasks`) turns `RetryableProviderError` into a Celery retry.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import structlog
from pydantic import ValidationError

from tierq.core.catalog import ModelInfo
from tierq.core.contract import JobEnvelope
from tierq.core.errors import (
    AdmissionDeferred,
    BrokerUnavailableError,
    InvalidJobError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitedError,
    RequestTooLargeError,
)
from tierq.core.jobstore import JobStore
from tierq.core.pricing import cost_usd
from tierq.core.results import JobError, JobResult, JobStatus
from tierq.core.settings import Settings
from tierq.core.spend import DEFAULT, FLEX, RATE_LIMIT_CODE, service_tier_for
from tierq.core.tiers import api_params, check_model_rules
from tierq.core.validation import describe_validation_error
from tierq.worker import metrics
from tierq.worker.admission import AdmissionGate
from tierq.worker.completions import CallOutcome
from tierq.worker.deltas import DeltaStreams
from tierq.worker.recovery import Leases

log = structlog.get_logger("tierq.worker")
# The token of the attempt this thread is running, for the retry and failure hooks Celery
# calls after the task body (in the same thread).
_attempt_token: ContextVar[str | None] = ContextVar("tierq_attempt_token", default=None)


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobRunner:
    """Runs jobs of one tier in one worker process; shared by all of the pool's threads.

    `call` is `call_chat_completions` with the process's client bound: called as
    `call(params)`, and as `call(params, on_chunk=...)` for a streamed job (hence its loose
    type: worker/cli.py declares it with the one-argument shape). `deltas` publishes streamed
    jobs' deltas; by default a client of its own from `settings`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        tier: str,
        call: Callable[..., CallOutcome],
        store: JobStore,
        gate: AdmissionGate,
        leases: Leases,
        deltas: DeltaStreams | None = None,
    ) -> None:
        self.settings = settings
        self.tier = tier
        self.call = call
        self.store = store
        self.gate = gate
        self.leases = leases
        # The tier's flex settings, worked out once, not at each call.
        self._tier_flex = settings.tiers[tier].flex
        self._flex_timeout = settings.flex_timeout_for(tier)
        self.deltas = deltas or DeltaStreams.from_settings(settings)

    @staticmethod
    def decode(message: Any) -> JobEnvelope:
        """The job in a queue message; a malformed (or hand-made) message is `InvalidJobError`."""
        try:
            return JobEnvelope.model_validate(message)
        except ValidationError as error:
            raise describe_validation_error(error, JobEnvelope) from None

    def run(self, message: Any, *, attempt: int, worker: str | None) -> JobResult | None:
        """One attempt; None when the job was left to the attempt that holds it, or was
        cancelled before its call."""
        _attempt_token.set(None)
        envelope = self.decode(message)
        request = envelope.request
        structlog.contextvars.bind_contextvars(model=request.model, tier=envelope.tier)
        tier = self._check_tier(envelope)

        token = uuid.uuid4().hex
        started_at = utcnow()
        running = self._record(envelope, JobStatus.RUNNING, attempt, worker, started_at=started_at)
        kept = json.dumps(message, separators=(",", ":"))
        claim = self.store.claim(
            running, token, self.leases.lease_seconds, kept, envelope.generation
        )
        if claim.finished is not None:
            # A redelivered message of a job that already ended: its call is not made again.
            log.info("job.already_finished", status=claim.finished.status.value)
            return claim.finished
        if claim.stale:
            # A late copy of a message that a retry or a re-queue has superseded.
            log.info("job.stale_message", generation=envelope.generation)
            return None
        if not claim.claimed:
            # Another delivery of this job is running (Redis restores unacked messages when a
            # connection drops). Look again once its lease would have lapsed: if its worker
            # died meanwhile, this delivery takes over; nothing is lost, nothing paid twice.
            log.info("job.duplicate_delivery", lease_left_seconds=round(claim.busy_for_seconds, 3))
            raise AdmissionDeferred(claim.busy_for_seconds + 1.0)
        _attempt_token.set(token)
        if attempt > self.settings.retry.max_attempts:
            # Re-queued after its worker was lost, with no attempt left: a job that kills its
            # worker (out of memory, say) must not be run for ever.
            raise ProviderUnavailableError(
                f"the job's {self.settings.retry.max_attempts} attempts ran out "
                "(a worker running it was lost)",
                kind="worker_lost",
            )
        self.leases.hold(envelope.job_id, token)
        try:
            return self._attempt(envelope, tier, running, token)
        finally:
            self.leases.release(envelope.job_id)

    def _attempt(
        self, envelope: JobEnvelope, tier: ModelInfo, running: JobResult, token: str
    ) -> JobResult | None:
        request = envelope.request
        try:
            # Wait for the shared RPM/TPM budget (the claim is held, so a crash here loses
            # nothing: the reaper re-queues the job when its lease lapses).
            admitted = self.gate.before_call(envelope)
        except AdmissionDeferred as deferred:
            # The wait is long: hand the job back, queued, and on watch until it is due.
            queued = running.model_copy(update={"status": JobStatus.QUEUED, "started_at": None})
            self.store.settle(
                queued, token, due_in_seconds=deferred.wait_seconds + self.leases.lease_seconds
            )
            raise
        cost = admitted.cost
        if admitted.waited_seconds > 0 and self._cancelled(envelope.job_id):
            # Cancelled while it waited for the rate limit: the call is not made.
            self.gate.release(request.model, cost)
            log.info("job.cancelled_before_call", waited_seconds=round(admitted.waited_seconds, 3))
            return None
        log.debug("job.started", queued_ms=_ms(utcnow() - envelope.submitted_at))

        labels = (envelope.tier, request.model)
        metrics.ATTEMPTS.labels(*labels).inc()
        began = time.perf_counter()
        try:
            outcome, chosen = self._call(envelope, running.attempts, tier)
        except ProviderError as error:
            metrics.API_LATENCY.labels(*labels, error.kind).observe(time.perf_counter() - began)
            if error.status_code == 429:  # rate limits and insufficient_quota alike
                metrics.RATE_LIMITED.labels(*labels).inc()
            if isinstance(error, RateLimitedError):
                self.gate.after_rate_limited(request.model, cost, error)
            raise
        api_seconds = time.perf_counter() - began
        metrics.API_LATENCY.labels(*labels, "ok").observe(api_seconds)
        completion = outcome.completion
        price = self.settings.price_of(request.model, completion.service_tier)
        at_default = self.settings.price_of(request.model)
        result = running.model_copy(
            update={
                "status": JobStatus.SUCCEEDED,
                "response": completion,
                "usage": completion.usage,
                "answered_by": completion.model,
                "finished_at": utcnow(),
                "service_tier_chosen": chosen,
                "cost_usd": cost_usd(completion.usage, price)
                if completion.usage is not None and price is not None
                else None,
                "cost_at_default_usd": cost_usd(completion.usage, at_default)
                if completion.usage is not None and at_default is not None and at_default != price
                else None,
            }
        )
        # The answer is paid for: from here on nothing may fail the job.
        metrics.observe_bill(result)
        if self._settle_paid_answer(result, token):
            metrics.observe_outcome(result)
            self._log_finished(result, api_ms=api_seconds * 1000)
        else:
            log.info("job.result_discarded", reason="cancelled, or taken over by another attempt")
        try:
            self.gate.after_answer(request.model, cost, outcome.headers, completion.usage)
        except redis.RedisError as error:
            log.warning("ratelimit.feedback_lost", error=str(error))
        return result

    def _call(
        self, envelope: JobEnvelope, attempt: int, tier: ModelInfo
    ) -> tuple[CallOutcome, str | None]:
        """The API call, at the service level the job's deadline allows (tierq/core/spend.py),
        and that level (None: the request went as the caller wrote it).

        A flex call the provider turns away for want of capacity (a 429 that is not a rate
        limit: nothing was billed) is made again at once at the default tier, in the same
        attempt: waiting for flex to come back could cost the deadline, and a retry would
        pause the shared limiter for a limit no one hit.
        """
        params = api_params(envelope.request, tier)
        spend = self.settings.spend
        chosen = service_tier_for(
            params,
            tier,
            envelope.deadline,
            utcnow(),
            spend,
            tenant=envelope.tenant,
            tier_allows_flex=self._tier_flex,
        )
        if chosen is None:
            return self._send(envelope, attempt, params), None
        timeout = self._flex_timeout if chosen == FLEX else None
        try:
            return self._send(
                envelope, attempt, {**params, "service_tier": chosen}, timeout
            ), chosen
        except RateLimitedError as refused:
            if chosen != FLEX or refused.code == RATE_LIMIT_CODE:
                raise
            log.info("job.flex_unavailable", code=refused.code, falling_back_to="default")
            metrics.FLEX_FALLBACKS.labels(envelope.tier, envelope.request.model).inc()
        return self._send(envelope, attempt, {**params, "service_tier": DEFAULT}), DEFAULT

    def _send(
        self,
        envelope: JobEnvelope,
        attempt: int,
        params: dict[str, Any],
        timeout_seconds: float | None = None,
    ) -> CallOutcome:
        """One API call; a streamed job's deltas are published as they arrive.

        Only streamed jobs get a publisher, so the others pay nothing for it. Its last write
        comes before the outcome is recorded, so a watcher that sees the job finished has
        every delta there is to read.
        """
        timeout = {} if timeout_seconds is None else {"timeout_seconds": timeout_seconds}
        if not envelope.request.stream:
            return self.call(params, **timeout)
        publisher = self.deltas.publisher(envelope.job_id, attempt)
        try:
            return self.call(params, on_chunk=publisher.publish, **timeout)
        finally:
            publisher.flush()

    def _cancelled(self, job_id: str) -> bool:
        """Whether the job was cancelled meanwhile. Asked only after a wait for the rate limit,
        so a job that did not wait pays no extra round trip. A Redis fault counts as "no": the
        call goes ahead, and its answer is discarded at settle if the job was cancelled."""
        try:
            return self.store.status(job_id) is JobStatus.CANCELLED
        except redis.RedisError as error:
            log.warning("job.cancel_check_failed", error=str(error))
            return False

    def _settle_paid_answer(self, result: JobResult, token: str) -> bool:
        """Record a paid answer, waiting out a Redis outage rather than failing the job.

        The lease is held meanwhile (its renewal resumes with Redis, and reapers hold off for a
        lease after an outage), so the job is not run again elsewhere.
        """
        give_up_at = time.monotonic() + self.settings.visibility_timeout_seconds
        pause = 0.5
        while True:
            try:
                return self.store.settle(result, token)
            except redis.RedisError as error:
                if time.monotonic() > give_up_at:
                    raise
                log.warning("job.settle_waiting_for_redis", error=str(error))
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def _check_tier(self, envelope: JobEnvelope) -> ModelInfo:
        """The worker checks the producer's routing again: a hand-made message is not trusted."""
        tier = self.settings.tiers.get(envelope.tier)
        if tier is None or envelope.tier != self.tier:
            raise InvalidJobError(
                f"job for tier {envelope.tier!r} reached a worker of tier {self.tier!r}"
            )
        if self.settings.tier_of(envelope.request.model) != envelope.tier:
            raise InvalidJobError(
                f"model {envelope.request.model!r} is not served by tier {envelope.tier!r}"
            )
        info = self.settings.model_info(envelope.request.model)
        check_model_rules(envelope.request, info)
        return info

    def record_retry(
        self,
        message: Any,
        *,
        attempt: int,
        worker: str | None,
        error: ProviderError,
        wait: float,
        generation: int,
    ) -> None:
        """The attempt failed transiently; the job waits `wait` seconds for its next one."""
        envelope = self.decode(message)
        retry_at = datetime.fromtimestamp(time.time() + wait, UTC)
        record = self._record(
            envelope,
            JobStatus.RETRYING,
            attempt,
            worker,
            error=_job_error(error, retried=True),
            retry_at=retry_at,
        )
        # The retry is due after `wait`; if no worker has taken it a lease later, it is reaped.
        if self.store.settle(
            record,
            _attempt_token.get(),
            due_in_seconds=wait + self.leases.lease_seconds,
            generation=generation,
        ):
            metrics.RETRIES.labels(envelope.tier, envelope.request.model, error.kind).inc()
        log.warning(
            "job.retrying",
            attempt=attempt,
            error_type=error.kind,
            status_code=error.status_code,
            wait_seconds=round(wait, 3),
        )

    def record_failure(
        self, message: Any, *, attempt: int, worker: str | None, error: BaseException
    ) -> None:
        """The job ended without an answer: a permanent error, or its attempts ran out."""
        try:
            envelope = self.decode(message)
        except InvalidJobError as poison:
            # Nothing to record against: no trustworthy job id, tier or model.
            log.error("job.rejected_message", reason=str(poison))
            return
        job_error = _job_error(error, retried=isinstance(error, ProviderError) and error.retryable)
        record = self._record(
            envelope, JobStatus.FAILED, attempt, worker, error=job_error, finished_at=utcnow()
        )
        # Dead letters: jobs that failed for want of attempts or of a broker, not for what
        # they asked; `tierq retry` can run them again.
        dead = job_error.retried or job_error.type in ("broker_unavailable", "internal_error")
        if self.store.settle(record, _attempt_token.get(), dead_letter=dead):
            metrics.observe_outcome(record)
        log.error(
            "job.finished",
            status="failed",
            attempts=attempt,
            error_type=job_error.type,
            status_code=job_error.status_code,
            error_code=job_error.code,
            latency_ms=_ms(record.finished_at - envelope.submitted_at)
            if record.finished_at
            else None,
        )

    def _record(
        self,
        envelope: JobEnvelope,
        status: JobStatus,
        attempt: int,
        worker: str | None,
        **fields: Any,
    ) -> JobResult:
        return JobResult(
            job_id=envelope.job_id,
            status=status,
            tier=envelope.tier,
            model=envelope.request.model,
            attempts=attempt,
            submitted_at=envelope.submitted_at,
            labels=envelope.labels,
            tenant=envelope.tenant,
            deadline=envelope.deadline,
            context_dropped_messages=envelope.context_dropped_messages,
            context_dropped_tokens=envelope.context_dropped_tokens,
            worker=worker,
            **fields,
        )

    def _log_finished(self, result: JobResult, *, api_ms: float) -> None:
        usage = result.usage
        response = result.response
        fields: dict[str, Any] = {
            "status": result.status.value,
            "attempts": result.attempts,
            "answered_by": result.answered_by,
            "api_ms": round(api_ms, 1),
            "latency_ms": _ms(result.finished_at - result.submitted_at)
            if result.finished_at
            else None,
            "finish_reasons": [choice.finish_reason for choice in response.choices]
            if response
            else None,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "reasoning_tokens": usage.reasoning_tokens if usage else None,
            "cached_tokens": usage.cached_tokens if usage else None,
        }
        if self.settings.log_content and response:
            # Operators opt in to content in logs (TIERQ_LOG_CONTENT); off by default.
            fields["completion"] = [choice.message.content for choice in response.choices]
        log.info("job.finished", **fields)


def _job_error(error: BaseException, *, retried: bool) -> JobError:
    if isinstance(error, ProviderError):
        return JobError(retried=retried, **error.to_dict())
    if isinstance(error, BrokerUnavailableError):
        return JobError(type="broker_unavailable", message=str(error), retried=retried)
    if isinstance(error, RequestTooLargeError):
        return JobError(type="request_too_large", message=str(error), param=error.field)
    if isinstance(error, InvalidJobError):
        return JobError(type="invalid_request", message=str(error), retried=False)
    # A bug or an unforeseen fault: say so, without a traceback's worth of internals.
    return JobError(type="internal_error", message=type(error).__name__, retried=retried)


def _ms(delta: timedelta) -> float:
    return round(delta.total_seconds() * 1000, 1)
