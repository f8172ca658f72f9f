"""The gateway's quota of jobs in flight per tenant (producers/gateway/quota.py), against the
real Redis: reservations are atomic, a refusal costs the same whatever the tenant has in
flight, jobs leave in the scripts that end them, and a dead submitter's reservation lapses.

Each test works under key and queue prefixes of its own, so no worker or other test sees its
jobs unless it means them to.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import pytest
import redis
import redis.asyncio

from tests.support import (
    GatewayFactory,
    create_api_key,
    eventually,
    gateway_client,
    in_flight,
    job,
    nonce,
    refused_with,
    unique_tenant,
)
from tierq.core import scripts
from tierq.core.errors import BrokerUnavailableError, TenantQuotaExceededError
from tierq.core.jobstore import JobStore
from tierq.core.keys import Keys
from tierq.core.results import JobStatus
from tierq.devkit.processes import ManagedProcess
from tierq.producers.client import TierqClient
from tierq.producers.gateway.quota import OLDEST_CHECKED, Reservation, TenantQuota

T = TypeVar("T")

LIMIT = 10
CONTENDERS = 50
# What a submission takes between the quota's check and its record of the jobs (the gateway
# validates and publishes them meanwhile): the window concurrent submissions race in.
SUBMISSION_SECONDS = 0.02
RESULT_TTL_SECONDS = 600


@pytest.fixture
def keys() -> Keys:
    """Key names of this test's own (no other test or worker reads them)."""
    return Keys(f"quota-{nonce()}:")


def with_quota(
    redis_url: str,
    keys: Keys,
    limit: int,
    scenario: Callable[[TenantQuota], Awaitable[T]],
    *,
    reservation_seconds: float = 120.0,
) -> T:
    """Run `scenario` with a `TenantQuota` as a gateway builds it, on its own event loop."""

    async def run() -> T:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            quota = TenantQuota(
                client, keys, limit, RESULT_TTL_SECONDS, reservation_seconds=reservation_seconds
            )
            return await scenario(quota)
        finally:
            await client.aclose()

    return asyncio.run(run())


def queued_jobs(client: redis.Redis, keys: Keys, count: int) -> list[str]:
    """`count` job records, queued (what `submit_many` leaves before the quota hears of them)."""
    job_ids = [uuid.uuid4().hex for _ in range(count)]
    with client.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.hset(keys.job(job_id), "status", JobStatus.QUEUED.value)
            pipe.expire(keys.job(job_id), RESULT_TTL_SECONDS)
        pipe.execute()
    return job_ids


def in_flight_with(client: redis.Redis, keys: Keys, job_ids: list[str], tenant: str) -> None:
    """Put jobs among the tenant's jobs in flight, oldest first (as many submissions would)."""
    start = time.time() - len(job_ids)
    client.zadd(keys.tenant_in_flight(tenant), {j: start + i for i, j in enumerate(job_ids)})


def no_reservation_left(client: redis.Redis, keys: Keys, tenant: str) -> bool:
    reservation_keys = (keys.tenant_reservations(tenant), keys.tenant_reserved(tenant))
    return client.exists(*reservation_keys) == 0


async def try_reserve(quota: TenantQuota, tenant: str, jobs: int) -> Reservation | None:
    try:
        return await quota.reserve(tenant, jobs)
    except TenantQuotaExceededError:
        return None


# --- atomicity ---------------------------------------------------------------------------------


def test_concurrent_submissions_never_take_a_tenant_past_its_quota(
    redis_url: str, redis_client: redis.Redis, keys: Keys
) -> None:
    tenant = unique_tenant()
    job_ids = queued_jobs(redis_client, keys, CONTENDERS)

    # Given the old check-then-add, done by hand: 50 concurrent submissions of one tenant
    # (limit 10) each count the set, submit, then add their job
    async def check_then_add() -> int:
        client = redis.asyncio.Redis.from_url(redis_url)
        key = keys.tenant_in_flight(unique_tenant())

        async def submit(job_id: str) -> bool:
            if int(await client.zcard(key)) + 1 > LIMIT:
                return False
            await asyncio.sleep(SUBMISSION_SECONDS)
            await client.zadd(key, {job_id: time.time()})
            return True

        try:
            return sum(await asyncio.gather(*(submit(job_id) for job_id in job_ids)))
        finally:
            await client.aclose()

    # Then they overshoot: each counted before the others added
    assert asyncio.run(check_then_add()) > LIMIT

    # When the same 50 reserve first, submit, then fill their reservations
    async def reserve_then_fill(quota: TenantQuota) -> int:
        async def submit(job_id: str) -> bool:
            reservation = await try_reserve(quota, tenant, 1)
            if reservation is None:
                return False
            async with reservation:
                await asyncio.sleep(SUBMISSION_SECONDS)
                await reservation.fill([job_id])
            return True

        return sum(await asyncio.gather(*(submit(job_id) for job_id in job_ids)))

    admitted = with_quota(redis_url, keys, LIMIT, reserve_then_fill)

    # Then exactly the quota is admitted, all of it in flight, and no reservation is left over
    assert admitted == LIMIT
    assert redis_client.zcard(keys.tenant_in_flight(tenant)) == LIMIT
    assert no_reservation_left(redis_client, keys, tenant)


def test_concurrent_submissions_of_several_jobs_are_admitted_whole_or_refused_whole(
    redis_url: str, redis_client: redis.Redis, keys: Keys
) -> None:
    tenant = unique_tenant()
    sizes = list(itertools.islice(itertools.cycle([1, 2, 3]), CONTENDERS))
    job_ids = queued_jobs(redis_client, keys, sum(sizes))
    chunks = [job_ids[sum(sizes[:i]) : sum(sizes[: i + 1])] for i in range(len(sizes))]

    async def scenario(quota: TenantQuota) -> list[int]:
        async def submit(chunk: list[str]) -> int:
            reservation = await try_reserve(quota, tenant, len(chunk))
            if reservation is None:
                return 0
            async with reservation:
                await asyncio.sleep(SUBMISSION_SECONDS)
                await reservation.fill(chunk)
            return len(chunk)

        return await asyncio.gather(*(submit(chunk) for chunk in chunks))

    admitted = with_quota(redis_url, keys, LIMIT, scenario)

    assert sum(admitted) <= LIMIT
    assert sum(admitted) > LIMIT - max(sizes)  # refused only for want of room
    assert redis_client.zcard(keys.tenant_in_flight(tenant)) == sum(admitted)
    assert no_reservation_left(redis_client, keys, tenant)


def test_a_partial_reservation_takes_what_room_there_is(
    redis_url: str, redis_client: redis.Redis, keys: Keys
) -> None:
    # Given a tenant with 7 of its 10 slots taken
    tenant = unique_tenant()
    in_flight_with(redis_client, keys, queued_jobs(redis_client, keys, 7), tenant)

    async def scenario(quota: TenantQuota) -> tuple[int, bool, bool]:
        # When a batch asks for as many as there is room for, up to 200
        reservation = await quota.reserve(tenant, 200, partial=True)
        # Then it holds the 3 left, and nothing more fits, even partially
        full = await try_reserve(quota, tenant, 1) is None
        try:
            await quota.reserve(tenant, 5, partial=True)
            refused = False
        except TenantQuotaExceededError as error:
            refused = (error.in_flight, error.limit) == (LIMIT, LIMIT)
        await reservation.release()
        return reservation.slots, full, refused

    assert with_quota(redis_url, keys, LIMIT, scenario) == (3, True, True)
    assert no_reservation_left(redis_client, keys, tenant)


def test_a_failed_submission_gives_its_room_back_but_keeps_what_the_broker_may_run(
    redis_url: str, redis_client: redis.Redis, keys: Keys
) -> None:
    tenant = unique_tenant()
    maybe_enqueued = queued_jobs(redis_client, keys, 2)

    async def scenario(quota: TenantQuota) -> None:
        # A submission refused outright (validation, Redis): nothing enqueued, room given back
        with pytest.raises(ValueError, match="refused"):
            async with await quota.reserve(tenant, 4):
                raise ValueError("refused")
        # A publish that failed part-way: the jobs it names will run, and stay counted
        with pytest.raises(BrokerUnavailableError):
            async with await quota.reserve(tenant, 4):
                raise BrokerUnavailableError("broker lost", job_ids=maybe_enqueued)

    with_quota(redis_url, keys, LIMIT, scenario)

    in_flight_now = redis_client.zrange(keys.tenant_in_flight(tenant), 0, -1)
    assert {job_id.decode() for job_id in in_flight_now} == set(maybe_enqueued)
    assert no_reservation_left(redis_client, keys, tenant)


def test_a_job_that_ended_before_its_submission_reported_back_is_not_counted(
    redis_url: str, redis_client: redis.Redis, keys: Keys
) -> None:
    # Given a job a fast worker finished (and took out of the set) before the gateway confirms
    tenant = unique_tenant()
    (done, running) = queued_jobs(redis_client, keys, 2)
    redis_client.hset(keys.job(done), "status", JobStatus.SUCCEEDED.value)

    async def scenario(quota: TenantQuota) -> None:
        async with await quota.reserve(tenant, 2) as reservation:
            await reservation.fill([done, running])

    with_quota(redis_url, keys, LIMIT, scenario)

    # Then only the job still in flight joins the set: the finished one would never leave it
    assert redis_client.zrange(keys.tenant_in_flight(tenant), 0, -1) == [running.encode()]


# --- cost --------------------------------------------------------------------------------------


def commands_on(client: redis.Redis, keys: Keys, action: Callable[[], object]) -> list[str]:
    """The commands Redis ran on `keys`' names while `action` ran, those a script ran included
    (MONITOR shows them), in this test's database."""
    db = int(client.connection_pool.connection_kwargs.get("db", 0))
    end = f"end-{nonce()}"
    seen: list[str] = []
    with client.monitor() as monitor:
        action()
        client.echo(end)
        while True:
            command = monitor.next_command()
            text = str(command["command"])
            if end in text:
                return seen
            if int(command["db"]) == db and keys.prefix in text:
                seen.append(text)


def test_a_refusal_costs_a_bounded_number_of_commands_whatever_the_tenant_has_in_flight(
    redis_url: str, redis_client: redis.Redis, keys: Keys
) -> None:
    def refusal_commands(jobs_in_flight: int) -> int:
        tenant = unique_tenant()
        in_flight_with(redis_client, keys, queued_jobs(redis_client, keys, jobs_in_flight), tenant)

        def refused() -> None:
            async def scenario(quota: TenantQuota) -> None:
                with pytest.raises(TenantQuotaExceededError):
                    await quota.reserve(tenant, 1)

            with_quota(redis_url, keys, jobs_in_flight, scenario)

        return len(commands_on(redis_client, keys, refused))

    # (The script loaded beforehand, so no first run pays a NOSCRIPT round.)
    redis_client.script_load(scripts.source("quota_reserve"))

    # Given the old sweep's way of counting (a status read of every member), measured the same
    # way: the measure sees a cost that grows with the jobs in flight
    tenant = unique_tenant()
    members = queued_jobs(redis_client, keys, 5_000)
    in_flight_with(redis_client, keys, members, tenant)

    def old_sweep() -> None:
        ids = redis_client.zrange(keys.tenant_in_flight(tenant), 0, -1)
        with redis_client.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(keys.job(job_id.decode()), "status")
            pipe.execute()

    assert len(commands_on(redis_client, keys, old_sweep)) > 5_000

    # When a tenant at its quota is refused, with 50 and with 5,000 jobs in flight
    few, many = refusal_commands(50), refusal_commands(5_000)

    # Then both cost the same few commands: the script, its counts, and a look at the oldest
    assert few == many
    assert many <= OLDEST_CHECKED + 10, many


def test_a_refusal_drops_a_bounded_number_of_lost_jobs_each_time(
    redis_url: str, redis_client: redis.Redis, keys: Keys
) -> None:
    # Given 30 jobs in flight whose records expired without their ending (lost), 2 live ones
    tenant = unique_tenant()
    lost = [uuid.uuid4().hex for _ in range(30)]
    live = queued_jobs(redis_client, keys, 2)
    in_flight_with(redis_client, keys, lost + live, tenant)
    key = keys.tenant_in_flight(tenant)

    async def scenario(quota: TenantQuota) -> tuple[Reservation | None, int, Reservation | None]:
        # When the tenant asks for room, twice
        first = await try_reserve(quota, tenant, 1)
        after_first = int(redis_client.zcard(key))
        second = await try_reserve(quota, tenant, 1)
        return first, after_first, second

    first, after_first, second = with_quota(redis_url, keys, 5, scenario)

    # Then the first is refused, having dropped only the oldest OLDEST_CHECKED of them; the
    # second drops the rest and is admitted; the live jobs stay
    assert first is None
    assert after_first == 32 - OLDEST_CHECKED
    assert second is not None
    assert {m.decode() for m in redis_client.zrange(key, 0, -1)} == set(live)


# --- end to end --------------------------------------------------------------------------------


def test_jobs_that_succeed_fail_or_are_cancelled_free_their_slots_without_a_sweep(
    start_gateway_with: GatewayFactory, workers: dict[str, ManagedProcess]
) -> None:
    # Given a gateway with a quota of 4, in front of the session's workers
    root, settings = start_gateway_with(TIERQ_GATEWAY__TENANT_MAX_IN_FLIGHT="4")
    tenant = unique_tenant()
    with gateway_client(root, create_api_key(settings, tenant)) as http:
        # When the tenant fills it with a job that succeeds, one that fails, one that fails
        # until its attempts run out (a dead letter), and a slow one it cancels
        # (each slow enough to be in flight when counted: a free worker would finish a fast
        # one before the count is read)
        bodies = {
            "succeeded": job(f"{nonce()} [sim latency_ms=1500]"),
            "failed": job(f"{nonce()} [sim fail=400 latency_ms=1500]"),
            "dead": job(f"{nonce()} [sim fail=500 latency_ms=1500]"),
            "cancelled": job(f"{nonce()} [sim latency_ms=2500]"),
        }
        ids = {name: http.post("/v1/jobs", json=body).json()["id"] for name, body in bodies.items()}
        assert in_flight(settings, tenant) == 4
        assert http.delete(f"/v1/jobs/{ids['cancelled']}").json()["status"] == "cancelled"
        ended = {
            name: http.get(f"/v1/jobs/{job_id}", params={"wait": 60}, timeout=70).json()
            for name, job_id in ids.items()
        }
        # Then each ended as meant ...
        assert {name: record["status"] for name, record in ended.items()} == {
            "succeeded": "succeeded",
            "failed": "failed",
            "dead": "failed",
            "cancelled": "cancelled",
        }
        with redis.Redis.from_url(settings.redis_url.get_secret_value()) as client:
            assert client.zscore(Keys(settings.key_prefix).dead, ids["dead"]) is not None
        # ... and left the set in the step that ended it: nothing was ever refused, so no
        # refusal's look at the oldest jobs took them out
        assert in_flight(settings, tenant) == 0

        # And the quota still holds: four slow jobs fill it, a fifth is refused
        slow = [
            http.post("/v1/jobs", json=job(f"{nonce()} [sim latency_ms=3000]")).json()["id"]
            for _ in range(4)
        ]
        refused = http.post("/v1/jobs", json=job())
        refused_with(refused, 429)
        assert refused.headers["retry-after"]
        for job_id in slow:
            http.delete(f"/v1/jobs/{job_id}")
        assert in_flight(settings, tenant) == 0
        assert http.post("/v1/jobs", json=job()).status_code == 202


def test_a_retried_dead_letter_is_in_flight_again_until_it_ends(
    start_gateway_with: GatewayFactory,
) -> None:
    # Given a gateway on queues no worker reads, and a tenant's job there
    prefix = f"quota-{nonce()}"
    root, settings = start_gateway_with(
        TIERQ_QUEUE_PREFIX=f"{prefix}.", TIERQ_KEY_PREFIX=f"{prefix}:"
    )
    tenant = unique_tenant()
    with gateway_client(root, create_api_key(settings, tenant)) as http:
        job_id = http.post("/v1/jobs", json=job()).json()["id"]
        assert in_flight(settings, tenant) == 1

        # When its last attempt fails into the dead letters (the worker's own settle)
        with TierqClient(settings) as client:
            store = JobStore.from_settings(settings, client.redis)
            record = store.get(job_id)
            assert record is not None
            dead = record.model_copy(update={"status": JobStatus.FAILED, "attempts": 4})
            assert store.settle(dead, None, dead_letter=True)
            # Then it leaves the tenant's jobs in flight
            assert in_flight(settings, tenant) == 0

            # When an operator retries it
            assert client.retry(job_id) == job_id
        # Then it counts again while queued, and leaves once it ends (here: cancelled)
        assert in_flight(settings, tenant) == 1
        assert http.delete(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"
        assert in_flight(settings, tenant) == 0


# --- a submitter that dies ---------------------------------------------------------------------

# A submitter that reserves the whole quota and hangs until killed, as a gateway that dies
# between its reservation and its submission's report.
CRASHING_SUBMITTER = """
import asyncio, sys
import redis.asyncio
from tierq.core.keys import Keys
from tierq.producers.gateway.quota import TenantQuota

async def main() -> None:
    url, prefix, tenant, limit, lives = sys.argv[1:]
    client = redis.asyncio.Redis.from_url(url)
    quota = TenantQuota(client, Keys(prefix), int(limit), 600, reservation_seconds=float(lives))
    await quota.reserve(tenant, int(limit))
    print("reserved", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
def crashed_submitter(redis_url: str, keys: Keys) -> Iterator[Callable[[str, float], None]]:
    """Factory: a process that reserves all of a tenant's quota and is killed (SIGKILL)."""
    started: list[subprocess.Popen[str]] = []

    def crash(tenant: str, lives_seconds: float) -> None:
        argv = [redis_url, keys.prefix, tenant, str(LIMIT), str(lives_seconds)]
        process = subprocess.Popen(
            [sys.executable, "-c", CRASHING_SUBMITTER, *argv], stdout=subprocess.PIPE, text=True
        )
        started.append(process)
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "reserved"
        process.kill()
        process.wait(timeout=10)

    yield crash
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_a_reservation_left_by_a_dead_submitter_lapses_by_itself(
    redis_url: str, redis_client: redis.Redis, keys: Keys, crashed_submitter: Callable[..., None]
) -> None:
    # Given a submitter that reserved the tenant's whole quota and died before reporting back
    tenant = unique_tenant()
    lives_seconds = 2.0
    crashed_submitter(tenant, lives_seconds)
    died_at = time.monotonic()

    def reserve_one() -> bool:
        async def scenario(quota: TenantQuota) -> bool:
            reservation = await try_reserve(quota, tenant, 1)
            if reservation is not None:
                await reservation.release()
            return reservation is not None

        return with_quota(redis_url, keys, LIMIT, scenario)

    # Then its reservation holds the room at first (nothing else gives it back) ...
    assert not reserve_one()
    # ... and lapses after its time, with nobody's help
    eventually(reserve_one, what="the dead submitter's reservation lapsing", timeout=10)
    assert time.monotonic() - died_at >= lives_seconds - 0.5
    assert no_reservation_left(redis_client, keys, tenant)
    assert redis_client.zcard(keys.tenant_in_flight(tenant)) == 0
