"""The Python producer: submit Chat Completions jobs, then poll or wait for their results.

    from tierq.producers import TierqClient
    client = TierqClient()
    job_id = client.submit(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}])
    result = client.wait(job_id, timeout=60)
    print(result.content, result.usage)

`submit` takes the same keyword arguments as `client.chat.completions.create`, validates them
(the API's rules and the tier table's) and returns as soon as the job is on its tier's queue.
Nothing is enqueued when validation fails. Jobs are published by task name through the same
Celery app configuration the workers use; this module imports neither `openai` nor the tasks.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import redis
from kombu.exceptions import OperationalError
from redis.client import PubSub

from tierq.core.budget import check_fits, job_cost
from tierq.core.celery_app import TASK_NAME, create_app
from tierq.core.contract import (
    TENANT_PATTERN,
    JobEnvelope,
    JobRequest,
    parse_job_request,
    request_size_bytes,
)
from tierq.core.errors import (
    BrokerUnavailableError,
    IdempotencyConflictError,
    InvalidJobError,
    JobNotFoundError,
    PayloadTooLargeError,
)
from tierq.core.jobcontrol import JobControl, fingerprint
from tierq.core.jobstore import JobStore, connect
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings, get_settings
from tierq.core.tiers import route
from tierq.producers.waiting import DEFAULT_WAIT_SECONDS, Waiter

RequestLike = JobRequest | Mapping[str, Any]
# A producer's Redis commands give up in seconds, so deadlines (wait's timeout) hold.
PRODUCER_SOCKET_TIMEOUT_SECONDS = 2.0
PRODUCER_REDIS_RETRIES = 3
# Messages per pipelined publish when submitting many jobs.
PUBLISH_BATCH = 500
# A retried dead letter is re-queued by a worker's reaper if its publish never arrives.
RETRY_REQUEUE_AFTER_SECONDS = 60.0
# Channels per SUBSCRIBE command when waiting on many jobs.
SUBSCRIBE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class PreparedJob:
    request: JobRequest
    tier: str
    prompt_tokens: int


def prepare(settings: Settings, request: RequestLike) -> PreparedJob:
    """Validate a request: the contract, the payload limit, the tier table, and the budgets
    (a job over its model's context window or whole TPM limit could never run)."""
    parsed = parse_job_request(dict(request) if isinstance(request, Mapping) else request)
    if len(parsed.messages) > settings.max_messages_per_job:
        raise InvalidJobError(
            f"invalid job request: messages: {len(parsed.messages)} messages, over the limit "
            f"of {settings.max_messages_per_job} (TIERQ_MAX_MESSAGES_PER_JOB)",
            [{"field": "messages", "message": "too many messages"}],
        )
    size = request_size_bytes(parsed)
    if size > settings.max_request_bytes:
        raise PayloadTooLargeError(size, settings.max_request_bytes)
    tier = route(parsed, settings)
    cost = job_cost(parsed, settings)
    check_fits(parsed, cost, settings)
    return PreparedJob(parsed, tier, cost.prompt_tokens)


def new_job_id() -> str:
    return str(uuid.uuid4())


class TierqClient:
    """Submits jobs and reads their records; thread-safe, one per process is enough."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
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
        **params: Any,
    ) -> str:
        """Enqueue one job and return its id; raises `InvalidJobError` before enqueueing.

        With an `idempotency_key`, submitting the same request again (for the result TTL)
        returns the first job's id and enqueues nothing; a different request under the same
        key raises `IdempotencyConflictError`.
        """
        keys = [idempotency_key] if idempotency_key is not None else None
        return self.submit_many([_merge(request, params)], idempotency_keys=keys)[0]

    def submit_many(
        self,
        requests: Iterable[RequestLike],
        idempotency_keys: Sequence[str | None] | None = None,
        *,
        tenant: str | None = None,
    ) -> list[str]:
        """Enqueue many jobs; all are validated first, so one bad request enqueues none.

        `idempotency_keys`, if given, holds one key (or None) per request, as for `submit`.
        `tenant` labels the jobs with the gateway tenant that owns them.
        """
        if tenant is not None and not TENANT_PATTERN.match(tenant):
            raise ValueError(f"tenant {tenant!r}: 1 to 64 characters from A-Z a-z 0-9 _ . -")
        prepared = [prepare(self.settings, request) for request in requests]
        if idempotency_keys is not None and len(idempotency_keys) != len(prepared):
            raise ValueError("idempotency_keys must hold one key (or None) per request")
        submitted_at = datetime.now(UTC)
        envelopes = [
            JobEnvelope(
                job_id=new_job_id(),
                tier=job.tier,
                submitted_at=submitted_at,
                request=job.request,
                estimated_prompt_tokens=job.prompt_tokens,
                tenant=tenant,
            )
            for job in prepared
        ]
        reused: dict[int, str] = {}
        reserved: dict[str, str] = {}
        if idempotency_keys is not None:
            reused, reserved = self._reserve_keys(envelopes, idempotency_keys)
        job_ids = [reused.get(i, envelope.job_id) for i, envelope in enumerate(envelopes)]
        envelopes = [envelope for i, envelope in enumerate(envelopes) if i not in reused]
        if not envelopes:
            return job_ids
        records = [
            JobResult(
                job_id=envelope.job_id,
                status=JobStatus.QUEUED,
                tier=envelope.tier,
                model=envelope.request.model,
                submitted_at=submitted_at,
                metadata=envelope.request.metadata,
                tenant=tenant,
            )
            for envelope in envelopes
        ]
        try:
            # The record first: a worker fast enough to start before it exists still finds it.
            messages = [
                json.dumps(envelope.to_message(), separators=(",", ":")) for envelope in envelopes
            ]
            # Watched until published: should this process die in between, a worker's reaper
            # enqueues them from their kept messages (their idempotency keys already name them).
            watch_until = time.time() + 2 * self.settings.lease_seconds
            self._store.save_many(records, messages, watch_until=watch_until)
        except redis.RedisError as error:
            self._release_keys(list(reserved.values()))
            raise BrokerUnavailableError(f"cannot reach Redis to record the job: {error}") from None
        published: list[str] = []
        batch: list[JobEnvelope] = []
        try:
            with self._app.producer_or_acquire() as producer:
                for start in range(0, len(envelopes), PUBLISH_BATCH):
                    batch = envelopes[start : start + PUBLISH_BATCH]
                    # kombu's batch sends the whole batch in one pipelined round trip.
                    with producer.batch(max_size=PUBLISH_BATCH + 1):
                        for envelope in batch:
                            self._publish(envelope, producer)
                    published.extend(envelope.job_id for envelope in batch)
                    with contextlib.suppress(redis.RedisError):  # else reaped: a stale copy
                        self._store.unwatch_published([e.job_id for e in batch], watch_until)
        except (OperationalError, redis.RedisError, OSError, KeyboardInterrupt) as error:
            # The failed batch may or may not have reached Redis. Its jobs keep their records
            # and idempotency keys and go on the watch list: a worker's reaper enqueues any of
            # them no worker has claimed in two leases (a copy already queued is then stale).
            # Later jobs were never sent: they are forgotten, keys and all.
            unsent = envelopes[len(published) + len(batch) :]
            self._forget([envelope.job_id for envelope in unsent])
            self._release_keys([reserved[e.job_id] for e in unsent if e.job_id in reserved])
            with contextlib.suppress(redis.RedisError):
                self._store.watch([e.job_id for e in batch], 2 * self.settings.lease_seconds)
            if isinstance(error, KeyboardInterrupt):
                raise  # interrupted (Ctrl-C): cleaned up as for a broker fault, then passed on
            raise BrokerUnavailableError(
                f"cannot reach the broker: {len(published)} of {len(envelopes)} jobs were "
                f"enqueued, {len(batch)} may have been (they will run once the broker is back), "
                f"{len(unsent)} were not: {error}",
                job_ids=published + [envelope.job_id for envelope in batch],
            ) from None
        return job_ids

    def _reserve_keys(
        self, envelopes: Sequence[JobEnvelope], keys: Sequence[str | None]
    ) -> tuple[dict[int, str], dict[str, str]]:
        """Take idempotency keys: the earlier job of each key already used (by position), and
        the keys newly taken (by the job they now name)."""
        wanted = [(i, key) for i, key in enumerate(keys) if key is not None]
        try:
            reservations = self._control.reserve(
                [
                    (key, envelopes[i].job_id, fingerprint(envelopes[i].request))
                    for i, key in wanted
                ],
                self.settings.result_ttl_seconds,
            )
        except redis.RedisError as error:
            raise BrokerUnavailableError(f"cannot reach Redis: {error}") from None
        new_keys = {
            r.job_id: key for (_, key), r in zip(wanted, reservations, strict=True) if r.new
        }
        for (_, key), reservation in zip(wanted, reservations, strict=True):
            if reservation.conflict:
                self._release_keys(list(new_keys.values()))
                raise IdempotencyConflictError(key, reservation.job_id)
        reused = {i: r.job_id for (i, _), r in zip(wanted, reservations, strict=True) if not r.new}
        return reused, new_keys

    def _release_keys(self, keys: Sequence[str]) -> None:
        with contextlib.suppress(redis.RedisError):
            self._control.release(keys)

    # --- after submission -------------------------------------------------------------------

    def cancel(self, job_id: str) -> JobResult:
        """Cancel a job: a queued one, or one waiting in its worker for the rate limit, never
        reaches the API; one whose call is under way has its result discarded. A finished job
        is left as it is. Returns the job's record."""
        record = self.get(job_id)
        with _broker_errors():
            _, after = self._control.cancel(record)
        if after is None:
            raise JobNotFoundError(job_id)
        return after

    def dead_letters(self, limit: int = 100) -> list[JobResult]:
        """Jobs that failed after exhausting their attempts (or without a broker), newest first."""
        with _broker_errors():
            return self._control.dead_letters(limit)

    def retry(self, job_id: str) -> str:
        """Run a dead letter again, with a fresh attempt budget; returns its (same) job id."""
        record = self.get(job_id)
        with _broker_errors():
            message = self._control.retry_dead(record, RETRY_REQUEUE_AFTER_SECONDS)
        if message is None:
            raise InvalidJobError(
                f"job {job_id!r} is {record.status.value}, not a dead letter; "
                "only jobs that failed after their attempts (tierq dead) can be retried",
                [{"field": "job_id", "message": "not a dead letter"}],
            )
        try:
            with self._app.producer_or_acquire() as producer:
                self._publish(JobEnvelope.model_validate(message), producer)
        except (OperationalError, redis.RedisError, OSError, KeyboardInterrupt) as error:
            raise BrokerUnavailableError(
                f"job {job_id} is queued again but could not be published ({error}); a worker's "
                f"reaper will publish it within {RETRY_REQUEUE_AFTER_SECONDS:.0f}s"
            ) from None
        return job_id

    def _publish(self, envelope: JobEnvelope, producer: Any) -> None:
        self._app.send_task(
            TASK_NAME,
            args=[envelope.to_message()],
            task_id=envelope.job_id,
            producer=producer,
            # What Celery would put in the message headers (and show in Flower and events) is
            # a repr of the arguments: the prompt. Name the job instead, which is also cheaper.
            argsrepr=f"(job {envelope.job_id})",
            kwargsrepr="{}",
        )

    def _forget(self, job_ids: Sequence[str]) -> None:
        # The records expire on their own if this fails too; the caller already gets an error.
        with contextlib.suppress(redis.RedisError):
            self._store.delete(job_ids)

    # --- reading ---------------------------------------------------------------------------

    def get(self, job_id: str) -> JobResult:
        """The job's record as it stands; raises `JobNotFoundError` for unknown or expired ids."""
        with _broker_errors():
            result = self._store.get(job_id)
        if result is None:
            raise JobNotFoundError(job_id)
        return result

    def get_many(self, job_ids: Sequence[str]) -> list[JobResult | None]:
        """Records for many jobs in one round trip; None for unknown or expired ids."""
        with _broker_errors():
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
        waiter = Waiter(job_ids, timeout)
        while not waiter.done():
            try:
                yield from self._watch(waiter)
            except redis.RedisError as error:
                time.sleep(waiter.broker_failed(error))

    def _watch(self, waiter: Waiter) -> Iterator[JobResult]:
        store = self._store
        subscription = store.redis.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        try:
            # Subscribe first, then read: a job finishing in between is announced, not missed.
            channels = [store.done_channel(job_id) for job_id in waiter.pending()]
            for start in range(0, len(channels), SUBSCRIBE_BATCH):
                subscription.subscribe(*channels[start : start + SUBSCRIBE_BATCH])
            announced: list[str] = []
            while not waiter.done():
                check = waiter.to_check(announced)
                finished = waiter.finished_among(check, store.statuses(check)) if check else []
                for record in store.get_many(finished) if finished else []:
                    if record is not None:
                        waiter.finish(record)
                        yield record
                if not waiter.done():
                    announced = _announced(subscription, waiter.next_wake())
        finally:
            subscription.close()

    def close(self) -> None:
        self._store.redis.close()
        self._app.close()

    def __enter__(self) -> TierqClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _announced(subscription: PubSub, wait_seconds: float) -> list[str]:
    """Job ids announced as finished: waits up to `wait_seconds` for the first, takes the rest."""
    ids = []
    message = subscription.get_message(timeout=wait_seconds)
    while message is not None:
        if message.get("type") == "message":
            ids.append(_decode(message["data"]))
        message = subscription.get_message(timeout=0)
    return ids


def _decode(data: bytes | str) -> str:
    return data.decode() if isinstance(data, bytes) else data


@contextlib.contextmanager
def _broker_errors() -> Iterator[None]:
    try:
        yield
    except redis.RedisError as error:
        raise BrokerUnavailableError(f"cannot reach Redis: {error}") from None


def _merge(request: RequestLike | None, params: Mapping[str, Any]) -> RequestLike:
    if request is None:
        return params
    if not params:
        return request
    base = request.api_fields() if isinstance(request, JobRequest) else dict(request)
    if isinstance(request, JobRequest):
        base["metadata"] = request.metadata
    return {**base, **params}
