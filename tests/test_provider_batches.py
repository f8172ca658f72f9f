"""Jobs with far deadlines go through the provider's Batch API at half price, on real worker
processes against the simulator's Files and Batches API; expiry with partial output, a worker
killed while a batch is in flight, and a batch created by a worker that died before it could
say so: no job lost, none paid twice (the simulator records every line it ran)."""

from __future__ import annotations

import json
import signal
from collections import Counter

import openai
import pytest

from tests.support import (
    API_KEY,
    Fleet,
    GatewayFactory,
    Simulator,
    SimulatorFactory,
    create_api_key,
    env_of,
    eventually,
    logged,
    nonce,
    unique_tenant,
    user,
)
from tierq import TierqClient
from tierq.core.contract import JobEnvelope
from tierq.core.keys import Keys
from tierq.core.provider_batches import ProviderBatches
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.core.tiers import api_params
from tierq.devkit.processes import settings_for

# Deadlines two hours away go to a provider batch (as a day away would by default); a batch is
# formed every second and polled twice a second; leases short, so a re-run comes quickly.
BATCHING = {
    "TIERQ_SPEND__BATCH_MIN_SECONDS": "3600",
    "TIERQ_SPEND__BATCH_COLLECT_SECONDS": "1",
    "TIERQ_SPEND__BATCH_POLL_SECONDS": "0.5",
    "TIERQ_LEASE_SECONDS": "5",
}
FAR = 7200


@pytest.fixture
def provider(start_simulator_with: SimulatorFactory) -> Simulator:
    return start_simulator_with("--batch-completion-seconds", "2", "--seed", "5")


def runs(simulator: Simulator, markers: list[str]) -> Counter[int]:
    """How many markers the simulator ran how many times (as a call or a batch line)."""
    return Counter(len(simulator.requests_with(marker)) for marker in markers)


def test_far_deadlines_run_in_a_provider_batch_at_half_price(
    start_fleet: Fleet, provider: Simulator
) -> None:
    (worker,), settings = start_fleet("fast", base_url=provider.base_url, **BATCHING)
    markers = [nonce() for _ in range(5)]
    with TierqClient(settings) as client:
        far = client.submit_many(
            [{"model": "gpt-4o-mini", "messages": user(m)} for m in markers], deadline=FAR
        )
        near = client.submit(model="gpt-4o-mini", messages=user(nonce()), deadline=600)
        assert (
            ProviderBatches(client.redis, settings).pooled("fast")
            + len(logged(worker, "batch.submitted"))
            >= 1
        )  # they wait for the batcher, not on the queue
        done = client.wait_many([*far, near], timeout=60)

    assert {record.status for record in done} == {JobStatus.SUCCEEDED}
    batched, alone = done[:5], done[5]
    assert {record.service_tier_chosen for record in batched} == {"batch"}
    for record in batched:
        assert record.cost_usd is not None
        assert record.cost_at_default_usd is not None
        assert record.cost_usd == pytest.approx(record.cost_at_default_usd / 2)
    assert alone.service_tier_chosen is None  # a near deadline runs on the queue
    assert runs(provider, markers) == {1: 5}
    assert logged(worker, "batch.collected")


def test_an_expired_batch_keeps_its_answers_and_runs_the_rest_on_the_queue_paid_once(
    start_fleet: Fleet, provider: Simulator
) -> None:
    # Given the next provider batch expires after answering 2 of its lines
    provider.configure(expire_next_batch_after_lines=2)
    (worker,), settings = start_fleet("fast", base_url=provider.base_url, **BATCHING)
    markers = [nonce() for _ in range(5)]
    with TierqClient(settings) as client:
        job_ids = client.submit_many(
            [{"model": "gpt-4o-mini", "messages": user(m)} for m in markers], deadline=FAR
        )
        done = client.wait_many(job_ids, timeout=90)

    # Then every job succeeded: 2 from the batch's partial output, 3 run again on the queue,
    # and the simulator ran each exactly once
    assert {record.status for record in done} == {JobStatus.SUCCEEDED}
    chosen = Counter(record.service_tier_chosen for record in done)
    assert chosen == {"batch": 2, None: 3}
    assert runs(provider, markers) == {1: 5}
    (collected,) = logged(worker, "batch.collected")
    assert (collected["status"], collected["run_on_queue"]) == ("expired", 3)


def test_a_worker_killed_with_a_batch_in_flight_leaves_it_to_another_paid_once(
    start_fleet: Fleet, start_simulator_with: SimulatorFactory
) -> None:
    slow = start_simulator_with("--batch-completion-seconds", "6", "--seed", "5")
    (first,), settings = start_fleet("fast", base_url=slow.base_url, **BATCHING)
    markers = [nonce() for _ in range(4)]
    with TierqClient(settings) as client:
        job_ids = client.submit_many(
            [{"model": "gpt-4o-mini", "messages": user(m)} for m in markers], deadline=FAR
        )
        # When the worker that submitted the batch is killed while the batch runs
        eventually(lambda: logged(first, "batch.submitted"), what="the batch submitted", timeout=30)
        first.signal(signal.SIGKILL)
        (second,), _ = start_fleet("fast", base_url=slow.base_url, **BATCHING, **env_of(settings))
        done = client.wait_many(job_ids, timeout=90)

    # Then another worker collects it: every job answered once, by the batch
    assert {record.status for record in done} == {JobStatus.SUCCEEDED}
    assert {record.service_tier_chosen for record in done} == {"batch"}
    assert runs(slow, markers) == {1: 4}
    assert logged(second, "batch.collected")


def test_a_batch_created_by_a_worker_that_died_before_recording_it_is_adopted_not_made_again(
    start_fleet: Fleet, provider: Simulator, worker_env: dict[str, str]
) -> None:
    # Given far-deadline jobs taken into a batch, and the provider batch created under its
    # name, by a worker that died before it could record either (its hold then lapsed)
    isolation = nonce()
    env = {
        **worker_env,
        **BATCHING,
        "OPENAI_BASE_URL": provider.base_url,
        "TIERQ_QUEUE_PREFIX": f"tierq-{isolation}.",
        "TIERQ_KEY_PREFIX": f"tierq-{isolation}:",
    }
    settings = settings_for(env)
    markers = [nonce() for _ in range(3)]
    with TierqClient(settings) as client:
        job_ids = client.submit_many(
            [{"model": "gpt-4o-mini", "messages": user(m)} for m in markers], deadline=FAR
        )
        batches = ProviderBatches(client.redis, settings)
        taken = batches.take("fast", 100, "a-worker-that-died")
        assert taken is not None
        batch_id, taken_ids = taken
        assert sorted(taken_ids) == sorted(job_ids)
        lines = make_lines(client, settings, taken_ids)
        with openai.OpenAI(base_url=provider.base_url, api_key=API_KEY, max_retries=0) as sdk:
            upload = sdk.files.create(file=("in.jsonl", lines), purpose="batch")
            sdk.batches.create(
                input_file_id=upload.id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={"tierq_batch": batch_id},
            )
        client.redis.hset(Keys(settings.key_prefix).provider_batch(batch_id), "lease_until", "0")

        # When a worker of the tier starts
        (worker,), _ = start_fleet(
            "fast", base_url=provider.base_url, **BATCHING, **env_of(settings)
        )
        done = client.wait_many(job_ids, timeout=60)

    # Then it adopts that batch rather than create a second: each job answered once
    assert {record.status for record in done} == {JobStatus.SUCCEEDED}
    assert logged(worker, "batch.adopted", batch_id=batch_id)
    assert logged(worker, "batch.submitted") == []
    assert runs(provider, markers) == {1: 3}


def make_lines(client: TierqClient, settings: Settings, job_ids: list[str]) -> bytes:
    """The batch input a worker would have uploaded for `job_ids`."""
    out = []
    for job_id in job_ids:
        message = client.redis.hget(Keys(settings.key_prefix).job(job_id), "message")
        assert message is not None
        envelope = JobEnvelope.model_validate(json.loads(message))
        body = api_params(envelope.request, settings.model_info(envelope.request.model))
        out.append(
            json.dumps(
                {"custom_id": job_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
            )
        )
    return ("\n".join(out) + "\n").encode()


def test_a_gateway_batch_can_be_forwarded_to_the_providers_batch_api(
    start_fleet: Fleet,
    provider: Simulator,
    start_gateway_with: GatewayFactory,
) -> None:
    # Given workers and a gateway that forward gateway batches to the provider's Batch API
    (worker,), settings = start_fleet("fast", base_url=provider.base_url, **BATCHING)
    root, _ = start_gateway_with(
        **env_of(settings), **BATCHING, TIERQ_GATEWAY__BATCHES_VIA_PROVIDER="true"
    )
    key = create_api_key(settings, unique_tenant())
    markers = [nonce() for _ in range(3)]
    lines = "".join(
        json.dumps(
            {
                "custom_id": marker,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {"model": "gpt-4o-mini", "messages": user(marker)},
            }
        )
        + "\n"
        for marker in markers
    ).encode()

    # When a tenant runs a batch through the gateway, as with the API itself
    with openai.OpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0) as api:
        upload = api.files.create(file=("input.jsonl", lines), purpose="batch")
        batch = api.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        finished = eventually(
            lambda: api.batches.retrieve(batch.id),
            until=lambda b: b.status in ("completed", "failed", "expired", "cancelled"),
            what="the gateway batch finishing",
            timeout=90,
            interval=0.5,
        )
        assert finished.output_file_id is not None
        output = [
            json.loads(x) for x in api.files.content(finished.output_file_id).text.splitlines()
        ]

    # Then its requests ran in a provider batch, each once, at the Batch API's price, and the
    # tenant gets the API's output file as before
    assert finished.status == "completed"
    assert sorted(line["custom_id"] for line in output) == sorted(markers)
    with TierqClient(settings) as client:
        records = client.get_many([line["response"]["request_id"] for line in output])
    assert {r.service_tier_chosen for r in records if r is not None} == {"batch"}
    assert runs(provider, markers) == {1: 3}
    assert logged(worker, "batch.collected")


def test_a_pooled_job_no_batcher_sends_runs_on_the_queue_when_it_is_given_up(
    start_fleet: Fleet, provider: Simulator
) -> None:
    # Given a worker without a batcher (TIERQ_SPEND__BATCH=false on it), and a producer that
    # pools a job whose batch would be given up 10 s after it is submitted
    given_up_soon = {**BATCHING, "TIERQ_SPEND__BATCH_MARGIN_SECONDS": "3690"}
    (worker,), worker_settings = start_fleet(
        "fast", base_url=provider.base_url, **given_up_soon, TIERQ_SPEND__BATCH="false"
    )
    producer = worker_settings.model_copy(
        update={"spend": worker_settings.spend.model_copy(update={"batch": True})}
    )
    marker = nonce()
    with TierqClient(producer) as client:
        job_id = client.submit(model="gpt-4o-mini", messages=user(marker), deadline=3700)
        assert ProviderBatches(client.redis, producer).pooled("fast") == 1
        # Then the reaper runs it on the queue at its give-up time, in time for its deadline
        record = client.wait(job_id, timeout=60)

    assert record.status is JobStatus.SUCCEEDED
    assert record.service_tier_chosen is None
    assert record.deadline is not None
    assert record.finished_at is not None
    assert record.finished_at < record.deadline
    assert runs(provider, [marker]) == {1: 1}
    assert logged(worker, "job.requeued", job_id=job_id)
