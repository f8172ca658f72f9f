"""A primary that dies is replaced: Redis Sentinel promotes its replica, and clients that ask
the Sentinels follow it without losing what the replica had confirmed. With
`TIERQ_DURABILITY=replica`, producers and workers connected through the Sentinels lose no
acknowledged job and pay for none twice when the primary dies mid-run.

Each test runs a cluster of its own (`tierq.devkit.sentinel_cluster`): a primary with a
password and append-only persistence, its replica(s), and three Sentinels (quorum 2, a primary
down after 1 s), all real `redis-server` processes on free loopback ports.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.sentinel

from tests.support import (
    Fleet,
    SimulatorFactory,
    clean_environment,
    eventually,
    job,
    logged,
    nonce,
    settings_for,
)
from tierq.core.errors import BrokerUnavailableError, JobWaitTimeout
from tierq.core.jobstore import connect
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings
from tierq.devkit.processes import ManagedProcess
from tierq.devkit.sentinel_cluster import ClusterError, SentinelCluster
from tierq.producers.client import TierqClient

pytestmark = pytest.mark.slow

# How long a failover may take: 1 s until a Sentinel suspects the primary, then agreement, a
# leader election and the promotion (a few seconds on a loaded machine).
FAILOVER_TIMEOUT_SECONDS = 30


@pytest.fixture
def cluster() -> Iterator[SentinelCluster]:
    with SentinelCluster() as started:
        yield started


def test_a_sentinel_client_follows_the_primary_through_a_failover(
    cluster: SentinelCluster,
) -> None:
    # Given a client that finds the primary through the Sentinels, and a write the replica
    # confirmed (WAIT: one replica has it)
    sentinel = redis.sentinel.Sentinel(cluster.sentinel_addresses, socket_timeout=1)
    primary = sentinel.master_for(cluster.master_name, password=cluster.password, socket_timeout=1)
    first = cluster.primary
    assert primary.set("before", "kept")
    assert primary.wait(1, 1_000) == 1

    # When the primary dies outright and the Sentinels promote the replica
    cluster.kill_primary()
    promoted = cluster.wait_for_failover(timeout=FAILOVER_TIMEOUT_SECONDS)

    # Then the same client object writes to the new primary and reads the earlier write back
    assert promoted != first
    assert primary.set("after", "written")
    assert primary.get("before") == b"kept"
    assert primary.get("after") == b"written"
    host, port = sentinel.discover_master(cluster.master_name)
    assert f"{host}:{port}" == promoted
    assert cluster.server(int(port)).role()[0] == "master"
    primary.close()
    for client in sentinel.sentinels:
        client.close()


def test_a_cluster_process_that_dies_unasked_is_named_with_its_log() -> None:
    # Given a cluster, one of whose Sentinels dies without the harness being asked to kill it
    with SentinelCluster() as cluster:
        doomed = next(iter(cluster.sentinel_processes.values()))
        doomed.signal(signal.SIGKILL)

        # Then the next wait fails at once, naming that process and showing its log
        with pytest.raises(ClusterError) as failure:
            cluster.wait_for_failover(timeout=5)

    message = str(failure.value)
    assert f"{doomed.name} exited" in message
    assert "SIGKILL" in message
    assert "monitor master tierq" in message  # its own log, as the Sentinel wrote it


def sentinel_settings(cluster: SentinelCluster, **overrides: str) -> Settings:
    """tierq's settings for `cluster`: the Sentinels, and a URL giving only password and db."""
    return settings_for(
        {
            **clean_environment(),
            "TIERQ_REDIS_URL": f"redis://:{cluster.password}@ignored:6379/0",
            "TIERQ_REDIS_SENTINELS": json.dumps(cluster.sentinels),
            "TIERQ_REDIS_SENTINEL_MASTER": cluster.master_name,
            **overrides,
        }
    )


def test_a_job_store_command_in_flight_when_the_primary_dies_follows_the_failover(
    cluster: SentinelCluster,
) -> None:
    # (redis-py 8.1 alone retries at the address the connection last had, the dead primary's:
    # redis/redis-py#3874; tierq's FollowingConnection asks the Sentinels on each reconnect.)
    # Given the job store's client (the one workers use: ~10 s of retries on connection
    # errors), connected through the Sentinels, with a command in flight (a pipeline that
    # blocks for 3 s, as a claim's WAIT may)
    store = connect(sentinel_settings(cluster))
    assert store.ping()
    dead_port = cluster.primary_port

    def in_flight() -> list[Any]:
        pipe = store.pipeline(transaction=False)
        pipe.blpop(["nothing-arrives"], timeout=3)
        pipe.set("written-after", "yes")
        return pipe.execute()

    with ThreadPoolExecutor(1) as pool:
        command = pool.submit(in_flight)
        time.sleep(0.3)  # the pipeline is sent and waiting for its answer

        # When the primary dies and the Sentinels promote the replica (in about 2 s, well
        # within the client's retries)
        cluster.kill_primary()
        cluster.wait_for_failover(timeout=FAILOVER_TIMEOUT_SECONDS)

        # Then the command is retried at the new primary and succeeds
        try:
            replies = command.result(timeout=30)
        except redis.ConnectionError as error:
            pytest.fail(f"retried at the dead primary (port {dead_port}) after failover: {error}")
    assert replies == [None, True]
    assert cluster.server(cluster.primary_port).get("written-after") == "yes"
    store.close()


# --- tierq through a failover ------------------------------------------------------------------

# 60 jobs of 1.5 s each, submitted one every 0.1 s by an app thread, run by 2 workers of 10
# threads: the primary dies with calls in flight, submissions under way and jobs still queued.
JOBS = 60
LATENCY_MS = 1_500
SUBMIT_PACE_SECONDS = 0.1
WORKERS = 2
WORKER_THREADS = 10
# The primary dies once this many submissions were acknowledged and this many calls run.
KILL_AFTER_ACKNOWLEDGED = 20
KILL_WITH_RUNNING = 5
# Copies of a running job that a failover hands out again are put off for a lease: 10 s keeps
# their return within the test.
LEASE_SECONDS = 10
LOG_TAIL_CHARS = 4_000


@pytest.fixture
def replicated_cluster() -> Iterator[SentinelCluster]:
    """Two replicas: after the failover one is left to confirm writes (`TIERQ_DURABILITY=
    replica`), as a production cluster of three data servers has."""
    with SentinelCluster(replicas=2) as started:
        yield started


@dataclass
class Submissions:
    """What the app's submitting thread learned: each idempotency key acknowledged (its job
    id) or refused (the error)."""

    acknowledged: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def job_ids(self) -> list[str]:
        with self.lock:
            return list(self.acknowledged.values())


def submit_paced(
    client: TierqClient, requests: dict[str, dict[str, Any]], record: Submissions
) -> None:
    """Submit each request under its idempotency key, one every SUBMIT_PACE_SECONDS, noting
    which were acknowledged and which raised `BrokerUnavailableError` (or `NotDurableError`)."""
    for key, request in requests.items():
        try:
            job_id = client.submit(request, idempotency_key=key)
        except BrokerUnavailableError as error:
            with record.lock:
                record.refused[key] = f"{type(error).__name__}: {error}"
        else:
            with record.lock:
                record.acknowledged[key] = job_id
        time.sleep(SUBMIT_PACE_SECONDS)


def resubmit(
    client: TierqClient, requests: dict[str, dict[str, Any]], keys: list[str]
) -> dict[str, str]:
    """What a careful app does with refused submissions: submit them again with the same
    idempotency keys until each is acknowledged (bounded); their job ids by key."""
    acknowledged: dict[str, str] = {}

    def still_refused() -> list[str]:
        for key in keys:
            if key not in acknowledged:
                with contextlib.suppress(BrokerUnavailableError):
                    acknowledged[key] = client.submit(requests[key], idempotency_key=key)
        return [key for key in keys if key not in acknowledged]

    eventually(still_refused, until=lambda left: not left, what="resubmissions", timeout=60)
    return acknowledged


def running(client: TierqClient, job_ids: list[str]) -> int:
    records = client.get_many(job_ids) if job_ids else []
    return sum(r is not None and r.status is JobStatus.RUNNING for r in records)


def wait_for_all(
    client: TierqClient, job_ids: dict[str, str], workers: list[ManagedProcess], timeout: float
) -> list[JobResult]:
    """Every job's final record, in the order of `job_ids` (by idempotency key); on a timeout,
    an AssertionError naming each unfinished job, its record and what the workers logged."""
    try:
        return client.wait_many(list(job_ids.values()), timeout=timeout)
    except JobWaitTimeout:
        pending = {
            key: record
            for key, record in zip(job_ids, client.get_many(list(job_ids.values())), strict=True)
            if record is None or not record.status.is_final
        }
        lines = [f"{len(pending)} job(s) unfinished after {timeout}s:"]
        for key, record in pending.items():
            state = (
                "gone" if record is None else f"{record.status.value}, attempts {record.attempts}"
            )
            lines.append(f"- key {key}, job {job_ids[key]}: {state}")
            for worker in workers:
                lines += [
                    f"    {worker.name}: {line[:300]}" for line in mentions(worker, job_ids[key])
                ]
        raise AssertionError("\n".join(lines)) from None


def mentions(process: ManagedProcess, text: str) -> list[str]:
    return [line for line in process.log_text().splitlines() if text in line]


def finished_after(process: ManagedProcess, offset: int) -> list[str]:
    """The job ids of `process`'s `job.finished` (succeeded) lines written past `offset`."""
    with process.log_path.open("rb") as log:
        log.seek(offset)
        lines = log.read().decode(errors="replace").splitlines()
    events = [json.loads(line) for line in lines if line.startswith("{")]
    return [
        str(event["job_id"])
        for event in events
        if event.get("event") == "job.finished" and event.get("status") == "succeeded"
    ]


def copies_dropped(workers: list[ManagedProcess], job_ids: list[str]) -> bool:
    """Whether every copy of these jobs a worker put off (a redelivery while the job ran) has
    come back and been dropped: only then may the calls be counted."""
    for job_id in job_ids:
        put_off = sum(len(logged(w, "job.duplicate_delivery", job_id=job_id)) for w in workers)
        dropped = sum(len(logged(w, "job.already_finished", job_id=job_id)) for w in workers)
        if dropped < put_off:
            return False
    return True


@contextlib.contextmanager
def logs_shown_on_failure(
    cluster: SentinelCluster, workers: list[ManagedProcess]
) -> Iterator[None]:
    try:
        yield
    except BaseException:
        print(cluster.log_tails())
        for worker in workers:
            state = "running" if worker.alive() else "exited"
            print(f"--- {worker.name} pid {worker.pid}, {state}, log tail:")
            print(worker.log_text()[-LOG_TAIL_CHARS:])
        raise


@pytest.mark.timeout(300)
def test_a_primary_failover_mid_run_loses_no_acknowledged_job_and_pays_for_each_once(
    replicated_cluster: SentinelCluster,
    start_simulator_with: SimulatorFactory,
    start_fleet: Fleet,
) -> None:
    # Given workers, producers and the cluster's Sentinels, with durability=replica (a job is
    # acknowledged, claimed and answered only once a replica has it), and a slow API
    cluster = replicated_cluster
    simulator = start_simulator_with("--latency-ms", str(LATENCY_MS))
    workers, settings = start_fleet(
        workers=WORKERS,
        concurrency=WORKER_THREADS,
        base_url=simulator.base_url,
        TIERQ_REDIS_URL=f"redis://:{cluster.password}@ignored:6379/0",
        TIERQ_REDIS_SENTINELS=json.dumps(cluster.sentinels),
        TIERQ_REDIS_SENTINEL_MASTER=cluster.master_name,
        TIERQ_DURABILITY="replica",
        TIERQ_DURABILITY_REPLICAS="1",
        TIERQ_DURABILITY_TIMEOUT_SECONDS="2",
        TIERQ_REQUEST_TIMEOUT_SECONDS="30",
        TIERQ_LEASE_SECONDS=str(LEASE_SECONDS),
    )
    pids = [worker.pid for worker in workers]
    requests = {key: job(f"{key} failover") for key in (nonce() for _ in range(JOBS))}
    record = Submissions()
    with (
        logs_shown_on_failure(cluster, workers),
        TierqClient(settings) as client,
        ThreadPoolExecutor(1) as app,
    ):
        # When an app thread submits the jobs one by one and, mid-run, with calls in flight,
        # the primary dies outright and the Sentinels promote a replica
        submitting = app.submit(submit_paced, client, requests, record)
        in_flight = eventually(
            lambda: running(client, record.job_ids()),
            until=lambda n: (
                n >= KILL_WITH_RUNNING and len(record.job_ids()) >= KILL_AFTER_ACKNOWLEDGED
            ),
            what=f"{KILL_AFTER_ACKNOWLEDGED} jobs acknowledged and {KILL_WITH_RUNNING} running",
            timeout=60,
        )
        killed = time.monotonic()
        cluster.kill_primary()
        cluster.wait_for_failover(timeout=FAILOVER_TIMEOUT_SECONDS)
        failover_seconds = time.monotonic() - killed
        log_marks = [worker.log_path.stat().st_size for worker in workers]
        submitting.result(timeout=120)

        # and submits again, under the same keys, what was refused
        refused = dict(record.refused)
        job_ids = {**record.acknowledged, **resubmit(client, requests, list(refused))}
        print(  # what the app saw, for the record (and for a failure's report)
            f"\nsubmissions: acknowledged={len(record.acknowledged)} refused={refused} "
            f"running_at_kill={in_flight} failover={failover_seconds:.1f}s"
        )
        results = wait_for_all(client, job_ids, workers, timeout=120)
        # Submitting an acknowledged job again finds it: its idempotency key survived too
        again = {
            key: client.submit(requests[key], idempotency_key=key) for key in record.acknowledged
        }
        eventually(
            lambda: copies_dropped(workers, list(job_ids.values())),
            what="copies put off during the failover coming back and being dropped",
            timeout=3 * LEASE_SECONDS,
        )
        calls = simulator.http.get("/sim/requests").json()["data"]
        after = [
            finished_after(worker, mark) for worker, mark in zip(workers, log_marks, strict=True)
        ]

        print(  # the figures of this run, for the record
            f"sentinel failover: jobs={JOBS} acknowledged={len(record.acknowledged)} "
            f"refused={len(refused)} running_at_kill={in_flight} "
            f"failover={failover_seconds:.1f}s api_calls={len(calls)} "
            f"finished_after_failover={[len(a) for a in after]}"
        )
        # Then every job, acknowledged before the failover or after, succeeded: one result,
        # one call to the API, one finished line
        assert len(job_ids) == JOBS
        assert again == record.acknowledged
        assert [r.status for r in results] == [JobStatus.SUCCEEDED] * JOBS
        for key, job_id in job_ids.items():
            assert len([c for c in calls if key in str(c["body"])]) == 1, key
            finished = sum(len(logged(w, "job.finished", job_id=job_id)) for w in workers)
            assert finished == 1, job_id
        assert len(calls) == JOBS
        # (durability=replica was in force: the new primary was asked to WAIT for its replica)
        assert cluster.server(cluster.primary_port).info("commandstats")["cmdstat_wait"]["calls"]
        # and the same worker processes, never restarted, finished jobs after the failover
        assert [worker.pid for worker in workers] == pids
        assert all(worker.alive() for worker in workers)
        assert all(after), "a worker finished no job after the failover"
