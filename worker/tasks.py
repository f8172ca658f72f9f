"""The Celery task: a thin wrapper that hands the message to `JobRunner` and maps its errors.

Retrying is Celery's own machinery: `autoretry_for` on `RetryableProviderError`, exponential
back-off with full jitter capped at `backoff_max_seconds`, and `max_retries` from the attempt
budget. The one addition is `retry()` raising the countdown to the server's `retry-after`, which
Celery's back-off does not know about. Permanent errors are declared in `throws`, so Celery logs
them as expected outcomes (one line, no traceback) and the job is recorded as failed at once.

Tasks are registered by `register_tasks()` when a worker starts, not at import, because their
retry options come from settings.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from celery import Celery, Task
from celery.exceptions import Reject, Retry

from tierq.core.celery_app import TASK_NAME, job_reprs
from tierq.core.errors import (
    AdmissionDeferred,
    BrokerUnavailableError,
    InvalidJobError,
    PermanentProviderError,
    RetryableProviderError,
)
from tierq.worker.execution import JobRunner

log = structlog.get_logger("tierq.worker")


class CompletionTask(Task):  # type: ignore[type-arg]
    """Base class carrying the process's `JobRunner` and the status-recording hooks."""

    runner: JobRunner
    retry_after_max_seconds: float
    max_defer_seconds: float

    def apply_async(self, *args: Any, **options: Any) -> Any:
        """Every publish from a worker (Celery's `retry()`, `defer()`) names the job in the
        headers and events instead of Celery's repr of the envelope (`job_reprs`)."""
        # Celery's own calls pass the id by keyword; (args, kwargs, task_id) is the positional
        # order.
        task_id = options.get("task_id", args[2] if len(args) > 2 else None)
        options.update(job_reprs(task_id))
        return super().apply_async(*args, **options)

    def retry(
        self,
        args: Any = None,
        kwargs: Any = None,
        exc: Exception | None = None,
        throw: bool = True,
        eta: Any = None,
        countdown: float | None = None,
        max_retries: int | None = None,
        **options: Any,
    ) -> Any:
        if isinstance(exc, RetryableProviderError) and exc.retry_after_seconds is not None:
            asked = min(exc.retry_after_seconds, self.retry_after_max_seconds)
            countdown = max(countdown or 0.0, asked)
        message = (self.request.args or [None])[0]
        attempt = self.request.retries + 1
        # The retry's message supersedes this one: a late copy of this one will not run.
        generation = next_generation(message)
        if args is None and isinstance(message, dict):
            args = [{**message, "generation": generation}]
        try:
            return super().retry(
                args=args,
                kwargs=kwargs,
                exc=exc,
                throw=throw,
                eta=eta,
                countdown=countdown,
                max_retries=max_retries,
                **options,
            )
        except Retry:
            # Published: the job now waits for its next attempt (recorded after the publish,
            # so a record never says "retrying" for a retry that was not queued).
            if isinstance(exc, RetryableProviderError):
                self.runner.record_retry(
                    message,
                    attempt=attempt,
                    worker=self.request.hostname,
                    error=exc,
                    wait=countdown or 0.0,
                    generation=generation,
                )
            raise
        except Reject as rejected:
            # Celery could not publish the retry (the broker stayed away through the publish
            # retry policy) and drops the message: the job ends here, failed, and says why.
            error = BrokerUnavailableError(f"the retry could not be queued: {rejected}")
            self.runner.record_failure(
                message, attempt=attempt, worker=self.request.hostname, error=error
            )
            raise

    def defer(self, countdown: float) -> Retry:
        """Put the job back on its queue to start after `countdown` s, keeping its attempt count.

        Celery's `retry()` would count this as an attempt; waiting for the rate limit is not
        one. The message is re-published exactly as `retry()` does, with `retries` unchanged.
        """
        # A countdown longer than the visibility timeout would have Redis deliver it twice.
        countdown = min(countdown, self.max_defer_seconds)
        signature = self.signature_from_request(
            self.request, countdown=countdown, retries=self.request.retries
        )
        signature.apply_async()
        start = datetime.now(UTC) + timedelta(seconds=countdown)
        return Retry("deferred for the rate limit", when=start, sig=signature)

    def on_failure(
        self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any
    ) -> None:
        message = args[0] if args else None
        self.runner.record_failure(
            message, attempt=self.request.retries + 1, worker=self.request.hostname, error=exc
        )


def next_generation(message: Any) -> int:
    """The generation of the message that supersedes `message` (see JobEnvelope.generation)."""
    current = message.get("generation", 0) if isinstance(message, dict) else 0
    return (current if isinstance(current, int) else 0) + 1


def register_tasks(app: Celery, runner: JobRunner) -> Task:  # type: ignore[type-arg]
    """Register `tierq.complete` on `app`, with retry options from the runner's settings."""
    retry = runner.settings.retry

    @app.task(
        bind=True,
        base=CompletionTask,
        name=TASK_NAME,
        autoretry_for=(RetryableProviderError,),
        retry_backoff=retry.backoff_base_seconds,
        retry_backoff_max=retry.backoff_max_seconds,
        retry_jitter=True,
        max_retries=retry.max_attempts - 1,
        throws=(PermanentProviderError, InvalidJobError),
        runner=runner,
        retry_after_max_seconds=retry.retry_after_max_seconds,
        max_defer_seconds=runner.settings.visibility_timeout_seconds / 2,
    )
    def complete(self: CompletionTask, message: dict[str, Any]) -> None:
        try:
            self.runner.run(message, attempt=self.request.retries + 1, worker=self.request.hostname)
        except AdmissionDeferred as deferred:
            raise self.defer(deferred.wait_seconds) from None

    return complete
