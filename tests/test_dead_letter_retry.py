"""`tierq retry` for many dead letters at once: after a 429 storm or an outage, every job that
ran out of attempts runs again, without a shell loop over `tierq dead`."""

from __future__ import annotations

import json

from tests.support import Fleet, env_of, nonce, run_tierq, user
from tierq.core.exit_codes import ExitCode
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.producers.client import TierqClient


def dead_letters(client: TierqClient, count: int) -> list[str]:
    """`count` new dead letters: each job's one attempt meets a 500 (the next call succeeds)."""
    job_ids = client.submit_many(
        [
            {"model": "gpt-4o-mini", "messages": user(f"{nonce()} [sim fail=500 times=1]")}
            for _ in range(count)
        ]
    )
    for record in client.wait_many(job_ids, timeout=30):
        assert record.status is JobStatus.FAILED
    assert set(job_ids) <= {record.job_id for record in client.dead_letters()}
    return job_ids


def one_attempt_fleet(start_fleet: Fleet) -> Settings:
    """A fast-tier worker of its own whose jobs have one attempt: a 500 makes a dead letter."""
    _, settings = start_fleet("fast", TIERQ_RETRY__MAX_ATTEMPTS="1")
    return settings


def test_retry_all_dead_runs_every_dead_letter_again(
    start_fleet: Fleet, worker_env: dict[str, str]
) -> None:
    settings = one_attempt_fleet(start_fleet)
    env = {**worker_env, **env_of(settings)}
    with TierqClient(settings) as client:
        dead = dead_letters(client, 3)

        done = run_tierq(env, "retry", "--all-dead")

        assert done.returncode == 0, done.stderr
        assert sorted(done.stdout.split()) == sorted(dead)
        assert done.stderr.strip() == "retried 3 dead letters"
        for record in client.wait_many(dead, timeout=30):
            assert record.status is JobStatus.SUCCEEDED
            assert record.attempts == 1
    assert json.loads(run_tierq(env, "dead", "--json").stdout) == []
    nothing = run_tierq(env, "retry", "--all-dead")
    assert (nothing.returncode, nothing.stdout, nothing.stderr) == (0, "", "no dead letters\n")


def test_retry_takes_several_ids_and_names_those_it_could_not_retry(
    start_fleet: Fleet, worker_env: dict[str, str]
) -> None:
    settings = one_attempt_fleet(start_fleet)
    env = {**worker_env, **env_of(settings)}
    with TierqClient(settings) as client:
        first, second = dead_letters(client, 2)
        answered = client.submit(model="gpt-4o-mini", messages=user(nonce()))
        assert client.wait(answered, timeout=30).status is JobStatus.SUCCEEDED

        done = run_tierq(env, "retry", first, answered, second, "no-such-job")

        # Every dead letter named runs again; the others are named, the first one's code
        assert done.stdout.split() == [first, second]
        assert done.returncode == ExitCode.INVALID
        assert f"error: job '{answered}' is not a dead letter (status: succeeded)" in done.stderr
        assert "error: no job 'no-such-job'" in done.stderr
        for record in client.wait_many([first, second], timeout=30):
            assert record.status is JobStatus.SUCCEEDED


def test_retry_wants_job_ids_or_all_dead(worker_env: dict[str, str]) -> None:
    neither = run_tierq(worker_env, "retry")
    both = run_tierq(worker_env, "retry", "some-job", "--all-dead")

    assert neither.returncode == both.returncode == ExitCode.INVALID
    assert "name the jobs to retry (JOB_ID...), or give --all-dead" in neither.stderr
    assert "give JOB_ID... or --all-dead, not both" in both.stderr
