"""Generated choices rendered as the API's `chat.completion` body or its SSE chunk stream.

Shapes follow `openai.types.chat.ChatCompletion` and `ChatCompletionChunk` field by field,
so the SDK parses them into its types exactly as it parses the real API. The stream is
built in one pass into a list of SSE events (sent one by one, or joined into one write when
no delay separates them): every chunk shares a pre-encoded prefix and only its `choices`
entry is encoded, which keeps the per-request CPU small.
"""

from typing import Any

from pydantic_core import to_json

from tierq_simulator.catalog import snapshot_for
from tierq_simulator.errors import ApiError
from tierq_simulator.generation import GeneratedChoice, ToolCall
from tierq_simulator.request import ChatRequest

SYSTEM_FINGERPRINT = "fp_51d2f7c4a9"  # constant: one simulated backend configuration


DONE_EVENT = b"data: [DONE]\n\n"


def usage(
    request: ChatRequest, choices: list[GeneratedChoice], cached_tokens: int = 0
) -> dict[str, Any]:
    """The `usage` object: prompt and completion tokens with their details."""
    completion = sum(choice.completion_tokens for choice in choices)
    return {
        "prompt_tokens": request.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": request.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": sum(choice.reasoning_tokens for choice in choices),
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": "".join(call.arguments)},
    }


def _message(choice: GeneratedChoice) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": None if choice.content is None else "".join(choice.content),
        "refusal": None if choice.refusal is None else "".join(choice.refusal),
        "annotations": [],
    }
    if choice.tool_calls:
        message["tool_calls"] = [_tool_call(call) for call in choice.tool_calls]
    return message


def completion_body(
    request: ChatRequest,
    choices: list[GeneratedChoice],
    completion_id: str,
    created: int,
    cached_tokens: int = 0,
) -> bytes:
    """The JSON body of a non-streamed answer."""
    return to_json(
        {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": snapshot_for(request.model),
            "choices": [
                {
                    "index": choice.index,
                    "message": _message(choice),
                    "logprobs": {"content": choice.logprobs, "refusal": None}
                    if request.logprobs
                    else None,
                    "finish_reason": choice.finish_reason,
                }
                for choice in choices
            ],
            "usage": usage(request, choices, cached_tokens),
            "service_tier": request.service_tier,
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }
    )


def stream_events(
    request: ChatRequest,
    choices: list[GeneratedChoice],
    completion_id: str,
    created: int,
    cached_tokens: int = 0,
) -> list[bytes]:
    """The SSE events of a streamed answer, in order: the role chunk, one chunk per content
    token, the finish chunk of each choice, the usage chunk if asked, then `data: [DONE]`."""
    prefix = b"".join(
        (
            b'data: {"id":',
            to_json(completion_id),
            b',"object":"chat.completion.chunk","created":',
            str(created).encode(),
            b',"model":',
            to_json(snapshot_for(request.model)),
            b',"service_tier":',
            to_json(request.service_tier),
            b',"system_fingerprint":"',
            SYSTEM_FINGERPRINT.encode(),
            b'","choices":[',
        )
    )
    suffix = b'],"usage":null}\n\n' if request.include_usage else b"]}\n\n"
    events = [
        b"".join((prefix, to_json(entry), suffix))
        for choice in choices
        for entry in _choice_chunks(request, choice)
    ]
    if request.include_usage:
        totals = to_json(usage(request, choices, cached_tokens))
        events.append(b"".join((prefix, b'],"usage":', totals, b"}\n\n")))
    events.append(DONE_EVENT)
    return events


def error_event(error: ApiError) -> bytes:
    """An error sent inside a stream that has already started, in the API's shape: a data
    event whose JSON holds `error` (the openai SDK raises `APIError` when it reads one)."""
    return b"".join((b"data: ", to_json(error.body()), b"\n\n"))


def _choice_chunks(request: ChatRequest, choice: GeneratedChoice) -> list[dict[str, Any]]:
    """The `choices` entries streamed for one choice, in order."""
    index = choice.index
    empty_logprobs: dict[str, Any] | None = (
        {"content": [], "refusal": None} if request.logprobs else None
    )
    entries: list[dict[str, Any]] = []
    if choice.content is not None:
        first_delta: dict[str, Any] = {"role": "assistant", "content": "", "refusal": None}
        entries.append(_entry(index, first_delta, empty_logprobs))
        logprobs = choice.logprobs
        for position, piece in enumerate(choice.content):
            piece_logprobs = (
                {"content": [logprobs[position]], "refusal": None} if logprobs is not None else None
            )
            entries.append(_entry(index, {"content": piece}, piece_logprobs))
    elif choice.refusal is not None:
        entries.append(_entry(index, {"role": "assistant", "content": None, "refusal": ""}, None))
        entries.extend(_entry(index, {"refusal": piece}, None) for piece in choice.refusal)
    else:
        first_delta = {"role": "assistant", "content": None, "refusal": None}
        for number, call in enumerate(choice.tool_calls):
            header = {
                "index": number,
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": ""},
            }
            if number == 0:
                entries.append(_entry(index, {**first_delta, "tool_calls": [header]}, None))
            else:
                entries.append(_entry(index, {"tool_calls": [header]}, None))
            for fragment in call.arguments:
                delta = {"tool_calls": [{"index": number, "function": {"arguments": fragment}}]}
                entries.append(_entry(index, delta, None))
        if not choice.tool_calls:
            entries.append(_entry(index, first_delta, None))
    entries.append(
        {"index": index, "delta": {}, "logprobs": None, "finish_reason": choice.finish_reason}
    )
    return entries


def _entry(index: int, delta: dict[str, Any], logprobs: dict[str, Any] | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}
