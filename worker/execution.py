"""One attempt of a job: decode the message, record progress, call the API, record the outcome.

This is the domain side of the Celery task and imports no Celery, so its steps read in order
and its decisions (skip a finished job, which error ends a job) are testable without a broker.
The task wrapper (`worker.tasks`) turns `RetryableProviderError` into a Celery retry.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import openai
import structlog
from pydantic import ValidationError

from worker.admission import AdmissionGate
from worker.completions import call_chat_completions
from worker.contract import JobEnvelope
from worker.errors import InvalidJobError, ProviderError, RateLimitedError, RequestTooLargeError
from worker.jobstore import JobStore
from worker.results import JobError, JobResult, JobStatus
from worker.settings import Settings
from worker.tiers import api_params
from worker.validation import describe_validation_error

log = structlog.get_logger("tierq.worker")


def utcnow() -> datetime:
    return datetime.now(UTC)


class JobRunner:
    """Runs jobs of one tier in one worker process; shared by all of the pool's threads."""

    def __init__(
        self,
        settings: Settings,
        *,
        tier: str,
        client: openai.OpenAI,
        store: JobStore,
        gate: AdmissionGate,
    ) -> None:
        self.settings = settings
        self.tier = tier
        self.client = client
        self.store = store
        self.gate = gate

    @staticmethod
    def decode(message: Any) -> JobEnvelope:
        """The job in a queue message; a malformed (or hand-made) message is `InvalidJobError`."""
        try:
            return JobEnvelope.model_validate(message)
        except ValidationError as error:
            raise describe_validation_error(error, JobEnvelope) from None

    def run(self, message: Any, *, attempt: int, worker: str | None) -> JobResult:
        envelope = self.decode(message)
        request = envelope.request
        structlog.contextvars.bind_contextvars(model=request.model, tier=envelope.tier)
        tier = self.settings.tiers.get(envelope.tier)
        if tier is None:
            raise InvalidJobError(f"tier {envelope.tier!r} is not in this worker's tier table")
        # Wait for the shared RPM/TPM budget before the job counts as running.
        cost = self.gate.before_call(envelope)

        started_at = utcnow()
        running = self._record(envelope, JobStatus.RUNNING, attempt, worker, started_at=started_at)
        finished = self.store.start(running)
        if finished is not None:
            # A redelivered message of a job that already ended: its call is not made again.
            log.info("job.already_finished", status=finished.status.value)
            return finished
        log.debug("job.started", queued_ms=_ms(started_at - envelope.submitted_at))

        began = time.perf_counter()
        try:
            outcome = call_chat_completions(self.client, api_params(request, tier))
        except RateLimitedError as error:
            self.gate.after_rate_limited(request.model, cost, error)
            raise
        api_ms = (time.perf_counter() - began) * 1000
        completion = outcome.completion
        self.gate.after_answer(request.model, cost, outcome.headers, completion.usage)
        result = running.model_copy(
            update={
                "status": JobStatus.SUCCEEDED,
                "response": completion,
                "usage": completion.usage,
                "answered_by": completion.model,
                "finished_at": utcnow(),
            }
        )
        self.store.save(result)
        self._log_finished(result, api_ms=api_ms)
        return result

    def record_retry(
        self, message: Any, *, attempt: int, worker: str | None, error: ProviderError, wait: float
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
        self.store.save(record)
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
        self.store.save(record)
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
            metadata=envelope.request.metadata,
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
    if isinstance(error, RequestTooLargeError):
        return JobError(type="request_too_large", message=str(error), param=error.field)
    if isinstance(error, InvalidJobError):
        return JobError(type="invalid_request", message=str(error), retried=False)
    # A bug or an unforeseen fault: say so, without a traceback's worth of internals.
    return JobError(type="internal_error", message=type(error).__name__, retried=retried)


def _ms(delta: timedelta) -> float:
    return round(delta.total_seconds() * 1000, 1)
