"""The API call itself: a validated request and a client in, a `ChatCompletion` out.

No Celery here, so the call can be exercised without a broker. The client is built once per
worker process with the SDK's retries off (Celery owns retrying, or attempts would multiply)
and an HTTP connection pool as large as the process's concurrency, so no job pays for a
connection or a TLS handshake of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2
import openai
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from pydantic import ValidationError

from tierq.core.errors import ConfigurationError, PermanentProviderError, ProviderUnavailableError
from tierq.core.results import ChatCompletion
from tierq.core.settings import Settings
from tierq.worker.sdk_errors import translate

# The path `client.chat.completions.create` posts to, relative to the client's base URL.
CHAT_COMPLETIONS_PATH = "/chat/completions"
# Told of each chunk of a streamed answer as it arrives (worker/deltas.py publishes them).
ChunkCallback = Callable[[ChatCompletionChunk], None]


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """A finished call: the response, and the headers the limiter will learn from."""

    completion: ChatCompletion
    headers: dict[str, str]


def build_client(
    settings: Settings, *, max_connections: int, timeout_seconds: float | None = None
) -> openai.OpenAI:
    """The process's one client; the key is revealed here and nowhere else."""
    timeout = timeout_seconds or settings.request_timeout_seconds
    if settings.openai_api_key is None:
        raise ConfigurationError(
            "OPENAI_API_KEY is not set: a worker needs the provider's key "
            "(the demo starts the simulator and sets one for it)"
        )
    http_client = openai.DefaultHttpxClient(
        limits=httpx2.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        ),
        timeout=httpx2.Timeout(timeout, connect=5.0),
    )
    return openai.OpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url,
        max_retries=0,
        timeout=timeout,
        http_client=http_client,
    )


def call_chat_completions(
    client: openai.OpenAI,
    params: dict[str, Any],
    *,
    time_limit_seconds: float | None = None,
    on_chunk: ChunkCallback | None = None,
    timeout_seconds: float | None = None,
) -> CallOutcome:
    """Run one Chat Completions call; SDK errors leave as tierq `ProviderError`s.

    `time_limit_seconds` is the tier's hard limit: a call (a stream included) running past it
    is abandoned and fails the job, instead of being retried like a timeout. `on_chunk` sees
    each chunk of a streamed answer once the accumulator has taken it, so what a watcher is
    shown is what the result will hold; an unstreamed call never calls it. `timeout_seconds`
    replaces the client's timeout for this call (a flex call's is longer).
    """
    deadline = time.monotonic() + time_limit_seconds if time_limit_seconds else None
    try:
        if params.get("stream"):
            timeout: dict[str, Any] = (
                {} if timeout_seconds is None else {"timeout": timeout_seconds}
            )
            raw = client.chat.completions.with_raw_response.create(**params, **timeout)
            completion = _assemble_stream(raw.parse(), deadline, time_limit_seconds, on_chunk)
            return CallOutcome(completion, dict(raw.headers))
        # `params` were validated by JobRequest already; `create()` would walk them again
        # against the SDK's TypedDicts (which rename or reformat no Chat Completions field),
        # about 6% of a worker's CPU when the API answers at once. The SDK's own `post`
        # keeps everything else: auth, base URL, timeouts, and its errors for non-2xx answers.
        # The raw body is validated once, into our own model: no SDK model built and dumped.
        response = client.post(
            CHAT_COMPLETIONS_PATH,
            cast_to=httpx2.Response,
            body=params,
            options={} if timeout_seconds is None else {"timeout": timeout_seconds},
        )
        return CallOutcome(
            ChatCompletion.model_validate_json(response.content), dict(response.headers)
        )
    except openai.OpenAIError as error:
        if deadline is not None and time.monotonic() >= deadline:
            raise _past_time_limit(time_limit_seconds) from error
        raise translate(error) from error
    except ValidationError as error:
        raise _not_a_completion(error) from None


def _past_time_limit(limit: float | None) -> PermanentProviderError:
    return PermanentProviderError(
        f"the call ran past the tier's time limit of {limit or 0:g}s (TIME_LIMIT_SECONDS)",
        kind="time_limit_exceeded",
    )


def _not_a_completion(error: ValidationError) -> PermanentProviderError:
    # The API answered (and likely billed) but the body is not a chat completion: calling
    # again would pay twice for the same answer, so this fails the job, naming the field.
    first = error.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    return PermanentProviderError(
        f"the API's answer is not a chat completion ({where}: {first['msg']})",
        kind="invalid_response",
    )


def _assemble_stream(
    stream: openai.Stream[Any],
    deadline: float | None,
    limit: float | None,
    on_chunk: ChunkCallback | None = None,
) -> ChatCompletion:
    """Join a streamed answer into the same shape an unstreamed call returns.

    The SDK's own accumulator merges content, tool-call argument fragments, logprobs and the
    final usage chunk per choice; we only drop the helper's `parsed` fields.
    """
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    chunks = 0
    with stream:
        for chunk in stream:
            state.handle_chunk(chunk)
            if on_chunk is not None:
                on_chunk(chunk)
            chunks += 1
            if deadline is not None and time.monotonic() >= deadline:
                raise _past_time_limit(limit)
    return _completion_from(state, chunks)


def _completion_from(state: ChatCompletionStreamState[Any], chunks: int) -> ChatCompletion:
    if not chunks:
        raise ProviderUnavailableError("the API's stream ended before any chunk", kind="api_error")
    # Nulls the stream never set are dropped, then filled by our model's defaults: the result
    # has the same keys an unstreamed answer has, not the accumulator's own extras.
    snapshot = state.current_completion_snapshot.model_dump(mode="json", exclude_none=True)
    snapshot["object"] = "chat.completion"
    for choice in snapshot.get("choices", []):
        message = choice.get("message", {})
        message.pop("parsed", None)
        for call in message.get("tool_calls") or []:
            call.pop("index", None)
            call.get("function", {}).pop("parsed_arguments", None)
    return ChatCompletion.model_validate(snapshot)
