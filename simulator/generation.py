"""What the simulated model "says": text, JSON, tool calls, reasoning and logprobs.

Everything is drawn from a `random.Random`. With a seed (the request's `seed`, else the
server's `--seed`), each choice's generator is seeded from the seed, a sha256 of the
messages and the choice index, so the same request gets the same answer every time,
streamed or not, and `n` choices differ from each other. Without a seed, answers vary.

Each choice draws its length, reasoning scale and auxiliary seed first, whatever the
request asks, so options such as `logprobs`, `max_tokens` or `stream` never shift the words
that follow: a shorter limit cuts the same answer shorter.

Output is kept as token pieces (see `simulator.tokens`): the non-streamed content is their
concatenation and a stream sends one piece per delta, so the two always agree and
`completion_tokens` is simply the number of pieces (plus reasoning tokens).
"""

import hashlib
import json
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from random import Random
from typing import Any

from tierq_simulator.request import ChatRequest, FunctionTool
from tierq_simulator.schema import instance_for
from tierq_simulator.tokens import count_tokens, split_tokens
from tierq_simulator.vocabulary import WORDS, phrase

ANSWER_TOKENS_RANGE = (8, 24)  # length of a plain text answer when not directed
REASONING_SPREAD = 0.25  # reasoning tokens vary ±25% around the effort's base
REASONING_TOKENS_BY_EFFORT = {
    "none": 0,
    "minimal": 16,
    "low": 64,
    "medium": 192,
    "high": 512,
    "xhigh": 1024,
    "max": 2048,
}
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."  # `[sim refuse=yes]`
_ID_ALPHABET = string.ascii_letters + string.digits
_UNSEEDED = Random()  # shared by unseeded requests; generation never awaits, so no races


@dataclass(slots=True)
class ToolCall:
    """One function call the model makes; `arguments` as token pieces of a JSON object."""

    id: str
    name: str
    arguments: list[str]


@dataclass(slots=True)
class GeneratedChoice:
    """One choice of the answer, ready to render streamed or not."""

    index: int
    content: list[str] | None  # token pieces; None when the answer is tool calls
    finish_reason: str
    reasoning_tokens: int = 0
    tool_calls: list[ToolCall] = field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None  # per content piece, in the API's shape
    refusal: list[str] | None = None  # token pieces of a refusal (then content is None)

    @property
    def completion_tokens(self) -> int:
        """Tokens billed for this choice: reasoning, content, refusal and tool calls."""
        visible = len(self.content or ()) + len(self.refusal or ())
        calls = sum(count_tokens(call.name) + len(call.arguments) for call in self.tool_calls)
        return self.reasoning_tokens + visible + calls


def generate(request: ChatRequest, server_seed: int | None) -> list[GeneratedChoice]:
    """Generate the request's `n` choices."""
    seed = request.seed if request.seed is not None else server_seed
    tools = tools_to_call(request)
    if seed is None:
        return [_choice(request, index, _UNSEEDED, tools) for index in range(request.n)]
    base = f"{seed}:{_messages_digest(request.messages)}"
    return [_choice(request, index, Random(f"{base}:{index}"), tools) for index in range(request.n)]


def tools_to_call(request: ChatRequest) -> list[FunctionTool]:
    """The tools the model calls: forced, required, or named in the last user message."""
    choice = request.tool_choice
    if choice.mode == "none" or not request.tools:
        return []
    tools = [t for t in request.tools if choice.allowed is None or t.name in choice.allowed]
    if choice.forced is not None:
        return [t for t in tools if t.name == choice.forced][:1]
    text = _last_user_text(request.messages)
    called = [t for t in tools if t.name in text]
    if choice.mode == "required" and not called:
        called = tools[:1]
    return called if request.parallel_tool_calls else called[:1]


def _choice(
    request: ChatRequest, index: int, rng: Random, tools: list[FunctionTool]
) -> GeneratedChoice:
    answer_tokens = rng.randint(*ANSWER_TOKENS_RANGE)
    reasoning_scale = rng.uniform(1 - REASONING_SPREAD, 1 + REASONING_SPREAD)
    aux_seed = rng.getrandbits(64)
    if request.directives.tokens is not None:
        answer_tokens = request.directives.tokens

    budget = request.max_output_tokens
    reasoning = 0
    if request.reasoning_effort is not None:
        reasoning = round(REASONING_TOKENS_BY_EFFORT[request.reasoning_effort] * reasoning_scale)
        if budget is not None and reasoning >= budget:
            # Thinking used the whole budget: the API answers with empty content.
            return GeneratedChoice(index, [], "length", reasoning_tokens=budget)
        if budget is not None:
            budget -= reasoning

    if request.directives.refuse:
        refusal = split_tokens(REFUSAL_TEXT)
        return GeneratedChoice(index, None, "stop", reasoning, refusal=refusal)

    if tools:
        return _tool_choice(index, rng, Random(aux_seed), tools, budget, reasoning)

    if request.response_format == "json_schema":
        pieces = split_tokens(_dumps(instance_for(request.json_schema or {}, rng)))
    elif request.response_format == "json_object":
        pieces = split_tokens(_dumps(_json_object(rng)))
    else:
        pieces = _words(rng, answer_tokens)

    finish_reason = "stop"
    if budget is not None and len(pieces) > budget:
        pieces, finish_reason = pieces[:budget], "length"
    if request.stop:
        pieces, stopped = _cut_at_stop(pieces, request.stop)
        if stopped:
            finish_reason = "stop"
    logprobs = (
        _logprobs(pieces, Random(aux_seed), request.top_logprobs) if request.logprobs else None
    )
    return GeneratedChoice(index, pieces, finish_reason, reasoning, logprobs=logprobs)


def _tool_choice(
    index: int,
    rng: Random,
    aux: Random,
    tools: list[FunctionTool],
    budget: int | None,
    reasoning: int,
) -> GeneratedChoice:
    calls: list[ToolCall] = []
    finish_reason = "tool_calls"
    for tool in tools:
        call_id = "call_" + "".join(aux.choices(_ID_ALPHABET, k=24))
        arguments = split_tokens(_dumps(instance_for(tool.parameters, rng)))
        if budget is not None:
            budget -= count_tokens(tool.name)
            if len(arguments) > budget:
                arguments, finish_reason = arguments[: max(budget, 0)], "length"
            budget -= len(arguments)
        calls.append(ToolCall(call_id, tool.name, arguments))
        if finish_reason == "length":
            break
    return GeneratedChoice(index, None, finish_reason, reasoning, tool_calls=calls)


def _words(rng: Random, count: int) -> list[str]:
    words = rng.choices(WORDS, k=count)
    if not words:
        return []
    return [words[0].capitalize(), *(" " + word for word in words[1:])]


def _json_object(rng: Random) -> dict[str, Any]:
    keys = rng.sample(WORDS, rng.randint(2, 4))
    makers = (
        lambda: phrase(rng, rng.randint(1, 3)),
        lambda: rng.randint(0, 1000),
        lambda: rng.random() < 0.5,
    )
    return {key: rng.choice(makers)() for key in keys}


def _cut_at_stop(pieces: list[str], stops: Sequence[str]) -> tuple[list[str], bool]:
    """Cut the text before the first stop sequence; say whether one was found."""
    text = "".join(pieces)
    found = [position for stop in stops if (position := text.find(stop)) >= 0]
    if not found:
        return pieces, False
    cut, kept, length = min(found), [], 0
    for piece in pieces:
        if length + len(piece) > cut:
            if cut > length:
                kept.append(piece[: cut - length])
            break
        kept.append(piece)
        length += len(piece)
    return kept, True


def _logprobs(pieces: list[str], rng: Random, top: int) -> list[dict[str, Any]]:
    """Per-token logprobs in the API's shape; the chosen token leads its `top_logprobs`."""
    entries = []
    for piece in pieces:
        logprob = -round(rng.expovariate(6.0), 6)
        alternatives = []
        if top:
            alternatives.append({"token": piece, "logprob": logprob, "bytes": list(piece.encode())})
            lead = piece[: len(piece) - len(piece.lstrip())]
            lower = logprob
            for word in rng.sample(WORDS, top + 1):
                if len(alternatives) == top:
                    break
                if word == piece.strip():
                    continue
                lower = round(lower - rng.uniform(0.5, 3.0), 6)
                token = lead + word
                alternatives.append(
                    {"token": token, "logprob": lower, "bytes": list(token.encode())}
                )
        entries.append(
            {
                "token": piece,
                "logprob": logprob,
                "bytes": list(piece.encode()),
                "top_logprobs": alternatives,
            }
        )
    return entries


def _last_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):
                return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
            return str(content or "")
    return ""


def _messages_digest(messages: list[Mapping[str, Any]]) -> str:
    canonical = json.dumps(messages, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
