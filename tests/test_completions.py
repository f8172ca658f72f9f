"""The API call's edge cases, with answers no well-behaved server sends (so no simulator):
the SDK talks to an in-process `httpx2.MockTransport` here, a fake transport for pure logic."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest

from tierq.core.errors import PermanentProviderError, ProviderUnavailableError
from tierq.worker.completions import call_chat_completions

REQUEST: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}


def client_answering(handler: Callable[[httpx2.Request], httpx2.Response]) -> openai.OpenAI:
    return openai.OpenAI(
        api_key="sk-test",
        base_url="https://api.test/v1",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def sse(*chunks: dict[str, Any]) -> httpx2.Response:
    body = "".join(f"data: {json.dumps(chunk)}\n\n" for chunk in chunks) + "data: [DONE]\n\n"
    return httpx2.Response(200, content=body, headers={"content-type": "text/event-stream"})


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }


def test_a_stream_without_a_role_is_still_the_assistants_answer() -> None:
    client = client_answering(
        lambda _: sse(chunk({"content": "Hel"}), chunk({"content": "lo"}), chunk({}, "stop"))
    )

    outcome = call_chat_completions(client, {**REQUEST, "stream": True})

    message = outcome.completion.choices[0].message
    assert (message.role, message.content) == ("assistant", "Hello")
    assert outcome.completion.choices[0].finish_reason == "stop"


def test_a_streamed_tool_call_has_the_shape_of_an_unstreamed_one() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
    client = client_answering(
        lambda _: sse(
            chunk(
                {
                    "role": "assistant",
                    "tool_calls": [{**call, "function": {"name": "f", "arguments": ""}}],
                }
            ),
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a": 1}'}}]}),
            chunk({}, "tool_calls"),
        )
    )

    outcome = call_chat_completions(client, {**REQUEST, "stream": True})

    dumped = outcome.completion.model_dump(mode="json")
    assert dumped["choices"][0]["message"]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    ]


def test_an_empty_stream_is_a_transient_fault() -> None:
    client = client_answering(lambda _: sse())

    with pytest.raises(ProviderUnavailableError, match="stream ended before any chunk"):
        call_chat_completions(client, {**REQUEST, "stream": True})


def test_an_answer_that_is_not_a_chat_completion_fails_without_a_retry() -> None:
    client = client_answering(lambda _: httpx2.Response(200, json={"id": "x", "model": "m"}))

    with pytest.raises(PermanentProviderError, match="choices") as failed:
        call_chat_completions(client, REQUEST)

    assert failed.value.kind == "invalid_response"


def test_an_answer_without_optional_fields_is_accepted() -> None:
    body = {
        "id": "x",
        "model": "m",
        "choices": [{"index": 0, "message": {"content": "ok"}, "finish_reason": "stop"}],
    }
    client = client_answering(lambda _: httpx2.Response(200, json=body))

    completion = call_chat_completions(client, REQUEST).completion

    assert completion.choices[0].message.content == "ok"
    assert completion.usage is None


def test_the_call_posts_exactly_what_the_sdks_create_would() -> None:
    # The worker posts validated params through the SDK's `post`, skipping `create()`'s
    # re-walk of them: the request on the wire must be the same one.
    params: dict[str, Any] = {
        "model": "o4-mini",
        "messages": [
            {"role": "developer", "content": "Answer in JSON."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is in this image?"},
                    {"type": "image_url", "image_url": {"url": "https://img.test/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "look", "arguments": '{"q": "a"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "a cat"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "look",
                    "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
                },
            }
        ],
        "tool_choice": "auto",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
        "reasoning_effort": "low",
        "max_completion_tokens": 256,
        "stop": ["\n\n", "END"],
        "seed": 7,
        "n": 2,
        "logprobs": True,
        "top_logprobs": 3,
        "user": "u-1",
        "metadata": {"job": "j-1"},
    }
    answer = {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "o4-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"}}],
    }
    sent: list[httpx2.Request] = []

    def capture(request: httpx2.Request) -> httpx2.Response:
        sent.append(request)
        return httpx2.Response(200, json=answer)

    client = client_answering(capture)
    client.chat.completions.create(**params)
    call_chat_completions(client, params)

    by_create, by_worker = sent
    assert (by_worker.method, by_worker.url) == (by_create.method, by_create.url)
    assert json.loads(by_worker.content) == json.loads(by_create.content)

    # Every header alike, but the one `with_raw_response` adds to tell the SDK what to return.
    def headers(request: httpx2.Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k != "x-stainless-raw-response"}

    assert headers(by_worker) == headers(by_create)
