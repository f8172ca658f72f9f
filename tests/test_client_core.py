"""The client core without I/O: what a submission builds and decides, and how a wait proceeds.

`TierqClient` and `AsyncTierqClient` only carry these steps out against Redis and the broker;
the end-to-end tests (test_results.py, test_job_control.py, test_job_state.py) prove that with
the real thing. No Redis here: the core needs none.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.support import user
from tierq.core.errors import IdempotencyConflictError, InvalidJobError, JobNotFoundError
from tierq.core.jobcontrol import Reservation, fingerprint
from tierq.core.keys import Keys
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings
from tierq.producers.submission import Submission
from tierq.producers.waiting import SUBSCRIBE_BATCH, Waiter

KEYS = Keys("core-test:")


def build(count: int, keys: list[str | None] | None = None) -> Submission:
    requests = [{"model": "gpt-4o-mini", "messages": user(f"job {i}")} for i in range(count)]
    return Submission.build(Settings(_env_file=None), requests, keys, None)


def finished(job_id: str) -> JobResult:
    return JobResult(
        job_id=job_id,
        status=JobStatus.SUCCEEDED,
        tier="fast",
        model="gpt-4o-mini",
        submitted_at=datetime.now(UTC),
    )


def test_one_bad_request_fails_the_whole_submission() -> None:
    requests = [
        {"model": "gpt-4o-mini", "messages": user("fine")},
        {"model": "no-such-model", "messages": user("refused")},
    ]
    with pytest.raises(InvalidJobError):
        Submission.build(Settings(_env_file=None), requests, None, None)


def test_a_key_already_held_for_the_same_request_reuses_the_earlier_job() -> None:
    # Given two requests, the first with an idempotency key
    submission = build(2, ["key-1", None])
    first, second = submission.envelopes
    assert submission.key_claims() == [
        ("key-1", first.job_id, fingerprint(first.request, first.labels))
    ]

    # When the reservation says an earlier job holds the key
    conflict = submission.take([Reservation(job_id="earlier", new=False)])

    # Then that job stands for the first request, and only the second is sent
    assert conflict is None
    assert submission.job_ids == ["earlier", second.job_id]
    assert submission.to_send == [second]


def test_a_key_held_for_another_request_is_a_conflict() -> None:
    # Given two keyed requests, the first key newly taken, the second held for another request
    submission = build(2, ["key-1", "key-2"])
    first, _ = submission.envelopes
    reservations = [
        Reservation(job_id=first.job_id, new=True),
        Reservation(job_id="other", new=False, conflict=True),
    ]

    # When the reservations are taken
    conflict = submission.take(reservations)

    # Then the conflict names the key and its job, and the key newly taken is the one to free
    assert isinstance(conflict, IdempotencyConflictError)
    assert "key-2" in str(conflict)
    assert "other" in str(conflict)
    assert submission.new_keys == {first.job_id: "key-1"}


def test_a_publish_failing_part_way_names_the_jobs_that_may_run() -> None:
    submission = build(3)
    sent, maybe, unsent = submission.envelopes

    error = submission.publish_failed([sent.job_id], [maybe], [unsent], OSError("reset"))

    assert error.job_ids == [sent.job_id, maybe.job_id]
    assert "1 of 3 jobs were enqueued, 1 may have been" in str(error)
    assert "1 were not: reset" in str(error)


def test_a_waiter_first_checks_every_job_then_only_those_announced() -> None:
    # Given a wait on two jobs, subscribed to their channels
    waiter = Waiter(["a", "b"], 10, KEYS)
    assert waiter.subscriptions() == [[KEYS.done_channel("a"), KEYS.done_channel("b")]]
    assert waiter.to_check() == ["a", "b"]

    # When, before a recheck is due, a subscription confirmation and one job's end arrive
    waiter.heard({"type": "subscribe", "data": 1})
    waiter.heard({"type": "message", "data": b"b"})

    # Then only that job is read, once
    assert waiter.to_check() == ["b"]
    assert waiter.to_check() == []


def test_a_finished_job_leaves_the_wait_and_an_expired_record_stays_pending() -> None:
    waiter = Waiter(["a", "b", "c"], 10, KEYS)

    ended = waiter.finished_among(["a", "b", "c"], [b"succeeded", "failed", b"running"])
    records = waiter.finish([finished("a"), None])

    assert ended == ["a", "b"]
    assert [record.job_id for record in records] == ["a"]
    assert waiter.pending() == ["b", "c"]
    assert not waiter.done()


def test_a_job_without_a_record_is_not_found() -> None:
    with pytest.raises(JobNotFoundError):
        Waiter(["gone"], 10, KEYS).finished_among(["gone"], [None])


def test_many_channels_are_subscribed_a_batch_at_a_time() -> None:
    job_ids = [str(i) for i in range(SUBSCRIBE_BATCH + 1)]

    batches = Waiter(job_ids, 10, KEYS).subscriptions()

    assert [len(batch) for batch in batches] == [SUBSCRIBE_BATCH, 1]
