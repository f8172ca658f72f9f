"""The Python producer: submit Chat Completions jobs, then poll or wait for their results.

    from tierq import TierqClient
    client = TierqClient()
    job_id = client.submit(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    result = client.wait(job_id, timeout=60)
    print(result.content, result.usage)

`submit` takes the same keyword arguments as `client.chat.completions.create`, validates them
(the API's rules and the tier table's) and returns as soon as the job is on its tier's queue.
Nothing is enqueued when validation fails. Jobs are published by task name through the same
Celery app configuration the workers use; this module imports neither `openai` nor the tasks.

This is the blocking face of the client core (client_base.py): it carries out with redis-py
and Celery's producer what the core decides; `AsyncTierqClient` (aio.py) is the other face.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import redis
from kombu.exceptions import OperationalError
from redis.client import PubSub

from tierq.core.celery_app import TASK_NAME, create_app, job_reprs
from tierq.core.contract import JobEnvelope
from tierq.core.deadline import DeadlineLike
from tierq.core.dispatch import Backlogs
from tierq.core.durability import Confirmation
from tierq.core.errors import NotDurableError
from tierq.core.jobcontrol import JobControl
from tierq.core.jobstore import JobStore, connect
from tierq.core.memory_guard import MemoryGuard
from tierq.core.provider_batches import ProviderBatches
from tierq.core.queue_entry import render as render_entry
from tierq.core.results import JobResult
from tierq.core.settings import Settings
from tierq.core.sliding_window import CONTEXT_OVERFLOW_DEFAULT, ContextOverflow
from tierq.producers.client_base import (
    PRODUCER_REDIS_RETRIES,
    PRODUCER_SOCKET_TIMEOUT_SECONDS,
    PUBLISH_FAULTS,
    RETRY_REQUEUE_AFTER_SECONDS,
    BaseClient,
    redis_errors,
    redis_unreachable,
)
from tierq.producers.submission import (
    RequestLike,
    Submission,
    merge_request,
    queue_message,
    queued_record,
)
from tierq.producers.waiting import DEFAULT_WAIT_SECONDS, Waiter

# Messages per pipelined publish when submitting many jobs.
PUBLISH_BATCH = 500


class TierqClient(BaseClient):
    """Submits jobs and reads their records; thread-safe, one per process is enough."""

    def __init__(self, settings: Settings | None = None) -> None:
        super().__init__(settings)
        self._app = create_app(self.settings)
        self._store = JobStore.from_settings(
            self.settings,
            connect(
                self.settings,
                socket_timeout_seconds=PRODUCER_SOCKET_TIMEOUT_SECONDS,
                retries=PRODUCER_REDIS_RETRIES,
            ),
        )
        self._control = JobControl(self._store)
        self._memory_guard = MemoryGuard(
            self._store.redis, self.settings.redis_memory_guard_fraction
        )
        self._backlogs = Backlogs(self._store.redis, self.settings)
        self._batches = ProviderBatches(self._store.redis, self.settings)

    @property
    def redis(self) -> redis.Redis:
        """The client's Redis connection pool (job records), for readers beside the jobs."""
        return self._store.redis

    # --- submitting ------------------------------------------------------------------------

    def submit(
        self,
        request: RequestLike | None = None,
        /,
        *,
        idempotency_key: str | None = None,
        labels: Mapping[str, str] | None = None,
        context_overflow: ContextOverflow = CONTEXT_OVERFLOW_DEFAULT,
        priority: str | None = None,
        deadline: DeadlineLike | None = None,
        **params: Any,
    ) -> str:
        """Enqueue one job and return its id; raises `InvalidJobError` before enqueueing.

        With an `idempotency_key`, submitting the same request again (for the result TTL)
        returns the first job's id and enqueues nothing; a different request under the same
        key raises `IdempotencyConflictError`.

        `response_format` may be a Pydantic class, as for the SDK's `parse()`: the strict JSON
        schema `parse()` would send is sent, and `result.parsed(TheClass)` reads the answer.

        `labels` are tierq's (up to 16 string pairs, kept on the job's record, never sent);
        the API's own `metadata` is a request parameter like any other, and is sent.

        `context_overflow` is tierq's too, never sent: a conversation over the model's context
        window is refused (`"refuse"`, the default) or has its oldest turns dropped until it
        fits (`"sliding_window"`; the record's `context_dropped_messages` and
        `context_dropped_tokens` say what went).

        `priority` is tierq's, never sent: `interactive`, `default` (None) or `bulk`. On a tier
        with fair dispatch (`TIERQ_TIERS__<TIER>__FAIR_DISPATCH`), a higher class leaves its
        backlog sooner (docs/jobs.md, "Priority and fair share").

        `deadline` is tierq's, never sent: by when the result must exist, as seconds from now,
        a `timedelta`, an aware `datetime` or an RFC 3339 string. A job with time to spare runs
        at the provider's cheaper `flex` service tier where its model offers it (docs/jobs.md,
        "Deadlines and service levels"); None runs as always.
        """
        keys = [idempotency_key] if idempotency_key is not None else None
        return self.submit_many(
            [merge_request(request, params)],
            idempotency_keys=keys,
            labels=[labels],
            context_overflow=context_overflow,
            priority=priority,
            deadline=deadline,
        )[0]

    def submit_many(
        self,
        requests: Iterable[RequestLike],
        idempotency_keys: Sequence[str | None] | None = None,
        *,
        tenant: str | None = None,
        labels: Sequence[Mapping[str, str] | None] | None = None,
        context_overflow: ContextOverflow | Sequence[ContextOverflow | None] | None = None,
        priority: str | Sequence[str | None] | None = None,
        deadline: DeadlineLike | Sequence[DeadlineLike | None] | None = None,
        provider_batch: bool = False,
    ) -> list[str]:
        """Enqueue many jobs; all are validated first, so one bad request enqueues none.

        `idempotency_keys`, if given, holds one key (or None) per request, as for `submit`;
        so does `labels`, one mapping (or None) per request. `context_overflow`, as for
        `submit`, is one choice for every request or one (or None) per request. `tenant` marks
        the jobs with the gateway tenant that owns them. `priority`, as for `submit`, is one
        class for every request or one (or None) per request; so is `deadline`.
        `provider_batch` sends the jobs to the provider's Batch API whatever their deadlines'
        distance (each needs one); a gateway batch forwarded there uses it.

        Nothing is enqueued when Redis is nearly full (`StoreFullError`). Under
        `TIERQ_DURABILITY`, the call returns once Redis confirms the jobs durable, or raises
        `NotDurableError` naming them (queued, not confirmed).
        """
        submission = Submission.build(
            self.settings,
            requests,
            idempotency_keys,
            tenant,
            labels,
            context_overflow,
            priority,
            deadline,
            provider_batch,
        )
        with redis_errors():
            # Redis nearly full: StoreFullError, so what is queued can still finish.
            self._memory_guard.check()
        if idempotency_keys is not None:
            self._reserve_keys(submission)
        envelopes = submission.to_send
        if not envelopes:
            return submission.job_ids
        try:
            # The record first: a worker fast enough to start before it exists still finds it.
            # Watched until published: should this process die in between, a worker's reaper
            # enqueues them from their kept messages (their idempotency keys already name them).
            watch_until = time.time() + 2 * self.settings.lease_seconds
            self._store.save_many(
                [queued_record(envelope) for envelope in envelopes],
                [queue_message(envelope) for envelope in envelopes],
                watch_until=watch_until,
            )
        except redis.RedisError as error:
            self._release_keys(list(submission.new_keys.values()))
            raise redis_unreachable(error, " to record the job") from None
        published: list[str] = []
        batch: list[JobEnvelope] = []
        # The last batch's wait vouches for every earlier one: replication is one ordered log.
        confirmation: Confirmation | None = None
        pooled = [envelope for envelope in envelopes if self._batches.batched(envelope)]
        if pooled:
            # Far deadlines: the jobs wait in their batch pools for a worker's batcher to send
            # them through the provider's Batch API (tierq/core/provider_batches.py).
            pooled_ids = {envelope.job_id for envelope in pooled}
            envelopes = [e for e in envelopes if e.job_id not in pooled_ids]
            confirmation = self._hand_over(
                pooled, lambda: self._batches.push(pooled), published, envelopes, submission,
                watch_until,
            )  # fmt: skip
        fair = [envelope for envelope in envelopes if self._backlogs.fair(envelope.tier)]
        if fair:
            # Jobs of tiers with fair dispatch wait in backlogs; a worker's dispatcher
            # publishes them (tierq/core/dispatch.py).
            envelopes = [e for e in envelopes if not self._backlogs.fair(e.tier)]
            entries = [
                render_entry(self._app, e.job_id, e.to_message(), self.settings.queue_for(e.tier))
                for e in fair
            ]
            messages = [entry.message for entry in entries]
            confirmation = self._hand_over(
                fair, lambda: self._backlogs.push(fair, messages), published, envelopes,
                submission, watch_until,
            )  # fmt: skip
            self._send_events([entry.sent_event for entry in entries if entry.sent_event])
        try:
            with self._app.producer_or_acquire() as producer:
                for start in range(0, len(envelopes), PUBLISH_BATCH):
                    batch = envelopes[start : start + PUBLISH_BATCH]
                    # kombu's batch sends the whole batch in one pipelined round trip.
                    with producer.batch(max_size=PUBLISH_BATCH + 1):
                        for envelope in batch:
                            self._publish(envelope, producer)
                    published.extend(envelope.job_id for envelope in batch)
                    try:
                        confirmation = self._store.unwatch_published(
                            [e.job_id for e in batch], watch_until
                        )
                    except redis.RedisError:  # the reaper then finds a stale copy, no harm
                        confirmation = None
        except PUBLISH_FAULTS as error:
            # The failed batch may or may not have reached Redis. Its jobs keep their records
            # and idempotency keys and go on the watch list: a worker's reaper enqueues any of
            # them no worker has claimed in two leases (a copy already queued is then stale).
            # Later jobs were never sent: they are forgotten, keys and all.
            unsent = envelopes[len(published) + len(batch) :]
            self._forget([envelope.job_id for envelope in unsent])
            self._release_keys(submission.keys_of(unsent))
            with contextlib.suppress(redis.RedisError):
                self._store.watch([e.job_id for e in batch], 2 * self.settings.lease_seconds)
            if isinstance(error, KeyboardInterrupt):
                raise  # interrupted (Ctrl-C): cleaned up as for a broker fault, then passed on
            raise submission.publish_failed(published, batch, unsent, error) from None
        if self._store.durability.waits and (confirmation is None or not confirmation.durable):
            said = confirmation.describe() if confirmation else "Redis did not answer the wait"
            raise NotDurableError(
                f"{len(published)} jobs were queued but not confirmed durable "
                f"(TIERQ_DURABILITY={self._store.durability.mode}: {said} within "
                f"{self._store.durability.timeout_seconds:g}s); they will most likely run, "
                "but a failover now could lose them: submit again with the same idempotency "
                "keys to be sure",
                job_ids=published,
            )
        return submission.job_ids

    def _reserve_keys(self, submission: Submission) -> None:
        """Take the submission's idempotency keys, or learn the earlier jobs that hold them."""
        with redis_errors():
            reservations = self._control.reserve(
                submission.key_claims(), self.settings.result_ttl_seconds
            )
        conflict = submission.take(reservations)
        if conflict is not None:
            self._release_keys(list(submission.new_keys.values()))
            raise conflict

    def _release_keys(self, keys: Sequence[str]) -> None:
        with contextlib.suppress(redis.RedisError):
            self._control.release(keys)

    # --- after submission -------------------------------------------------------------------

    def cancel(self, job_id: str) -> JobResult:
        """Cancel a job: a queued one, or one waiting in its worker for the rate limit, never
        reaches the API; one whose call is under way has its result discarded. A finished job
        is left as it is. Returns the job's record."""
        record = self.get(job_id)
        with redis_errors():
            _, after = self._control.cancel(record)
        return self._found(job_id, after)

    def dead_letters(self, limit: int = 100) -> list[JobResult]:
        """Jobs that failed after exhausting their attempts (or without a broker), newest first."""
        with redis_errors():
            return self._control.dead_letters(limit)

    def retry(self, job_id: str) -> str:
        """Run a dead letter again, with a fresh attempt budget; returns its (same) job id."""
        record = self.get(job_id)
        with redis_errors():
            message = self._control.retry_dead(record, RETRY_REQUEUE_AFTER_SECONDS)
        if message is None:
            raise self._not_a_dead_letter(record)
        try:
            with self._app.producer_or_acquire() as producer:
                self._publish(JobEnvelope.model_validate(message), producer)
        except PUBLISH_FAULTS as error:
            raise self._republish_failed(job_id, error) from None
        return job_id

    def _publish(self, envelope: JobEnvelope, producer: Any) -> None:
        self._app.send_task(
            TASK_NAME,
            args=[envelope.to_message()],
            task_id=envelope.job_id,
            producer=producer,
            **job_reprs(envelope.job_id),
        )

    def _hand_over(
        self,
        held: list[JobEnvelope],
        push: Callable[[], None],
        published: list[str],
        rest: list[JobEnvelope],
        submission: Submission,
        watch_until: float,
    ) -> Confirmation | None:
        """Put `held` where a worker takes them from (a batch pool, a backlog) with `push`.

        Recorded and watched before this: should it fail, their records' kept messages let a
        reaper run them; `rest`, never sent, are forgotten, and the error names what was
        handed over already (`published`)."""
        try:
            push()
        except redis.RedisError as error:
            self._forget([envelope.job_id for envelope in rest])
            self._release_keys(submission.keys_of(rest))
            raise submission.publish_failed(list(published), held, rest, error) from None
        published.extend(envelope.job_id for envelope in held)
        try:
            return self._store.unwatch_published([e.job_id for e in held], watch_until)
        except redis.RedisError:  # the reaper then finds a stale copy, no harm
            return None

    def _send_events(self, events: Sequence[dict[str, Any]]) -> None:
        """Celery's `task-sent` events of jobs put in backlogs, as `send_task` sends them for
        the jobs it publishes (with `TIERQ_CELERY_EVENTS`); an event lost to a broker fault
        costs a monitor a line, never the job."""
        if not events:
            return
        try:
            with self._app.events.default_dispatcher() as dispatcher:
                for event in events:
                    dispatcher.send("task-sent", **event)
        except (OperationalError, redis.RedisError, OSError):
            pass

    def _forget(self, job_ids: Sequence[str]) -> None:
        # The records expire on their own if this fails too; the caller already gets an error.
        with contextlib.suppress(redis.RedisError):
            self._store.delete(job_ids)

    # --- reading ---------------------------------------------------------------------------

    def get(self, job_id: str) -> JobResult:
        """The job's record as it stands; raises `JobNotFoundError` for unknown or expired ids."""
        with redis_errors():
            return self._found(job_id, self._store.get(job_id))

    def get_many(self, job_ids: Sequence[str]) -> list[JobResult | None]:
        """Records for many jobs in one round trip; None for unknown or expired ids."""
        with redis_errors():
            return self._store.get_many(job_ids)

    def wait(self, job_id: str, timeout: float = DEFAULT_WAIT_SECONDS) -> JobResult:
        """Block until the job has succeeded or failed; raises `JobWaitTimeout` after `timeout`."""
        return self.wait_many([job_id], timeout=timeout)[0]

    def wait_many(
        self, job_ids: Sequence[str], timeout: float = DEFAULT_WAIT_SECONDS
    ) -> list[JobResult]:
        """Wait for every job; the records come back in the order of `job_ids`."""
        finished = {record.job_id: record for record in self.as_completed(job_ids, timeout)}
        return [finished[job_id] for job_id in job_ids]

    def as_completed(
        self, job_ids: Sequence[str], timeout: float = DEFAULT_WAIT_SECONDS
    ) -> Iterator[JobResult]:
        """Yield each job's record as soon as it finishes (succeeded or failed).

        Raises `JobWaitTimeout` once `timeout` has passed with jobs still pending. A Redis
        outage shorter than the wait is ridden out; a longer one raises
        `BrokerUnavailableError` at the deadline.
        """
        waiter = self._waiter(job_ids, timeout)
        while not waiter.done():
            try:
                yield from self._watch(waiter)
            except redis.RedisError as error:
                time.sleep(waiter.broker_failed(error))

    def _watch(self, waiter: Waiter) -> Iterator[JobResult]:
        """Carry out `waiter`'s steps (see `Waiter`) on one subscription."""
        subscription = self._store.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            for channels in waiter.subscriptions():
                subscription.subscribe(*channels)
            while not waiter.done():
                check = waiter.to_check()
                statuses = self._store.statuses(check) if check else []
                finished = waiter.finished_among(check, statuses)
                records = self._store.get_many(finished) if finished else []
                yield from waiter.finish(records)
                if not waiter.done():
                    _listen(subscription, waiter)
        finally:
            subscription.close()

    def close(self) -> None:
        self._store.redis.close()
        self._app.close()

    def __enter__(self) -> TierqClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _listen(subscription: PubSub, waiter: Waiter) -> None:
    """Hand `waiter` the announcements: the first within its wake-up time, then the rest
    already received."""
    timeout = waiter.next_wake()
    while message := subscription.get_message(timeout=timeout):
        waiter.heard(message)
        timeout = 0.0
