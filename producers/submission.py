"""A submission before any I/O: requests validated, routed and built into jobs.

Everything `submit` and `submit_many` decide needs no Redis and no broker: the contract and the
limits, the tier, the budget check, the envelopes and their first records, what an idempotency
key's reservation means, and what to tell the caller when publishing failed part-way. It lives
here once; the clients (client.py, aio.py) only write what a `Submission` holds and publish it.
The batch file checker (batchfile.py) judges bodies with the same `prepare`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from tierq.core.budget import check_fits, job_cost
from tierq.core.contract import (
    TENANT_PATTERN,
    JobEnvelope,
    JobRequest,
    parse_job_request,
    parse_labels,
    request_size_bytes,
)
from tierq.core.deadline import DeadlineLike, parse_deadline
from tierq.core.errors import (
    BrokerUnavailableError,
    IdempotencyConflictError,
    InvalidJobError,
    PayloadTooLargeError,
)
from tierq.core.jobcontrol import Reservation, fingerprint
from tierq.core.priority import parse_priority
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings
from tierq.core.sliding_window import (
    CONTEXT_OVERFLOW_CHOICES,
    CONTEXT_OVERFLOW_DEFAULT,
    ContextOverflow,
    slide_window,
)
from tierq.core.structured import with_schema_classes_resolved
from tierq.core.tiers import route

RequestLike = JobRequest | Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class PreparedJob:
    # The request as it will be sent: after the sliding window, if the job opted in.
    request: JobRequest
    tier: str
    prompt_tokens: int
    dropped_messages: int = 0
    dropped_tokens: int = 0


def prepare(
    settings: Settings,
    request: RequestLike,
    context_overflow: ContextOverflow = CONTEXT_OVERFLOW_DEFAULT,
) -> PreparedJob:
    """Validate a request: the contract, the payload limit, the tier table, and the budgets
    (a job over its model's context window or whole TPM limit could never run).

    A Pydantic class as `response_format` is first turned into the strict `json_schema` the
    SDK's `parse()` sends for it (tierq/core/structured.py); read the answer back with
    `JobResult.parsed(TheClass)`. With `context_overflow="sliding_window"`, a conversation over
    the model's context window has its oldest turns dropped (tierq/core/sliding_window.py)
    before the budgets are checked, so they are checked on what will be sent."""
    if context_overflow not in CONTEXT_OVERFLOW_CHOICES:
        rule = f"must be one of {', '.join(map(repr, CONTEXT_OVERFLOW_CHOICES))}"
        raise InvalidJobError(
            f"invalid job request: context_overflow: {context_overflow!r}: {rule}",
            [{"field": "context_overflow", "message": rule}],
        )
    parsed = parse_job_request(
        with_schema_classes_resolved(request) if isinstance(request, Mapping) else request
    )
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
    window = settings.context_window_of(parsed.model)
    if context_overflow == "sliding_window" and window is not None:
        fitted = slide_window(parsed, window)
        cost = job_cost(fitted.request, settings, fitted.prompt_tokens)
        check_fits(fitted.request, cost, settings)
        return PreparedJob(
            fitted.request, tier, cost.prompt_tokens, fitted.dropped_messages, fitted.dropped_tokens
        )
    cost = job_cost(parsed, settings)
    check_fits(parsed, cost, settings)
    return PreparedJob(parsed, tier, cost.prompt_tokens)


def new_job_id() -> str:
    return str(uuid.uuid4())


def merge_request(request: RequestLike | None, params: Mapping[str, Any]) -> RequestLike:
    """`submit`'s positional request and keyword parameters as one request (keywords win)."""
    if request is None:
        return params
    if not params:
        return request
    base = request.api_fields() if isinstance(request, JobRequest) else dict(request)
    return {**base, **params}


@dataclass(slots=True)
class Submission:
    """One call's jobs, validated and built; what the reservation of idempotency keys decided.

    Build it with `Submission.build`; a request that fails validation raises there, so one bad
    request enqueues none.
    """

    envelopes: list[JobEnvelope]
    idempotency_keys: Sequence[str | None] | None
    # Position of a request -> the earlier job its idempotency key already names.
    reused: dict[int, str] = field(default_factory=dict)
    # Job id -> the idempotency key this submission newly took for it.
    new_keys: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        settings: Settings,
        requests: Iterable[RequestLike],
        idempotency_keys: Sequence[str | None] | None,
        tenant: str | None,
        labels: Sequence[Mapping[str, str] | None] | None = None,
        context_overflow: ContextOverflow | Sequence[ContextOverflow | None] | None = None,
        priority: str | Sequence[str | None] | None = None,
        deadline: DeadlineLike | Sequence[DeadlineLike | None] | None = None,
        provider_batch: bool = False,
    ) -> Submission:
        """Validate every request and give each a new job (envelope) on its tier; `labels`,
        if given, holds one mapping (or None) per request: tierq's, never sent.
        `context_overflow` (tierq's, never sent) is one choice for all requests or one (or
        None, the default) per request. `priority` (tierq's, never sent) is the jobs' class,
        `interactive`, `default` (None) or `bulk`: one for all requests or one (or None) each.
        `deadline` (tierq's, never sent; tierq/core/deadline.py) likewise: one for all, or one
        (or None) per request. `provider_batch` sends every job to the provider's Batch API
        (each must then have a deadline: its batch's end)."""
        requests = list(requests)
        choices = (
            [priority] * len(requests)
            if priority is None or isinstance(priority, str)
            else list(priority)
        )
        if len(choices) != len(requests):
            raise ValueError("priority must be one class, or one (or None) per request")
        try:
            priorities = [None if each is None else parse_priority(each) for each in choices]
        except ValueError as error:
            raise InvalidJobError(
                f"invalid job request: {error}", [{"field": "priority", "message": str(error)}]
            ) from None
        if tenant is not None and not TENANT_PATTERN.match(tenant):
            raise ValueError(f"tenant {tenant!r}: 1 to 64 characters from A-Z a-z 0-9 _ . -")
        overflows = _per_request(context_overflow, len(requests))
        prepared = [
            prepare(settings, request, overflow)
            for request, overflow in zip(requests, overflows, strict=True)
        ]
        if idempotency_keys is not None and len(idempotency_keys) != len(prepared):
            raise ValueError("idempotency_keys must hold one key (or None) per request")
        if labels is not None and len(labels) != len(prepared):
            raise ValueError("labels must hold one mapping (or None) per request")
        job_labels = [parse_labels(each) for each in labels or [None] * len(prepared)]
        submitted_at = datetime.now(UTC)
        deadlines = [
            parse_deadline(each, now=submitted_at) for each in _per_job(deadline, len(prepared))
        ]
        envelopes = [
            JobEnvelope(
                job_id=new_job_id(),
                tier=job.tier,
                submitted_at=submitted_at,
                request=job.request,
                estimated_prompt_tokens=job.prompt_tokens,
                tenant=tenant,
                labels=job_labels[i],
                # Set only when something was dropped, so other jobs' messages stay as before.
                **_dropped_fields(job),
                **({} if priorities[i] is None else {"priority": priorities[i]}),
                **({} if deadlines[i] is None else {"deadline": deadlines[i]}),
                **({"provider_batch": True} if provider_batch else {}),
            )
            for i, job in enumerate(prepared)
        ]
        return cls(envelopes, idempotency_keys)

    def _keyed(self) -> list[tuple[int, str]]:
        keys = self.idempotency_keys or []
        return [(i, key) for i, key in enumerate(keys) if key is not None]

    def key_claims(self) -> list[tuple[str, str, str]]:
        """(idempotency key, job id, request fingerprint) for each request given a key, for
        `JobControl.reserve`."""
        return [
            (key, envelope.job_id, fingerprint(envelope.request, envelope.labels))
            for i, key in self._keyed()
            for envelope in (self.envelopes[i],)
        ]

    def take(self, reservations: Sequence[Reservation]) -> IdempotencyConflictError | None:
        """Note what `JobControl.reserve` answered for `key_claims()`: the keys newly taken
        and the earlier jobs reused. Returns the error for the first key that names another
        request (the caller frees `new_keys` and raises it), or None."""
        keyed = list(zip(self._keyed(), reservations, strict=True))
        self.new_keys = {r.job_id: key for (_, key), r in keyed if r.new}
        for (_, key), reservation in keyed:
            if reservation.conflict:
                return IdempotencyConflictError(key, reservation.job_id)
        self.reused = {i: r.job_id for (i, _), r in keyed if not r.new}
        return None

    @property
    def job_ids(self) -> list[str]:
        """Every request's job id, in order: an earlier job's where its key was reused."""
        return [self.reused.get(i, envelope.job_id) for i, envelope in enumerate(self.envelopes)]

    @property
    def to_send(self) -> list[JobEnvelope]:
        """The new jobs: to record and publish (a reused key's job already was)."""
        return [envelope for i, envelope in enumerate(self.envelopes) if i not in self.reused]

    def keys_of(self, envelopes: Iterable[JobEnvelope]) -> list[str]:
        """The idempotency keys these jobs newly took (to free when they were never sent)."""
        return [self.new_keys[e.job_id] for e in envelopes if e.job_id in self.new_keys]

    def publish_failed(
        self,
        published: Sequence[str],
        maybe: Sequence[JobEnvelope],
        unsent: Sequence[JobEnvelope],
        error: BaseException,
    ) -> BrokerUnavailableError:
        """What to tell a caller whose publish failed part-way: the jobs enqueued, those that
        may have been (they will run once the broker is back), those that were not;
        `job_ids` names the first two."""
        return BrokerUnavailableError(
            f"cannot reach the broker: {len(published)} of {len(self.to_send)} jobs were "
            f"enqueued, {len(maybe)} may have been (they will run once the broker is back), "
            f"{len(unsent)} were not: {error}",
            job_ids=[*published, *(envelope.job_id for envelope in maybe)],
        )


def _per_request(
    choice: ContextOverflow | Sequence[ContextOverflow | None] | None, count: int
) -> list[ContextOverflow]:
    if choice is None or isinstance(choice, str):
        return [choice or CONTEXT_OVERFLOW_DEFAULT] * count
    if len(choice) != count:
        raise ValueError("context_overflow must hold one choice (or None) per request")
    return [each or CONTEXT_OVERFLOW_DEFAULT for each in choice]


def _dropped_fields(job: PreparedJob) -> dict[str, int]:
    if not job.dropped_messages:
        return {}
    return {
        "context_dropped_messages": job.dropped_messages,
        "context_dropped_tokens": job.dropped_tokens,
    }


def queued_record(envelope: JobEnvelope) -> JobResult:
    """A new job's first record, written before its message is published."""
    return JobResult(
        job_id=envelope.job_id,
        status=JobStatus.QUEUED,
        tier=envelope.tier,
        model=envelope.request.model,
        submitted_at=envelope.submitted_at,
        labels=envelope.labels,
        tenant=envelope.tenant,
        deadline=envelope.deadline,
        context_dropped_messages=envelope.context_dropped_messages,
        context_dropped_tokens=envelope.context_dropped_tokens,
    )


def queue_message(envelope: JobEnvelope) -> str:
    """The job's queue message as JSON, kept on its record for a reaper's re-queue."""
    return json.dumps(envelope.to_message(), separators=(",", ":"))


def _per_job(
    deadline: DeadlineLike | Sequence[DeadlineLike | None] | None, count: int
) -> list[DeadlineLike | None]:
    """One deadline for every job, or one (or None) each: a list or tuple is the latter."""
    if isinstance(deadline, list | tuple):
        if len(deadline) != count:
            raise ValueError("deadline must be one for all requests, or one (or None) each")
        return list(deadline)
    single = cast("DeadlineLike | None", deadline)  # a str is a Sequence, but one deadline
    return [single] * count
