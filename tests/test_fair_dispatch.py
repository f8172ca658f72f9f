"""Fair dispatch: backlogs per priority and tenant, taken by weighted fair share in tokens.

The scheduling rule is checked on a real Redis with real submissions and no worker (the test
moves jobs onto the queue as a dispatcher would, and reads which ones came); then with
dispatchers racing; then end to end, through workers whose tier has fair dispatch, one of
them killed while it dispatches.
"""

from __future__ import annotations

import json
import signal
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support import (
    Fleet,
    GatewayFactory,
    Simulator,
    create_api_key,
    env_of,
    eventually,
    gateway_client,
    job,
    logged,
    nonce,
    unique_tenant,
)
from tierq import InvalidJobError, TierqClient
from tierq.core.dispatch import NO_TENANT, Backlogs
from tierq.core.exposition import QueueCollector
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.devkit.processes import settings_for
from tierq.producers.stats import collect_stats

# A queue depth the tests never reach: a step moves as many jobs as it is asked for.
DEEP = 100_000


def fair_settings(worker_env: dict[str, str], **overrides: str) -> Settings:
    return settings_for(
        {
            **worker_env,
            "TIERQ_KEY_PREFIX": f"fair-{nonce()}:",
            "TIERQ_QUEUE_PREFIX": f"fair-{nonce()}.",
            "TIERQ_TIERS__FAST__FAIR_DISPATCH": "true",
            **overrides,
        }
    )


@pytest.fixture
def fair(worker_env: dict[str, str]) -> Iterator[tuple[TierqClient, Backlogs, Settings]]:
    settings = fair_settings(worker_env, TIERQ_FAIR_SHARE__TENANT_WEIGHTS=json.dumps({"heavy": 3}))
    with TierqClient(settings) as client:
        yield client, Backlogs(client.redis, settings), settings


def dispatch(backlogs: Backlogs, settings: Settings, most: int) -> list[str]:
    """Move up to `most` jobs onto the fast tier's queue (no worker reads it), as a
    dispatcher's step would; the ids moved."""
    return backlogs.dispatch("fast", DEEP, most)


def queued_ids(client: TierqClient, settings: Settings) -> list[str]:
    """The job ids of the Celery messages on the fast tier's queue, oldest first."""
    entries = client.redis.lrange(settings.queue_for("fast"), 0, -1)
    return [json.loads(entry)["headers"]["id"] for entry in reversed(entries)]


def owners(client: TierqClient, job_ids: list[str]) -> list[str]:
    return [str(record.tenant) for record in client.get_many(job_ids) if record is not None]


def test_a_submitted_job_waits_in_its_backlog_not_on_the_queue(
    fair: tuple[TierqClient, Backlogs, Settings],
) -> None:
    client, backlogs, settings = fair
    job_id = client.submit(**job(), priority="bulk")
    assert client.redis.llen(settings.queue_for("fast")) == 0
    assert backlogs.waiting("fast") == {"bulk": {NO_TENANT: 1}}
    assert dispatch(backlogs, settings, 10) == [job_id]
    assert backlogs.waiting("fast") == {}
    assert queued_ids(client, settings) == [job_id]


def test_a_step_fills_the_queue_to_its_depth_and_no_further(
    fair: tuple[TierqClient, Backlogs, Settings],
) -> None:
    client, backlogs, settings = fair
    job_ids = client.submit_many([job() for _ in range(10)])
    queue = settings.queue_for("fast")
    assert len(backlogs.dispatch("fast", 4, 100)) == 4
    assert backlogs.dispatch("fast", 4, 100) == []
    client.redis.rpop(queue)  # a worker took one
    assert len(backlogs.dispatch("fast", 4, 100)) == 1
    assert queued_ids(client, settings) == job_ids[1:5]


def test_tenants_share_by_weight_in_tokens(fair: tuple[TierqClient, Backlogs, Settings]) -> None:
    client, backlogs, settings = fair
    # Two tenants, weights 1 and 3, each with far more identical jobs than will be taken.
    for tenant in ("light", "heavy"):
        client.submit_many([job("same size") for _ in range(60)], tenant=tenant)
    taken = dispatch(backlogs, settings, 40)
    shares = Counter(owners(client, taken))
    assert sum(shares.values()) == 40
    assert abs(shares["heavy"] - 30) <= 1  # 3:1, give or take the tie at a round's end


def test_a_tenant_alone_takes_everything_and_one_arriving_gets_its_share_at_once(
    fair: tuple[TierqClient, Backlogs, Settings],
) -> None:
    client, backlogs, settings = fair
    client.submit_many([job("same size") for _ in range(40)], tenant="light")
    # Work-conserving: alone, it is served whatever its weight.
    assert Counter(owners(client, dispatch(backlogs, settings, 20))) == {"light": 20}
    # A tenant arriving now owes nothing for the other's run (it is not made to wait while the
    # other catches up), and banks no credit from before: from now on, 3:1 by weight.
    client.submit_many([job("same size") for _ in range(40)], tenant="heavy")
    shares = Counter(owners(client, dispatch(backlogs, settings, 40)))
    assert abs(shares["heavy"] - 30) <= 2


def test_a_higher_class_goes_first_and_a_lower_one_still_moves(
    fair: tuple[TierqClient, Backlogs, Settings],
) -> None:
    client, backlogs, settings = fair
    bulk = client.submit_many([job("same size") for _ in range(300)], priority="bulk")
    urgent = client.submit(**job("same size"), priority="interactive")
    first = dispatch(backlogs, settings, 1)
    assert first == [urgent]
    # With both classes busy, bulk still gets its weight's share (1 in 100 + 1).
    client.submit_many([job("same size") for _ in range(300)], priority="interactive")
    taken = dispatch(backlogs, settings, 202)
    assert 1 <= len(set(taken) & set(bulk)) <= 3


def test_a_job_cancelled_in_its_backlog_is_dropped_and_costs_its_tenant_nothing(
    fair: tuple[TierqClient, Backlogs, Settings],
) -> None:
    client, backlogs, settings = fair
    cancelled = client.submit_many([job("same size") for _ in range(5)], tenant="light")
    for job_id in cancelled:
        client.cancel(job_id)
    kept = client.submit_many([job("same size") for _ in range(5)], tenant="light")
    other = client.submit_many([job("same size") for _ in range(5)], tenant="heavy")
    taken = dispatch(backlogs, settings, 10)
    assert set(taken) == set(kept) | set(other)
    assert set(queued_ids(client, settings)) == set(taken)


def test_an_unknown_priority_is_refused_naming_the_field(
    fair: tuple[TierqClient, Backlogs, Settings],
) -> None:
    client, _, _ = fair
    with pytest.raises(InvalidJobError, match="priority: 'urgent' is not a priority"):
        client.submit(**job(), priority="urgent")


# --- end to end ----------------------------------------------------------------------------


def test_jobs_of_a_fair_tier_run_through_the_dispatcher_interactive_ahead_of_bulk(
    start_fleet: Fleet,
) -> None:
    # Given a worker with 2 slots on a tier with fair dispatch, and 30 slow bulk jobs queued
    _, settings = start_fleet("fast", concurrency=2, TIERQ_TIERS__FAST__FAIR_DISPATCH="true")
    with TierqClient(settings) as client:
        bulk = client.submit_many(
            [job(f"{nonce()} [sim latency_ms=300]") for _ in range(30)], priority="bulk"
        )
        eventually(
            lambda: client.get(bulk[0]).status,
            until=lambda status: status is not JobStatus.QUEUED,
            what="the first bulk job leaving the queue",
            timeout=30,
        )
        # When an interactive job comes after them
        urgent = client.submit(**job(nonce()), priority="interactive")
        done = client.wait_many([*bulk, urgent], timeout=120)

    # Then every job ran once, and the interactive one started before most of the bulk
    assert {record.status for record in done} == {JobStatus.SUCCEEDED}
    assert all(record.attempts == 1 for record in done)
    started = {record.job_id: record.started_at for record in done}
    later_bulk = [job_id for job_id in bulk if started[job_id] > started[urgent]]
    assert len(later_bulk) >= 20


def test_dispatchers_racing_put_each_job_on_the_queue_exactly_once(
    fair: tuple[TierqClient, Backlogs, Settings],
) -> None:
    # Given 400 jobs of two tenants in their backlogs
    client, backlogs, settings = fair
    job_ids = [
        *client.submit_many([job() for _ in range(200)], tenant="light"),
        *client.submit_many([job() for _ in range(200)], tenant="heavy"),
    ]

    # When four dispatchers, each with its own connection, move them in small steps at once
    def drain() -> list[str]:
        with TierqClient(settings) as own:
            mine = Backlogs(own.redis, settings)
            moved: list[str] = []
            while step := dispatch(mine, settings, 7):
                moved.extend(step)
            return moved

    with ThreadPoolExecutor(4) as pool:
        moved = [job_id for share in pool.map(lambda _: drain(), range(4)) for job_id in share]

    # Then each job was moved once, and its one message is on the queue
    assert sorted(moved) == sorted(job_ids)
    assert sorted(queued_ids(client, settings)) == sorted(job_ids)
    assert backlogs.waiting("fast") == {}


def test_the_gateway_takes_priority_as_a_job_field_and_as_the_drop_in_header(
    start_gateway_with: GatewayFactory,
) -> None:
    # Given a gateway on a fair tier that no worker serves (jobs stay in their backlogs), with
    # a 1 s hold for the drop-in route
    root, settings = start_gateway_with(
        TIERQ_KEY_PREFIX=f"fair-{nonce()}:",
        TIERQ_QUEUE_PREFIX=f"fair-{nonce()}.",
        TIERQ_TIERS__FAST__FAIR_DISPATCH="true",
        TIERQ_GATEWAY__MAX_WAIT_SECONDS="1",
    )
    tenant = unique_tenant()
    key = create_api_key(settings, tenant)
    with gateway_client(root, key) as http:
        # When one job comes by the job route as interactive, one as bulk
        for priority in ("interactive", "bulk"):
            body = {**job(), "tierq": {"priority": priority}}
            assert http.post("/v1/jobs", json=body).status_code == 202
        # ... and one by the drop-in route with the header (kept past the hold by its key)
        held = http.post(
            "/v1/chat/completions",
            json=job(),
            headers={"Tierq-Priority": "interactive", "Idempotency-Key": nonce()},
        )
        assert held.status_code == 504
        # ... and a priority that is not one is refused, naming it, on both routes
        bad = http.post("/v1/jobs", json={**job(), "tierq": {"priority": "urgent"}})
        assert bad.status_code == 422
        assert "priority" in bad.text
        refused = http.post(
            "/v1/chat/completions", json=job(), headers={"Tierq-Priority": "urgent"}
        )
        assert refused.status_code == 400
        assert refused.json()["error"]["param"] == "priority"

    # Then each waits in its class's backlog, under its tenant
    with TierqClient(settings) as client:
        waiting = Backlogs(client.redis, settings).waiting("fast")
    assert waiting == {"interactive": {tenant: 2}, "bulk": {tenant: 1}}


def test_a_worker_killed_while_it_dispatches_leaves_every_job_one_result(
    start_fleet: Fleet, simulator: Simulator
) -> None:
    # Given a fair tier's worker busy dispatching a backlog of 80 slow jobs, with a short lease
    fair_tier = {"TIERQ_TIERS__FAST__FAIR_DISPATCH": "true", "TIERQ_LEASE_SECONDS": "5"}
    (first,), settings = start_fleet("fast", concurrency=10, **fair_tier)
    markers = [nonce() for _ in range(80)]
    with TierqClient(settings) as client:
        job_ids = client.submit_many(
            [job(f"{marker} [sim latency_ms=300]") for marker in markers], priority="bulk"
        )
        eventually(
            lambda: client.get_many(job_ids),
            until=lambda records: sum(r is not None and r.status.is_final for r in records) >= 15,
            what="the first jobs finishing",
            timeout=60,
        )
        # When it is killed mid-run (calls in flight, jobs taken, the rest in the backlog), and
        # another worker of the tier takes over
        first.signal(signal.SIGKILL)
        (second,), _ = start_fleet("fast", concurrency=10, **fair_tier, **env_of(settings))
        done = client.wait_many(job_ids, timeout=120)

    # Then every job ends succeeded, once: the new worker finished none twice, and none of
    # those the killed one had finished ...
    assert {record.status for record in done} == {JobStatus.SUCCEEDED}
    by_second = Counter(line["job_id"] for line in logged(second, "job.finished"))
    assert set(by_second.values()) == {1}
    # ... and the API was called once per job, but for the calls the kill cut off (at most one
    # per slot), which were made again: their first answers were never received
    calls = Counter(len(simulator.requests_with(marker)) for marker in markers)
    assert set(calls) <= {1, 2}
    assert calls[2] <= 10


def test_stats_and_metrics_show_each_tenants_backlog_by_priority(
    fair: tuple[TierqClient, Backlogs, Settings],
) -> None:
    client, _, settings = fair
    client.submit_many([job() for _ in range(3)], tenant="light", priority="bulk")
    client.submit_many([job() for _ in range(2)], tenant="heavy", priority="interactive")

    fast = next(t for t in collect_stats(settings, client.redis)["tiers"] if t["tier"] == "fast")
    assert fast["queue_depth"] == 0
    assert fast["backlog"] == 5
    assert fast["backlog_by_priority"] == {"interactive": {"heavy": 2}, "bulk": {"light": 3}}

    assert fast["waiting"] == 5
    assert [(t["tenant"], t["backlog"], t["token_share"]) for t in fast["tenants"]] == [
        ("heavy", 2, 0.0),
        ("light", 3, 0.0),
    ]

    families = {f.name: f for f in QueueCollector(client.redis, settings).collect()}
    samples = {tuple(s.labels.values()): s.value for s in families["tierq_backlog"].samples}
    assert samples == {("fast", "interactive", "heavy"): 2, ("fast", "bulk", "light"): 3}
    assert {tuple(s.labels.values()) for s in families["tierq_tenant_token_share"].samples} == {
        ("fast", "heavy"),
        ("fast", "light"),
    }


def test_stats_and_metrics_show_each_tenants_share_of_the_tiers_tokens(
    start_fleet: Fleet,
) -> None:
    # Given three jobs of one tenant and one of another, of the same size, run to the end
    _, settings = start_fleet("fast", concurrency=4)
    same = "[sim tokens=20]"
    with TierqClient(settings) as client:
        done = client.wait_many(
            [
                *client.submit_many([job(same) for _ in range(3)], tenant="busy"),
                *client.submit_many([job(same)], tenant="quiet"),
            ],
            timeout=60,
        )
        assert {record.status for record in done} == {JobStatus.SUCCEEDED}
        tokens = {r.tenant: r.usage.total_tokens for r in done if r.usage is not None}
        assert len(set(tokens.values())) == 1  # the same size, so shares are 3:1

        # Then tierq stats and the metrics give each its share of the tier's tokens
        fast = next(
            t for t in collect_stats(settings, client.redis)["tiers"] if t["tier"] == "fast"
        )
        families = {f.name: f for f in QueueCollector(client.redis, settings).collect()}
    assert {t["tenant"]: t["token_share"] for t in fast["tenants"]} == {
        "busy": 0.75,
        "quiet": 0.25,
    }
    shares = {s.labels["tenant"]: s.value for s in families["tierq_tenant_token_share"].samples}
    assert shares == {"busy": 0.75, "quiet": 0.25}


def test_a_job_a_dead_worker_took_off_the_queue_unstarted_runs_again_without_waiting_an_hour(
    start_fleet: Fleet, worker_env: dict[str, str], simulator: Simulator
) -> None:
    # Given a job moved onto its queue, and its message taken off the queue by a worker that
    # died before starting it (kombu would return it only after Redis's visibility timeout)
    isolation = {
        "TIERQ_KEY_PREFIX": f"fair-{nonce()}:",
        "TIERQ_QUEUE_PREFIX": f"fair-{nonce()}.",
        "TIERQ_LEASE_SECONDS": "5",
    }
    settings = settings_for({**worker_env, **isolation})
    marker = nonce()
    with TierqClient(settings) as client:
        job_id = client.submit(**job(marker))
        backlogs = Backlogs(client.redis, settings)
        assert backlogs.dispatch("fast", DEEP, 10) == [job_id]
        assert client.redis.rpop(settings.queue_for("fast")) is not None  # the lost delivery
        assert backlogs.claim_within("fast") < settings.visibility_timeout_seconds / 10

        # When a worker of the tier runs
        (worker,), _ = start_fleet("fast", **isolation)
        record = client.wait(job_id, timeout=60)

    # Then its reaper put the job back on the queue once it should long have been claimed,
    # and it ran, once
    assert record.status is JobStatus.SUCCEEDED
    assert logged(worker, "job.requeued", job_id=job_id)
    assert len(simulator.requests_with(marker)) == 1
