"""`POST /v1/chat/completions`: the order in which a request meets each check.

Authentication (401), JSON and parameter validation (400, context window included), then the
rate limiter (429, answered at once and consuming nothing), then directives and random
faults, then the latency, then the answer. Errors are always plain JSON responses sent
before any stream starts. A `timeout` fault waits its own delay instead of the latency, and
stops waiting as soon as the client hangs up. Everything but the waiting runs before the
first `await` after the body is read, so concurrent requests never interleave inside the
bookkeeping.
"""

import asyncio
import string
import time
from random import Random
from typing import Any

from pydantic_core import from_json
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive

from tierq_simulator import errors
from tierq_simulator.errors import ApiError
from tierq_simulator.generation import generate
from tierq_simulator.recorder import NO_RESPONSE_STATUS
from tierq_simulator.render import completion_body, event_stream
from tierq_simulator.request import parse_chat_request
from tierq_simulator.responses import EventStreamResponse, NoResponse, error_response
from tierq_simulator.state import SimulatorState

_IDS = Random()  # completion and request ids: unique, never seeded
_ID_ALPHABET = string.ascii_letters + string.digits
STATIC_HEADERS = {"openai-version": "2020-10-01", "openai-organization": "org-simulator"}


class ChatCompletions:
    """The chat completions endpoint over one simulator's state."""

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def handle(self, request: Request) -> Response:
        """Answer one chat completion request."""
        stats = self.state.recorder.stats
        stats.enter()
        try:
            return await self._answer(request)
        finally:
            stats.leave()

    async def _answer(self, request: Request) -> Response:
        started = time.perf_counter()
        received_at = time.time()
        body = await request.body()
        state = self.state
        config = state.config
        request_id = f"req_{_IDS.getrandbits(128):032x}"
        rate_headers: dict[str, str] = {}
        try:
            if not has_bearer_token(request.headers.get("authorization")):
                raise errors.missing_api_key()
            payload = _decode(body)
            chat = parse_chat_request(payload, config)
            admission = state.limiter.admit(chat.model, chat.token_cost)
            rate_headers = admission.headers
            if admission.refusal is not None:
                state.recorder.add(received_at, body, 429, rate_limited=True)
                return error_response(admission.refusal, _headers(request_id, started, {}))
            fault = state.faults.decide(payload, chat.directives, chat.model, config)
        except ApiError as error:
            state.recorder.add(received_at, body, error.status)
            return error_response(error, _headers(request_id, started, rate_headers))

        latency_ms = chat.directives.latency_ms
        if latency_ms is None:
            latency_ms = config.latency_ms
        if fault is not None and fault.kind != "timeout":
            status = fault.error.status if fault.error is not None else NO_RESPONSE_STATUS
            state.recorder.add(received_at, body, status, fault=fault.label)
            if latency_ms:
                await asyncio.sleep(latency_ms / 1000)
            if fault.error is None:
                return await _hang_up(request)
            return error_response(fault.error, _headers(request_id, started, rate_headers))

        choices = generate(chat, config.seed)
        state.recorder.add(
            received_at,
            body,
            200,
            fault=None if fault is None else fault.label,
            prompt_tokens=chat.prompt_tokens,
            completion_tokens=sum(choice.completion_tokens for choice in choices),
        )
        if fault is not None:
            if await _client_leaves_within(request.receive, fault.delay_seconds):
                return NoResponse()
        elif latency_ms:
            await asyncio.sleep(latency_ms / 1000)

        completion_id = "chatcmpl-" + "".join(_IDS.choices(_ID_ALPHABET, k=29))
        headers = _headers(request_id, started, rate_headers)
        if chat.stream:
            sse = event_stream(chat, choices, completion_id, int(received_at))
            return EventStreamResponse(sse, headers)
        content = completion_body(chat, choices, completion_id, int(received_at))
        return Response(content, 200, headers, media_type="application/json")


def has_bearer_token(authorization: str | None) -> bool:
    """Whether an `Authorization` header carries `Bearer <non-empty key>`; the key is unused."""
    if not authorization:
        return False
    scheme, _, token = authorization.partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


def _decode(body: bytes) -> Any:
    try:
        return from_json(body)
    except ValueError:
        raise errors.invalid_json_body() from None


def _headers(request_id: str, started: float, extra: dict[str, str]) -> dict[str, str]:
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    return {
        "x-request-id": request_id,
        "openai-processing-ms": str(elapsed_ms),
        **STATIC_HEADERS,
        **extra,
    }


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _client_leaves_within(receive: Receive, seconds: float) -> bool:
    """Wait up to `seconds`; return early (True) if the client hangs up first."""
    try:
        await asyncio.wait_for(_wait_for_disconnect(receive), timeout=seconds)
    except TimeoutError:
        return False
    return True


async def _hang_up(request: Request) -> Response:
    """Close the connection without sending any response (`fail=disconnect`).

    ASGI has no message for this, so the transport is taken from uvicorn's per-request
    cycle object, whose bound `receive` is what Starlette hands the endpoint.
    """
    transport = getattr(getattr(request.receive, "__self__", None), "transport", None)
    if transport is None:
        raise RuntimeError("fail=disconnect needs uvicorn, which exposes the connection")
    transport.close()
    await _wait_for_disconnect(request.receive)
    return NoResponse()
