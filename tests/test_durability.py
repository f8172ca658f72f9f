"""TIERQ_DURABILITY: a submission returns only once Redis has made the job as durable as asked.

Real servers: a primary and a replica of the test's own (`redis-server --replicaof`), a real
worker, the simulator. The replica is frozen (SIGSTOP) to make a write it cannot confirm; the
waits are counted in the primary's own command statistics.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
import redis

from tests.support import eventually, job, nonce
from tierq import NotDurableError, TierqClient
from tierq.core.errors import ConfigurationError
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.devkit.local_redis import EmbeddedRedis

REPLICA_SYNC_TIMEOUT_SECONDS = 15.0


class Replicated:
    """A primary and one replica, both started by the test."""

    def __init__(self) -> None:
        self.primary = EmbeddedRedis().start()
        self.replica = EmbeddedRedis(
            arguments=("--replicaof", "127.0.0.1", str(self.primary.port))
        ).start()
        primary = redis.Redis.from_url(self.primary.url)
        eventually(
            lambda: (
                primary.info("replication").get("connected_slaves") == 1
                and redis.Redis.from_url(self.replica.url).info("replication")["master_link_status"]
                == "up"
            ),
            timeout=REPLICA_SYNC_TIMEOUT_SECONDS,
            what="the replica syncing with the primary",
        )

    def waits_sent(self, command: str = "wait") -> int:
        stats = redis.Redis.from_url(self.primary.url).info("commandstats")
        return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))

    def stop(self) -> None:
        self.replica.stop()
        self.primary.stop()


@pytest.fixture
def replicated() -> Iterator[Replicated]:
    servers = Replicated()
    yield servers
    servers.stop()


def client_settings(settings: Settings, primary_url: str, **overrides: object) -> Settings:
    return settings.model_copy(
        update={"redis_url": settings.redis_url.__class__(primary_url), **overrides}
    )


def test_a_durable_submission_is_on_the_replica_when_it_returns_and_the_worker_waits_too(
    replicated: Replicated, start_worker_with: object
) -> None:
    _, settings = start_worker_with(  # type: ignore[operator]
        "fast", TIERQ_REDIS_URL=replicated.primary.url, TIERQ_DURABILITY="replica"
    )
    replica = redis.Redis.from_url(replicated.replica.url)
    waits_before = replicated.waits_sent()
    with TierqClient(settings) as client:
        job_id = client.submit(**job(f"durable {nonce()}"))
        # Read from the replica at once: WAIT returned only after it had the job.
        assert replica.hget(client._store.key(job_id), "status") is not None
        assert client.wait(job_id, timeout=30).status is JobStatus.SUCCEEDED
    # One wait for the submission, one for the worker's claim, one for its answer.
    assert replicated.waits_sent() - waits_before >= 3


def test_a_submission_no_replica_confirms_raises_not_durable_and_can_be_sent_again(
    replicated: Replicated, settings: Settings
) -> None:
    durable = client_settings(
        settings,
        replicated.primary.url,
        durability="replica",
        durability_timeout_seconds=0.5,
    )
    key = f"order-{nonce()}"
    with TierqClient(durable) as client:
        # Control: with the replica streaming, the same submission is confirmed.
        client.submit(**job(f"confirmed {nonce()}"))
        assert replicated.replica.process is not None
        os.kill(replicated.replica.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            order = job(f"unconfirmed {nonce()}")
            with pytest.raises(NotDurableError) as refused:
                client.submit(**order, idempotency_key=key)
            assert time.monotonic() - started >= 0.5
            (job_id,) = refused.value.job_ids
            assert "0 of 1 replicas" in str(refused.value)
            # It was queued all the same: the error says it may run, not that it failed.
            assert client.get(job_id).status is JobStatus.QUEUED
        finally:
            os.kill(replicated.replica.process.pid, signal.SIGCONT)
        # Sending it again with its key names the same job, and enqueues nothing more.
        assert client.submit(**order, idempotency_key=key) == job_id


def test_memory_durability_sends_no_wait(replicated: Replicated, settings: Settings) -> None:
    # Control: the same submission under `replica` is followed by a WAIT.
    before = replicated.waits_sent()
    with TierqClient(client_settings(settings, replicated.primary.url, durability="replica")) as c:
        c.submit(**job(f"waited {nonce()}"))
    assert replicated.waits_sent() == before + 1
    with TierqClient(client_settings(settings, replicated.primary.url)) as client:
        client.submit(**job(f"not waited {nonce()}"))
    assert replicated.waits_sent() == before + 1


def test_aof_durability_uses_waitaof_or_says_which_redis_it_needs(
    replicated: Replicated, settings: Settings
) -> None:
    version = redis.Redis.from_url(replicated.primary.url).info("server")["redis_version"]
    aof = client_settings(settings, replicated.primary.url, durability="aof")
    with TierqClient(aof) as client:
        if tuple(int(part) for part in version.split(".")[:2]) >= (7, 2):
            pytest.skip(f"Redis {version} has WAITAOF; this machine's is checked for the refusal")
        with pytest.raises(ConfigurationError, match=r"WAITAOF \(Redis 7\.2 or newer\)"):
            client.submit(**job(f"aof {nonce()}"))


def test_replica_durability_needs_a_replica_to_wait_for() -> None:
    with pytest.raises(ValueError, match="TIERQ_DURABILITY_REPLICAS of 1 or more"):
        Settings(_env_file=None, durability="replica", durability_replicas=0)  # type: ignore[call-arg]
