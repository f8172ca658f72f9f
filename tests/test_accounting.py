"""The usage ledger counts each job's outcome once and bills each paid answer once, through
the same scripts the workers run, on a real Redis."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import redis

from tests.support import nonce
from tierq.core.jobcontrol import JobControl
from tierq.core.jobstore import JobStore
from tierq.core.results import JobError, JobResult, JobStatus, Usage
from tierq.producers.usage import usage_report

MODEL = "gpt-4o-mini"


@pytest.fixture
def store(redis_client: redis.Redis) -> JobStore:
    return JobStore(redis_client, key_prefix=f"acct-{nonce()}:", ttl_seconds=600)


def record(job_id: str, status: JobStatus, **fields: object) -> JobResult:
    now = datetime.now(UTC)
    return JobResult(
        job_id=job_id, status=status, tier="fast", model=MODEL, submitted_at=now,
        finished_at=now if status.is_final else None, attempts=1, **fields,
    )  # fmt: skip


def paid(job_id: str) -> JobResult:
    usage = Usage(prompt_tokens=10, completion_tokens=5, total_tokens=15)
    return record(job_id, JobStatus.SUCCEEDED, usage=usage, cost_usd=0.25)


def failed(job_id: str) -> JobResult:
    error = JobError(type="api_error", message="server error", retryable=True)
    return record(job_id, JobStatus.FAILED, error=error)


def claim(store: JobStore, job_id: str, token: str, generation: int = 0) -> None:
    running = record(job_id, JobStatus.RUNNING)
    assert store.claim(running, token, 30, '{"m": 1}', generation).claimed


def ledger(store: JobStore) -> dict[str, float]:
    now = datetime.now(UTC)
    rows = usage_report(store.redis, store.keys, now, now)
    assert len(rows) <= 1
    return rows[0].amounts if rows else {}


def test_a_settle_sent_again_after_a_lost_reply_answers_as_the_first_and_counts_once(
    store: JobStore,
) -> None:
    job_id = nonce()
    claim(store, job_id, "t1")
    assert store.settle(paid(job_id), "t1") is True
    # The same call again, as redis-py's retry sends it when the reply was lost.
    assert store.settle(paid(job_id), "t1") is True
    amounts = ledger(store)
    assert amounts["jobs"] == 1
    assert amounts["succeeded"] == 1
    assert amounts["prompt_tokens"] == 10
    assert amounts["cost_usd"] == pytest.approx(0.25)


def test_a_dead_letter_retried_to_success_counts_as_one_succeeded_job(store: JobStore) -> None:
    job_id = nonce()
    claim(store, job_id, "t1")
    assert store.settle(failed(job_id), "t1", dead_letter=True)
    assert ledger(store)["failed"] == 1
    assert JobControl(store).retry_dead(failed(job_id), 60) is not None
    claim(store, job_id, "t2", generation=1)
    assert store.settle(paid(job_id), "t2")
    amounts = ledger(store)
    assert amounts["jobs"] == 1
    assert amounts["failed"] == 0
    assert amounts["succeeded"] == 1


def test_a_paid_answer_after_its_job_was_failed_elsewhere_replaces_the_failure_and_bills_once(
    store: JobStore,
) -> None:
    job_id = nonce()
    claim(store, job_id, "old")
    # The old attempt's lease lapsed; another attempt took the job and failed it.
    store.redis.hset(store.key(job_id), "lease_until", "0")
    claim(store, job_id, "new")
    assert store.settle(failed(job_id), "new")
    # Then the old attempt's answer arrives: paid, so kept, and billed.
    assert store.settle(paid(job_id), "old")
    assert store.settle(paid(job_id), "old")  # and its replay bills nothing more
    amounts = ledger(store)
    assert amounts["jobs"] == 1
    assert amounts["failed"] == 0
    assert amounts["succeeded"] == 1
    assert amounts["prompt_tokens"] == 10


def test_an_answer_discarded_by_a_cancellation_is_still_billed_once(store: JobStore) -> None:
    job_id = nonce()
    claim(store, job_id, "t1")
    assert JobControl(store).cancel(record(job_id, JobStatus.RUNNING))[0] == "cancelled"
    assert store.settle(paid(job_id), "t1") is False  # the record stays cancelled
    assert store.settle(paid(job_id), "t1") is False
    amounts = ledger(store)
    assert amounts["prompt_tokens"] == 10  # the provider billed it, once
    assert amounts.get("jobs", 0) == 0  # no outcome recorded
