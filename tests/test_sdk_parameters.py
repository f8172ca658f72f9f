"""Every parameter of the installed SDK's Chat Completions request type passes through tierq.

The contract takes its parameters from the `openai` SDK's own request types, so this walks
every key of them: each is submitted as a job with a valid value, and the body the worker sent
must equal, at the simulator, the body `client.chat.completions.create(**same)` sends. A key
without a value in `VALUES` fails the test, so a newer SDK's new parameter is noticed here.
"""

from __future__ import annotations

import typing
from typing import Any

import openai
import pytest
from openai.types.chat import completion_create_params

from tests.support import API_KEY, Simulator, eventually, nonce
from tierq.core.results import JobStatus
from tierq.producers.client import TierqClient

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
FUNCTION = {"name": "get_weather", "parameters": {"type": "object"}}

# Per SDK key: the parameters that make one valid job setting it (with what it needs beside it).
VALUES: dict[str, dict[str, Any]] = {
    "messages": {},
    "model": {"model": "gpt-4o-mini"},
    "audio": {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"}},
    "frequency_penalty": {"frequency_penalty": 0.5},
    "function_call": {"functions": [FUNCTION], "function_call": "auto"},
    "functions": {"functions": [FUNCTION]},
    "logit_bias": {"logit_bias": {"50256": -100}},
    "logprobs": {"logprobs": True},
    "max_completion_tokens": {"max_completion_tokens": 40},
    "max_tokens": {"max_tokens": 40},
    "metadata": {"store": True, "metadata": {"run": "7"}},
    "modalities": {"modalities": ["text"]},
    "moderation": {"moderation": {"model": "omni-moderation-latest"}},
    "n": {"n": 2},
    "parallel_tool_calls": {"tools": [TOOL], "parallel_tool_calls": False},
    "prediction": {"prediction": {"type": "content", "content": "Nile"}},
    "presence_penalty": {"presence_penalty": -0.5},
    "prompt_cache_key": {"prompt_cache_key": "rivers-v1"},
    "prompt_cache_options": {"prompt_cache_options": {"mode": "implicit"}},
    "prompt_cache_retention": {"prompt_cache_retention": "24h"},
    "reasoning_effort": {"model": "o4-mini", "reasoning_effort": "low"},
    "response_format": {"response_format": {"type": "text"}},
    "safety_identifier": {"safety_identifier": "user-hash-1"},
    "seed": {"seed": 42},
    "service_tier": {"model": "o4-mini", "service_tier": "flex"},
    "stop": {"stop": ["END"]},
    "store": {"store": True},
    "stream": {"stream": True, "stream_options": {"include_usage": True}},
    "stream_options": {
        "stream": True,
        "stream_options": {"include_usage": True, "include_obfuscation": False},
    },
    "temperature": {"temperature": 0.3},
    "tool_choice": {"tools": [TOOL], "tool_choice": "auto"},
    "tools": {"tools": [TOOL]},
    "top_logprobs": {"logprobs": True, "top_logprobs": 2},
    "top_p": {"top_p": 0.9},
    "user": {"user": "end-user-7"},
    "verbosity": {"verbosity": "low"},
    "web_search_options": {"web_search_options": {"search_context_size": "low"}},
}


def sdk_keys() -> set[str]:
    keys: set[str] = set()
    for request_type in typing.get_args(completion_create_params.CompletionCreateParams):
        keys |= set(typing.get_type_hints(request_type))
    return keys


def test_every_key_of_the_sdks_request_type_has_a_value_to_walk() -> None:
    assert sdk_keys() - set(VALUES) == set(), "a new SDK parameter: give it a value in VALUES"


def send_directly(simulator: Simulator, params: dict[str, Any]) -> None:
    """`params` sent by the SDK's own `create`, whatever the simulator answers."""
    direct = openai.OpenAI(base_url=simulator.base_url, api_key=API_KEY, max_retries=0)
    try:
        answer = direct.chat.completions.create(**params)
        if params.get("stream"):
            with answer as stream:  # type: ignore[union-attr]
                for _ in stream:
                    pass
    except openai.APIError:
        pass


def test_every_sdk_parameter_reaches_the_wire_as_create_sends_it(
    client: TierqClient, simulator: Simulator
) -> None:
    # Given: one job per SDK key, each marked so its calls can be found at the simulator.
    jobs: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for key in sorted(sdk_keys()):
        marker = nonce()
        params = {
            "model": "gpt-4o",
            "messages": [{"role": "user", "content": f"Name a river. {marker}"}],
            **VALUES[key],
        }
        jobs[key] = (marker, client.submit(params), params)

    # When: the jobs have run, and the same parameters were sent by the SDK itself.
    for key, (_, job_id, params) in jobs.items():
        finished = client.wait(job_id, timeout=60)
        assert finished.status in (JobStatus.SUCCEEDED, JobStatus.FAILED), key
        send_directly(simulator, params)

    # Then: for every key, the two bodies that reached the API are equal.
    for key, (marker, _, params) in jobs.items():
        by_worker, by_create = eventually(
            lambda m=marker: simulator.requests_with(m),  # type: ignore[misc]
            what=f"both calls for {key} recorded",
            timeout=10,
            until=lambda calls: len(calls) == 2,
        )
        assert by_worker["body"] == by_create["body"], key
        assert by_worker["body"] == params, key


def test_the_apis_own_parameters_reach_it_unchanged_and_labels_do_not(
    client: TierqClient, simulator: Simulator
) -> None:
    # Given: a job setting the API's service and storage parameters, and tierq's labels.
    marker = nonce()
    request: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": f"Name a river. {marker}"}],
        "service_tier": "priority",
        "logit_bias": {"50256": -100},
        "store": True,
        "metadata": {"run": "7", "team": "search"},
        "prompt_cache_key": "rivers-v1",
        "safety_identifier": "user-hash-1",
    }

    # When: it runs.
    result = client.wait(client.submit(request, labels={"tenant": "acme"}), timeout=30)

    # Then: the API got every one of them unchanged, and nothing of tierq's.
    assert result.status is JobStatus.SUCCEEDED
    [call] = simulator.requests_with(marker)
    assert call["body"] == request
    assert "acme" not in str(call["body"])
    assert result.labels == {"tenant": "acme"}


# --- shapes inside the parameters: every one the SDK's types accept -----------------------------

CUSTOM_TOOL = {
    "type": "custom",
    "custom": {
        "name": "run_sql",
        "description": "Runs one SQL query.",
        "format": {"type": "grammar", "grammar": {"syntax": "lark", "definition": 'start: "x"'}},
    },
}


def shapes(marker: str) -> dict[str, dict[str, Any]]:
    """Per shape the SDK's types accept: a whole request using it, `marker` in its first message."""
    user = {"role": "user", "content": f"Name a river. {marker}"}
    return {
        "function-role-message": {
            "functions": [FUNCTION],
            "messages": [
                user,
                {
                    "role": "assistant",
                    "content": None,
                    "function_call": {"name": "get_weather", "arguments": "{}"},
                },
                {"role": "function", "name": "get_weather", "content": "sunny"},
            ],
        },
        "assistant-audio": {
            "messages": [
                user,
                {"role": "assistant", "audio": {"id": "audio_abc123"}},
                {"role": "user", "content": "And another?"},
            ],
        },
        "custom-tool-and-choice": {
            "messages": [user],
            "tools": [CUSTOM_TOOL],
            "tool_choice": {"type": "custom", "custom": {"name": "run_sql"}},
        },
        "custom-tool-call-answered": {
            "tools": [CUSTOM_TOOL],
            "messages": [
                user,
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "custom",
                            "custom": {"name": "run_sql", "input": "select 1"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "1"},
            ],
        },
        "allowed-tools-choice": {
            "messages": [user],
            "tools": [TOOL],
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {
                    "mode": "required",
                    "tools": [{"type": "function", "function": {"name": "get_weather"}}],
                },
            },
        },
        "image-detail-original": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": user["content"]},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://a.test/x.png", "detail": "original"},
                        },
                    ],
                }
            ],
        },
        "prompt-cache-breakpoint-on-a-part": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "text",
                            "text": user["content"],
                            "prompt_cache_breakpoint": {"mode": "explicit", "ttl": "30m"},
                        }
                    ],
                }
            ],
        },
        "null-sampling-parameters": {
            "messages": [user],
            "temperature": None,
            "top_p": None,
            "n": None,
            "logprobs": None,
            "frequency_penalty": None,
            "presence_penalty": None,
            "stream": None,
        },
    }


@pytest.mark.parametrize("shape", sorted(shapes("")))
def test_a_shape_the_sdk_accepts_reaches_the_wire_as_create_sends_it(
    shape: str, client: TierqClient, simulator: Simulator
) -> None:
    # Given: a job using the shape, marked so its calls can be found at the simulator.
    marker = nonce()
    params = {"model": "gpt-4o", **shapes(marker)[shape]}

    # When: it runs, and the same parameters are sent by the SDK itself.
    finished = client.wait(client.submit(params), timeout=60)
    send_directly(simulator, params)

    # Then: the simulator answered it, and the two bodies that reached it are equal: the job's.
    assert finished.status is JobStatus.SUCCEEDED, finished.error
    by_worker, by_create = eventually(
        lambda: simulator.requests_with(marker),
        what="both calls recorded",
        timeout=10,
        until=lambda calls: len(calls) == 2,
    )
    assert by_worker["body"] == by_create["body"]
    assert by_worker["body"] == params
