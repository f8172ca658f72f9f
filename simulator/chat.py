"""`POST /v1/chat/completions`: the order in which a request meets each check.

Authentication (401), JSON and parameter validation (400, context window included; a 400
naming a model still takes one request from that model's RPM budget), then the rate limiter
(429, which also takes its one request, and no tokens), then directives and random faults,
then generation (the token reservation is settled with the real usage, and the prompt cache
is consulted), then the latency, then the answer, streamed chunk by chunk or not. Errors are
plain JSON responses sent before any stream starts, except the mid-stream faults. A `timeout`
fault waits its own delay instead of the latency, and stops waiting as soon as the client
hangs up. Everything but the waiting runs before the first `await` after the body is read,
so concurrent requests never interleave inside the bookkeeping.
"""

import asyncio
import string
import time
from dataclasses import dataclass, field
from random import Random
from typing import Any

from pydantic_core import from_json
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tierq_simulator import errors
from tierq_simulator.errors import ApiError
from tierq_simulator.faults import Fault
from tierq_simulator.generation import GeneratedChoice, generate
from tierq_simulator.ratelimit import RateLimiter
from tierq_simulator.recorder import NO_RESPONSE_STATUS
from tierq_simulator.render import completion_body, error_event, stream_events
from tierq_simulator.request import ChatRequest, parse_chat_request
from tierq_simulator.responses import NoResponse, error_response
from tierq_simulator.state import SimulatorState
from tierq_simulator.streaming import (
    CutBodyResponse,
    EventStreamResponse,
    StreamFault,
    hang_up,
    wait_for_disconnect,
)

_IDS = Random()  # completion and request ids: unique, never seeded
_ID_ALPHABET = string.ascii_letters + string.digits
STATIC_HEADERS = {"openai-version": "2020-10-01", "openai-organization": "org-simulator"}


class ChatCompletions:
    """The chat completions endpoint over one simulator's state, as an ASGI app.

    An app rather than a request handler so that a request counts as in flight
    (`GET /sim/stats`) until its answer is sent to the end, a paced stream included.
    """

    def __init__(self, state: SimulatorState) -> None:
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one chat completion request."""
        stats = self.state.recorder.stats
        stats.enter()
        try:
            response = await self._answer(Request(scope, receive, send))
            await response(scope, receive, send)
        finally:
            stats.leave()

    async def _answer(self, request: Request) -> Response:
        exchange = _Exchange(request, await request.body())
        state = self.state
        config = state.config
        try:
            if not has_bearer_token(request.headers.get("authorization")):
                raise errors.missing_api_key()
            payload = _decode(exchange.body)
            try:
                chat = parse_chat_request(payload, config)
            except ApiError:
                exchange.rate_headers = _count_refused(state.limiter, payload)
                raise
            admission = state.limiter.admit(chat.model, chat.token_cost)
            exchange.rate_headers = admission.headers
            if admission.refusal is not None:
                exchange.record(state, 429, rate_limited=True)
                return error_response(admission.refusal, exchange.headers())
            fault = state.faults.decide(payload, chat.directives, chat.model, config)
            if chat.service_tier == "flex" and state.faults.flex_unavailable(
                chat.directives, config
            ):
                admission.settle(0)  # turned away: nothing processed, nothing billed
                raise errors.flex_unavailable(chat.model)
        except ApiError as error:
            exchange.record(state, error.status)
            return error_response(error, exchange.headers())

        latency_ms = chat.directives.latency_ms
        if latency_ms is None:
            latency_ms = config.latency_ms
        if chat.service_tier == "flex":
            latency_ms *= config.flex_latency_factor  # flex answers come slower
        if fault is not None and (
            fault.kind in ("error", "disconnect") or _unstreamed_error(fault, chat.stream)
        ):
            admission.settle(0)  # nothing was processed
            return await self._fail(exchange, fault, latency_ms)

        choices = generate(chat, config.seed)
        completion_tokens = sum(choice.completion_tokens for choice in choices)
        admission.settle(chat.prompt_tokens + completion_tokens)
        cached_tokens = state.prompt_cache.lookup_and_store(
            chat.model, chat.messages, payload.get("tools"), chat.prompt_tokens
        )
        exchange.record(
            state,
            200,
            fault=None if fault is None else fault.label,
            prompt_tokens=chat.prompt_tokens,
            completion_tokens=completion_tokens,
        )
        if fault is not None and fault.kind == "timeout":
            if await _client_leaves_within(request.receive, fault.delay_seconds):
                return NoResponse()
        elif latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        return self._send(exchange, chat, choices, cached_tokens, fault)

    async def _fail(self, exchange: "_Exchange", fault: Fault, latency_ms: float) -> Response:
        """Answer with the fault's error, or hang up, after the latency."""
        status = fault.error.status if fault.error is not None else NO_RESPONSE_STATUS
        exchange.record(self.state, status, fault=fault.label)
        if latency_ms:
            await asyncio.sleep(latency_ms / 1000)
        if fault.error is None:
            await hang_up(exchange.request.receive)
            return NoResponse()
        return error_response(fault.error, exchange.headers())

    def _send(
        self,
        exchange: "_Exchange",
        chat: ChatRequest,
        choices: list[GeneratedChoice],
        cached_tokens: int,
        fault: Fault | None,
    ) -> Response:
        """The answer: a stream (paced, maybe failing mid-way) or one JSON body."""
        completion_id = "chatcmpl-" + "".join(_IDS.choices(_ID_ALPHABET, k=29))
        created = int(exchange.received_at)
        if chat.stream:
            chunk_delay_ms = chat.directives.chunk_delay_ms
            if chunk_delay_ms is None:
                chunk_delay_ms = self.state.config.chunk_delay_ms
            return EventStreamResponse(
                stream_events(chat, choices, completion_id, created, cached_tokens),
                exchange.headers(),
                chunk_delay_seconds=chunk_delay_ms / 1000,
                fault=_stream_fault(fault),
            )
        content = completion_body(chat, choices, completion_id, created, cached_tokens)
        if fault is not None and fault.kind == "stream_cut":
            return CutBodyResponse(content, exchange.headers())
        return Response(content, 200, exchange.headers(), media_type="application/json")


@dataclass(slots=True)
class _Exchange:
    """One request being answered: what its record and its answer's headers need."""

    request: Request
    body: bytes
    request_id: str = field(default_factory=lambda: f"req_{_IDS.getrandbits(128):032x}")
    started: float = field(default_factory=time.perf_counter)
    received_at: float = field(default_factory=time.time)
    rate_headers: dict[str, str] = field(default_factory=dict)

    def record(self, state: SimulatorState, status: int, **outcome: Any) -> None:
        """Add the request and how it was answered to the simulator's records."""
        state.recorder.add(self.received_at, self.body, status, **outcome)

    def headers(self) -> dict[str, str]:
        """The answer's headers: ids, timing, and the rate limits of the request's model."""
        elapsed_ms = int((time.perf_counter() - self.started) * 1000)
        return {
            "x-request-id": self.request_id,
            "openai-processing-ms": str(elapsed_ms),
            **STATIC_HEADERS,
            **self.rate_headers,
        }


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


def _count_refused(limiter: RateLimiter, payload: object) -> dict[str, str]:
    """Charge a request refused with a 400 to its model's RPM budget, if it names one."""
    model = payload.get("model") if isinstance(payload, dict) else None
    return limiter.count_refused(model) if isinstance(model, str) else {}


def _unstreamed_error(fault: Fault, stream: bool) -> bool:
    """A mid-stream error asked of a request that is not streamed: answered as that error."""
    return fault.kind == "stream_error" and not stream


def _stream_fault(fault: Fault | None) -> StreamFault | None:
    if fault is None or fault.kind not in ("stream_cut", "stream_error"):
        return None
    if fault.kind == "stream_error" and fault.error is not None:
        return StreamFault("stream_error", fault.after, error_event(fault.error))
    return StreamFault("stream_cut", fault.after)


async def _client_leaves_within(receive: Receive, seconds: float) -> bool:
    """Wait up to `seconds`; return early (True) if the client hangs up first."""
    try:
        await asyncio.wait_for(wait_for_disconnect(receive), timeout=seconds)
    except TimeoutError:
        return False
    return True
