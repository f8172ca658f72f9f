"""The gateway as a drop-in for the API: the official `openai` SDK, changed only in `base_url`
(the gateway root + `/v1`) and `api_key` (a tierq key), against a real gateway, real workers
and the real simulator.

Each test uses a fresh tenant (`tenant_key`) and a fresh prompt nonce, so the simulator's
recorded calls of one test are found by its nonce.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pydantic
import pytest
import redis
from openai import AsyncOpenAI, OpenAI

from tests.support import (
    Fleet,
    GatewayFactory,
    Simulator,
    TenantKey,
    create_api_key,
    env_of,
    eventually,
    gateway_client,
    job,
    logged,
    nonce,
    unique_tenant,
    user,
)
from tierq.core.keys import Keys
from tierq.core.settings import Settings
from tierq.devkit.local_redis import EmbeddedRedis
from tierq.devkit.processes import ManagedProcess

# Long enough for a job on a loaded 2-core machine, short enough to fail fast.
CALL_TIMEOUT_SECONDS = 30.0
JOB_ID_HEADER = "Tierq-Job-Id"


def sdk_client(root: str, key: str, **options: Any) -> OpenAI:
    """The SDK as an app builds it, pointed at the gateway: only base_url and api_key differ."""
    return OpenAI(
        base_url=f"{root}/v1", api_key=key, **{"timeout": CALL_TIMEOUT_SECONDS, **options}
    )


@pytest.fixture
def sdk(gateway_url: str, tenant_key: TenantKey) -> Iterator[OpenAI]:
    _, key = tenant_key()
    with sdk_client(gateway_url, key) as client:
        yield client


@pytest.fixture
def async_key(tenant_key: TenantKey) -> str:
    return tenant_key()[1]


def job_record(root: str, key: str, job_id: str) -> dict[str, Any]:
    with gateway_client(root, key) as http:
        record: dict[str, Any] = http.get(f"/v1/jobs/{job_id}").json()
    return record


class Weather(pydantic.BaseModel):
    city: str
    celsius: float


WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


# --- answers -----------------------------------------------------------------------------------


def test_create_answers_the_jobs_chat_completion_with_its_id_in_a_header(
    sdk: OpenAI, gateway_url: str, simulator: Simulator
) -> None:
    marker = nonce()
    raw = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=user(f"Hello {marker}")
    )
    completion = raw.parse()
    job_id = raw.headers[JOB_ID_HEADER]

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content
    assert completion.usage is not None
    assert completion.usage.total_tokens > 0
    # The answer is the job's: recorded with its usage and cost, one call made.
    record = job_record(gateway_url, sdk.api_key, job_id)
    assert record["status"] == "succeeded"
    assert record["response"]["id"] == completion.id
    assert record["response"]["choices"][0]["message"]["content"] == (
        completion.choices[0].message.content
    )
    assert record["usage"]["total_tokens"] == completion.usage.total_tokens
    assert record["cost_usd"] is not None
    assert len(simulator.requests_with(marker)) == 1


def test_the_async_sdk_creates_and_streams_through_the_gateway(
    gateway_url: str, async_key: str
) -> None:
    async def calls() -> tuple[str | None, list[str], str | None]:
        async with AsyncOpenAI(
            base_url=f"{gateway_url}/v1", api_key=async_key, timeout=CALL_TIMEOUT_SECONDS
        ) as client:
            created = await client.chat.completions.create(
                model="gpt-4o-mini", messages=user(nonce())
            )
            async with client.chat.completions.stream(
                model="gpt-4o-mini", messages=user(nonce())
            ) as stream:
                texts = [event.delta async for event in stream if event.type == "content.delta"]
                final = await stream.get_final_completion()
        return created.choices[0].message.content, texts, final.choices[0].message.content

    content, texts, final = asyncio.run(calls())
    assert content
    assert len(texts) > 1
    assert "".join(texts) == final


def test_create_with_stream_sends_the_apis_chunks_then_usage_then_done(
    sdk: OpenAI, gateway_url: str
) -> None:
    stream = sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=user(f"{nonce()} [sim tokens=40]"),
        stream=True,
        stream_options={"include_usage": True},
    )
    job_id = stream.headers[JOB_ID_HEADER]
    chunks = list(stream.parse())

    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "stop"
    # The usage chunk comes last, without choices, and agrees with the job's record.
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    record = job_record(gateway_url, sdk.api_key, job_id)
    assert text == record["response"]["choices"][0]["message"]["content"]
    assert chunks[-1].usage.total_tokens == record["usage"]["total_tokens"]
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_the_stream_ends_with_done_on_the_wire(gateway_url: str, tenant_key: TenantKey) -> None:
    _, key = tenant_key()
    body = job(nonce(), stream=True)
    with (
        gateway_client(gateway_url, key, timeout=CALL_TIMEOUT_SECONDS) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        data = [line[len("data: ") :] for line in response.iter_lines() if line.startswith("data:")]
    assert data[-1] == "[DONE]"
    assert all(json.loads(line)["object"] == "chat.completion.chunk" for line in data[:-1])


def test_the_sdks_stream_helper_yields_the_text_deltas_as_they_come(sdk: OpenAI) -> None:
    with sdk.chat.completions.stream(
        model="gpt-4o-mini", messages=user(f"{nonce()} [sim tokens=30]")
    ) as stream:
        texts = [event.delta for event in stream if event.type == "content.delta"]
        final = stream.get_final_completion()
    assert len(texts) > 1
    assert "".join(texts) == final.choices[0].message.content
    assert final.choices[0].finish_reason == "stop"


def test_parse_returns_the_pydantic_object(sdk: OpenAI) -> None:
    completion = sdk.chat.completions.parse(
        model="gpt-4o-mini",
        messages=user(f"{nonce()} The weather in Oslo?"),
        response_format=Weather,
    )
    assert isinstance(completion.choices[0].message.parsed, Weather)


def test_tool_calls_come_back_whole_streamed_or_not(sdk: OpenAI) -> None:
    params: dict[str, Any] = {
        "model": "gpt-4o-mini",
        "messages": user(f"{nonce()} Weather in Oslo?"),
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    created = sdk.chat.completions.create(**params)
    with sdk.chat.completions.stream(**params) as stream:
        streamed = stream.get_final_completion()

    for completion in (created, streamed):
        calls = completion.choices[0].message.tool_calls
        assert calls
        assert calls[0].function.name == "get_weather"
        assert "city" in json.loads(calls[0].function.arguments)
        assert completion.choices[0].finish_reason in ("tool_calls", "stop")


def test_models_are_listed_and_retrieved_from_the_catalog(sdk: OpenAI, settings: Settings) -> None:
    listed = [model.id for model in sdk.models.list()]
    assert listed == settings.known_models()
    assert sdk.models.retrieve("gpt-4o-mini").id == "gpt-4o-mini"
    with pytest.raises(openai.NotFoundError) as refused:
        sdk.models.retrieve("gpt-nonexistent")
    assert refused.value.code == "model_not_found"


# --- options, refusals, failures ---------------------------------------------------------------


def test_a_retry_with_the_same_idempotency_key_gets_the_same_job_and_one_call(
    sdk: OpenAI, simulator: Simulator
) -> None:
    marker = nonce()
    key = {"Idempotency-Key": f"order-{marker}"}
    first, again = (
        sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=user(marker), extra_headers=key
        )
        for _ in range(2)
    )
    assert first.headers[JOB_ID_HEADER] == again.headers[JOB_ID_HEADER]
    assert first.parse().id == again.parse().id
    assert len(simulator.requests_with(marker)) == 1


def test_an_invalid_request_is_refused_400_naming_the_parameter(
    sdk: OpenAI, simulator: Simulator
) -> None:
    marker = nonce()
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=user(marker), temperature=5)
    assert refused.value.status_code == 400
    assert refused.value.param == "temperature"
    assert simulator.requests_with(marker) == []


def test_a_permanent_provider_400_answers_with_its_status_and_body_after_one_call(
    sdk: OpenAI, gateway_url: str, simulator: Simulator
) -> None:
    marker = nonce()
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=user(f"{marker} [sim fail=400]"))
    error = refused.value
    assert error.status_code == 400
    assert error.response.headers["x-should-retry"] == "false"
    record = job_record(gateway_url, sdk.api_key, error.response.headers[JOB_ID_HEADER])
    assert record["status"] == "failed"
    assert isinstance(error.body, dict)
    assert error.body["message"] == record["error"]["message"]
    assert error.body["type"] == "invalid_request_error"
    # The provider's own error type is kept on the record, and answered as it came.
    assert record["error"]["api_type"] == error.body["type"]
    assert error.code == record["error"]["code"]
    # Sent once: neither the worker nor the SDK tried again.
    assert len(simulator.requests_with(marker)) == 1


def test_a_permanent_failure_of_a_stream_answers_before_any_chunk(sdk: OpenAI) -> None:
    with pytest.raises(openai.BadRequestError):
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=user(f"{nonce()} [sim fail=400]"), stream=True
        )


def test_a_tenant_over_its_quota_hears_429_with_retry_after_in_the_apis_shape(
    start_gateway_with: GatewayFactory, tenant_key: TenantKey
) -> None:
    root, _ = start_gateway_with(TIERQ_GATEWAY__TENANT_MAX_IN_FLIGHT="1")
    _, key = tenant_key()
    with gateway_client(root, key) as http:
        # One job in flight, held by a slow answer: the quota is full.
        slow = http.post("/v1/jobs", json=job(f"{nonce()} [sim latency_ms=3000]"))
        assert slow.status_code == 202
        with (
            sdk_client(root, key, max_retries=0) as client,
            pytest.raises(openai.RateLimitError) as refused,
        ):
            client.chat.completions.create(model="gpt-4o-mini", messages=user(nonce()))
    assert refused.value.response.headers["retry-after"]
    assert refused.value.code == "tenant_quota_exceeded"
    # The SDK's own retry waits it out: once the slow job ends, the call goes through.
    with sdk_client(root, key, max_retries=10) as client:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=user(nonce()))
    assert answer.choices[0].message.content


# --- a client that leaves ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Saturated:
    """A gateway in front of one worker whose one slot a slow job holds."""

    worker: ManagedProcess
    settings: Settings
    root: str
    key: str
    tenant: str
    blocker: str

    def jobs_asking(self, client: redis.Redis, marker: str) -> list[str]:
        """The ids of this fleet's jobs whose request holds `marker` (read from the queue message
        each job's record keeps, which outlives the tenant's in-flight set: a cancelled job
        leaves that at once)."""
        keys = Keys(self.settings.key_prefix)
        found = []
        for key in client.scan_iter(match=keys.job("*"), count=1000):
            message = client.hget(key, "message")
            if message is not None and marker.encode() in message:
                found.append(key.decode().removeprefix(keys.job_prefix))
        return found


def saturate(
    start_fleet: Fleet, start_gateway_with: GatewayFactory, blocker_ms: int, **gateway: str
) -> Saturated:
    # A call timeout longer than the blocker's answer, so the slot stays taken throughout.
    (worker,), settings = start_fleet(
        "fast", concurrency=1, TIERQ_REQUEST_TIMEOUT_SECONDS=str(2 * blocker_ms // 1000)
    )
    root, _ = start_gateway_with(**env_of(settings), **gateway)
    tenant = unique_tenant()
    key = create_api_key(settings, tenant)  # under the fleet's own key prefix
    with gateway_client(root, key) as http:
        slow = job(f"{nonce()} [sim latency_ms={blocker_ms}]")
        blocker = http.post("/v1/jobs", json=slow).json()["id"]
        eventually(
            lambda: http.get(f"/v1/jobs/{blocker}").json()["status"],
            until=lambda status: status == "running",
            what="the blocker running",
            timeout=CALL_TIMEOUT_SECONDS,
        )
    return Saturated(worker, settings, root, key, tenant, blocker)


def test_a_client_that_leaves_before_its_job_started_cancels_it_and_nothing_is_paid(
    start_fleet: Fleet,
    start_gateway_with: GatewayFactory,
    simulator: Simulator,
    redis_client: redis.Redis,
) -> None:
    # Given a worker with one slot, busy with a slow job, and a gateway in front of it.
    busy = saturate(start_fleet, start_gateway_with, blocker_ms=15_000)
    root, key, worker = busy.root, busy.key, busy.worker

    # When a client's request is queued behind it, and the client gives up before it starts.
    gone = nonce()
    with (
        sdk_client(root, key, timeout=1.5, max_retries=0) as client,
        pytest.raises(openai.APITimeoutError),
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=user(gone))
    (gone_job,) = eventually(
        lambda: busy.jobs_asking(redis_client, gone),
        what="the abandoned request's job",
        timeout=CALL_TIMEOUT_SECONDS,
    )

    # And a patient client's request is queued after it, on the same worker.
    kept = nonce()
    answers: list[str | None] = []

    def patient() -> None:
        with sdk_client(root, key) as client:
            answer = client.chat.completions.create(model="gpt-4o-mini", messages=user(kept))
            answers.append(answer.choices[0].message.content)

    caller = threading.Thread(target=patient)
    caller.start()

    # Then the job of the client that left is cancelled while still queued ...
    with gateway_client(root, key) as http:
        record = eventually(
            lambda: http.get(f"/v1/jobs/{gone_job}").json(),
            until=lambda record: record["status"] != "queued",
            what="the abandoned job leaving the queue",
            timeout=CALL_TIMEOUT_SECONDS,
        )
    assert record["status"] == "cancelled"
    assert record["attempts"] == 0
    # ... the patient request behind it is answered: such a job runs once the slot frees ...
    caller.join(timeout=CALL_TIMEOUT_SECONDS)
    assert answers
    assert answers[0]
    assert len(simulator.requests_with(kept)) == 1
    # ... and the worker reached the abandoned job's message and dropped it: never called.
    eventually(
        lambda: logged(worker, "job.already_finished", job_id=gone_job),
        what="the worker dropping the cancelled job's message",
        timeout=CALL_TIMEOUT_SECONDS,
    )
    assert simulator.requests_with(gone) == []


def test_past_the_hold_an_unstarted_job_is_cancelled_unless_an_idempotency_key_keeps_it(
    start_fleet: Fleet, start_gateway_with: GatewayFactory, redis_client: redis.Redis
) -> None:
    # Given a gateway that holds a request 2 s, in front of a worker busy for longer.
    busy = saturate(
        start_fleet, start_gateway_with, blocker_ms=8000, TIERQ_GATEWAY__MAX_WAIT_SECONDS="2"
    )
    with sdk_client(busy.root, busy.key, max_retries=0) as client:
        # When a request without a key, then one with a key, outlast the hold.
        held = {}
        for name, headers in (("plain", {}), ("keyed", {"Idempotency-Key": nonce()})):
            with pytest.raises(openai.APIStatusError) as expired:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=user(nonce()), extra_headers=headers
                )
            held[name] = expired.value
    # Then both hear 504 hold_expired naming their job, and the SDK may retry each safely ...
    for error in held.values():
        assert error.status_code == 504
        assert error.code == "hold_expired"
        assert error.response.headers["x-should-retry"] == "true"
    with gateway_client(busy.root, busy.key) as http:
        plain, keyed = (
            http.get(f"/v1/jobs/{held[name].response.headers[JOB_ID_HEADER]}").json()
            for name in ("plain", "keyed")
        )
    # ... the job nobody could collect was cancelled before it cost anything, the keyed one
    # waits in the queue for its retry.
    assert (plain["status"], plain["attempts"]) == ("cancelled", 0)
    assert keyed["status"] == "queued"


# --- many held requests -------------------------------------------------------------------------


def test_held_requests_share_one_subscription_so_more_than_the_pool_are_answered(
    start_fleet: Fleet, start_gateway_with: GatewayFactory, private_redis: EmbeddedRedis
) -> None:
    # Given a gateway whose Redis pool holds 10 connections, in front of a worker that keeps
    # 60 slow calls running at once, all on a Redis of the test's own
    held = 60
    on_private = {"TIERQ_REDIS_URL": private_redis.url, "TIERQ_REQUEST_TIMEOUT_SECONDS": "30"}
    (_,), settings = start_fleet("fast", concurrency=held, **on_private)
    root, _ = start_gateway_with(
        **env_of(settings),
        TIERQ_GATEWAY__REDIS_MAX_CONNECTIONS="10",
        TIERQ_GATEWAY__MAX_WAITING_PER_TENANT=str(held),
    )
    key = create_api_key(settings, unique_tenant())
    redis_server = redis.Redis.from_url(private_redis.url)
    subscribed: list[dict[str, str]] = []
    per_job: list[bytes] = []
    done = Keys(settings.key_prefix)

    # When six times as many requests as the pool has connections are held at once
    async def call_all() -> list[str | None]:
        async with AsyncOpenAI(
            base_url=f"{root}/v1", api_key=key, max_retries=0, timeout=60
        ) as client:

            async def one(i: int) -> str | None:
                marker = f"{nonce()} held {i} [sim latency_ms=4000]"
                answer = await client.chat.completions.create(
                    model="gpt-4o-mini", messages=user(marker)
                )
                return answer.choices[0].message.content

            calls = asyncio.gather(*(one(i) for i in range(held)))
            await asyncio.sleep(2.5)  # all sent and held, none answered yet
            subscribed.extend(
                c for c in redis_server.client_list() if int(c["sub"]) or int(c["psub"])
            )
            per_job.extend(redis_server.pubsub_channels(done.done_channel("*")))
            return await calls

    answers = asyncio.run(call_all())

    # Then every one is answered: a held request does not keep a connection of its own ...
    assert len(answers) == held
    assert all(answers)
    # ... and while they were held, no job's done channel had a subscriber of its own: two
    # clients subscribed, each to one pattern (the gateway's job ends, Celery's broadcasts).
    assert per_job == []
    assert [(c["sub"], c["psub"]) for c in subscribed] == [("0", "1"), ("0", "1")], subscribed
