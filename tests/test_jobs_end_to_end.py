"""Jobs through the whole path: producer → tier queue → worker process → simulator → record.

Each test submits through `TierqClient` onto real Redis, a real Celery worker of the job's tier
runs it through the `openai` SDK over HTTP to the simulator, and the test reads the record back.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import openai
import pytest
import redis

from tests.support import API_KEY, Simulator, eventually, nonce, user, waiting_jobs
from tierq.core.celery_app import TASK_NAME, create_app
from tierq.core.contract import JobEnvelope, JobRequest
from tierq.core.errors import InvalidJobError, UnknownModelError
from tierq.core.keys import Keys
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.producers.client import TierqClient


@pytest.mark.parametrize(
    ("model", "tier"),
    [
        ("gpt-4o-mini", "fast"),
        ("gpt-4o", "standard"),
        ("o4-mini", "reasoning"),
        ("o3", "reasoning"),
    ],
)
def test_each_job_is_run_by_a_worker_of_its_models_tier(
    client: TierqClient, model: str, tier: str
) -> None:
    job_id = client.submit(model=model, messages=user(f"hello {nonce()}"))

    result = client.wait(job_id, timeout=30)

    assert result.status is JobStatus.SUCCEEDED
    assert result.tier == tier
    assert result.worker is not None
    assert result.worker.startswith(f"{tier}-")


def test_a_tiers_jobs_wait_on_that_tiers_queue_only(settings: Settings) -> None:
    # Given no worker consumes this settings' queues (a fresh queue prefix)
    isolated = settings.model_copy(update={"queue_prefix": f"tierq-idle-{nonce()}."})
    broker = redis.Redis.from_url(settings.redis_url.get_secret_value())
    with TierqClient(isolated) as producer:
        # When one job per tier is submitted
        producer.submit(model="gpt-4o-mini", messages=user("a"))
        producer.submit(model="gpt-4o", messages=user("b"))
        producer.submit(model="o3", messages=user("c"))
        producer.submit(model="o4-mini", messages=user("d"))

    # Then each waits for its own tier's workers (in the tier's backlog or on its queue)
    lengths = {tier: waiting_jobs(broker, isolated, tier) for tier in isolated.tiers}
    assert lengths == {"fast": 1, "standard": 1, "reasoning": 2}


def test_every_parameter_reaches_the_api_unchanged(
    client: TierqClient, simulator: Simulator
) -> None:
    marker = nonce()
    request: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": f"Weather? {marker}"}]},
        ],
        "max_tokens": 50,
        "temperature": 0.3,
        "top_p": 0.9,
        "frequency_penalty": 0.5,
        "presence_penalty": -0.5,
        "stop": ["\n\n", "END"],
        "seed": 42,
        "n": 2,
        "logprobs": True,
        "top_logprobs": 2,
        "user": "end-user-7",
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }

    result = client.wait(client.submit(request, labels={"team": "search"}), timeout=30)

    assert result.status is JobStatus.SUCCEEDED
    [call] = simulator.requests_with(marker)
    assert call["body"] == request  # nothing added, dropped or changed; labels stay home
    assert result.labels == {"team": "search"}
    assert result.response is not None
    assert len(result.response.choices) == 2
    assert result.response.choices[0].logprobs is not None


def test_reasoning_jobs_send_max_tokens_as_max_completion_tokens(
    client: TierqClient, simulator: Simulator
) -> None:
    marker = nonce()

    result = client.wait(
        client.submit(
            model="o3",
            messages=user(f"think {marker}"),
            max_tokens=700,
            reasoning_effort="low",
        ),
        timeout=30,
    )

    [call] = simulator.requests_with(marker)
    assert "max_tokens" not in call["body"]
    assert call["body"]["max_completion_tokens"] == 700
    assert call["body"]["reasoning_effort"] == "low"
    assert result.usage is not None
    assert result.usage.reasoning_tokens > 0
    assert result.usage.completion_tokens >= result.usage.reasoning_tokens


@pytest.mark.parametrize("parameter", ["temperature", "top_p", "presence_penalty"])
def test_reasoning_models_refuse_sampling_parameters_before_enqueueing(
    client: TierqClient, settings: Settings, parameter: str
) -> None:
    broker = redis.Redis.from_url(settings.redis_url.get_secret_value())
    keys_before = set(broker.scan_iter(Keys(settings.key_prefix).job("*")))

    with pytest.raises(InvalidJobError, match=parameter) as refused:
        client.submit(model="o4-mini", messages=user("hi"), **{parameter: 0.5})

    assert refused.value.errors[0]["field"] == parameter
    assert set(broker.scan_iter(Keys(settings.key_prefix).job("*"))) == keys_before


def test_invalid_input_is_refused_naming_the_field_and_nothing_is_enqueued(
    client: TierqClient, settings: Settings, simulator: Simulator
) -> None:
    broker = redis.Redis.from_url(settings.redis_url.get_secret_value())
    keys_before = set(broker.scan_iter(Keys(settings.key_prefix).job("*")))
    marker = nonce()

    with pytest.raises(InvalidJobError, match="temperature"):
        client.submit(model="gpt-4o", messages=user(marker), temperature=2.5)
    with pytest.raises(InvalidJobError, match=r"messages\.0"):
        client.submit(model="gpt-4o", messages=[{"role": "wizard", "content": marker}])
    with pytest.raises(UnknownModelError, match="gpt-4o-mini") as unknown:
        client.submit(model="gpt-5-turbo", messages=user(marker))
    # A batch with one bad request enqueues none of them.
    with pytest.raises(InvalidJobError, match="n"):
        client.submit_many(
            [
                {"model": "gpt-4o", "messages": user(marker)},
                {"model": "gpt-4o", "messages": user(marker), "n": 0},
            ]
        )

    assert "o3" in unknown.value.known_models
    assert set(broker.scan_iter(Keys(settings.key_prefix).job("*"))) == keys_before
    assert simulator.requests_with(marker) == []


def test_results_carry_the_response_and_usage_in_the_apis_shapes(client: TierqClient) -> None:
    result = client.wait(client.submit(model="gpt-4o-mini", messages=user("hi"), seed=3), 30)

    assert result.status is JobStatus.SUCCEEDED
    assert result.attempts == 1
    assert result.response is not None
    assert result.response.object == "chat.completion"
    assert result.answered_by == result.response.model
    assert result.content
    usage = result.usage
    assert usage is not None
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens > 0
    assert result.started_at is not None
    assert result.finished_at is not None
    assert result.submitted_at <= result.started_at <= result.finished_at
    assert result.error is None


def test_a_streamed_jobs_result_equals_its_deltas_joined(
    client: TierqClient, simulator: Simulator
) -> None:
    request = {"model": "gpt-4o", "messages": user(f"stream {nonce()}"), "seed": 11, "n": 2}

    result = client.wait(client.submit(request, stream=True), timeout=30)

    # The same seeded call, streamed directly with the SDK: the deltas joined per choice.
    direct = openai.OpenAI(base_url=simulator.base_url, api_key=API_KEY, max_retries=0)
    joined = {0: "", 1: ""}
    with direct.chat.completions.create(**request, stream=True) as stream:
        for chunk in stream:
            for choice in chunk.choices:
                joined[choice.index] += choice.delta.content or ""
    assert result.response is not None
    assert [c.message.content for c in result.response.choices] == [joined[0], joined[1]]
    assert result.usage is not None  # include_usage was asked for on the job's behalf
    assert result.usage.completion_tokens > 0


def test_tool_calls_and_json_output_come_back_whole(client: TierqClient) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "lookup",
                "parameters": {
                    "type": "object",
                    "properties": {"term": {"type": "string"}},
                    "required": ["term"],
                },
            },
        }
    ]
    tool_job = client.submit(
        model="gpt-4o", messages=user("look it up"), tools=tools, tool_choice="required"
    )
    json_job = client.submit(
        model="gpt-4o-mini",
        messages=user("Answer in JSON."),
        response_format={"type": "json_object"},
    )

    tool_result, json_result = client.wait_many([tool_job, json_job], timeout=30)

    assert tool_result.response is not None
    choice = tool_result.response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    call = choice.message.tool_calls[0]
    assert call.function.name == "lookup"
    assert "term" in json.loads(call.function.arguments)
    assert isinstance(json.loads(json_result.content or ""), dict)


@pytest.mark.parametrize(
    ("tier", "request_fields", "reason"),
    [
        ("reasoning", {"model": "o3", "temperature": 0.2}, "temperature"),
        ("fast", {"model": "gpt-4o"}, "not served by tier 'fast'"),
    ],
)
def test_a_hand_made_message_that_breaks_the_rules_is_refused_by_the_worker(
    client: TierqClient,
    settings: Settings,
    simulator: Simulator,
    tier: str,
    request_fields: dict[str, Any],
    reason: str,
) -> None:
    # Given a message put on a tier's queue by hand, past the producer's checks
    marker = nonce()
    envelope = JobEnvelope(
        job_id=f"hand-made-{marker}",
        tier=tier,
        submitted_at=datetime.now(UTC),
        request=JobRequest.model_validate({"messages": user(marker), **request_fields}),
    )
    app = create_app(settings)
    app.send_task(TASK_NAME, args=[envelope.to_message()], task_id=envelope.job_id)

    # Then the worker fails it without calling the API (and records it: no producer did)
    eventually(
        lambda: client.get_many([envelope.job_id]) != [None],
        what="the worker recording the hand-made job",
        timeout=30,
    )
    result = client.wait(envelope.job_id, timeout=30)
    app.close()
    assert result.status is JobStatus.FAILED
    assert result.error is not None
    assert result.error.type == "invalid_request"
    assert reason in result.error.message
    assert simulator.requests_with(marker) == []


def test_an_oversized_request_is_refused_before_enqueueing(
    client: TierqClient, settings: Settings, simulator: Simulator
) -> None:
    marker = nonce()
    huge = marker + " word" * (settings.max_request_bytes // 5)

    with pytest.raises(InvalidJobError, match="TIERQ_MAX_REQUEST_BYTES") as refused:
        client.submit(model="gpt-4o-mini", messages=user(huge))

    assert refused.value.errors[0]["field"] == "messages"
    assert simulator.requests_with(marker) == []
