"""Fitting a long conversation into its model's context window by dropping its oldest turns.

By default a conversation that cannot fit (its counted prompt tokens plus its output cap over the
window) is refused at submit. A job that opts in (`context_overflow="sliding_window"`) is
instead trimmed here, before it is enqueued, so the worker sends the trimmed conversation and the
budget is checked on what is sent. What is dropped, oldest first, one turn at a time:

- never a system or developer message (the instructions stay, in place);
- never the last user message, nor anything after it (the question being asked, and the
  tool calls and results of the turn in progress);
- an assistant message carrying `tool_calls` together with the tool messages answering it, as
  one turn: the API refuses a tool result whose call is gone, and a call with no result.

If even the kept messages do not fit, the job is refused as without the window, naming the
numbers. Pure: no settings, no I/O; `producers/submission.py` calls it with the model's window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from tierq.core.budget import cap_field, output_cap
from tierq.core.contract import (
    DeveloperMessage,
    FunctionMessage,
    JobRequest,
    Message,
    SystemMessage,
    ToolMessage,
    UserMessage,
)
from tierq.core.errors import RequestTooLargeError
from tierq.core.tokens import count_message_tokens, count_prompt_tokens

# What to do with a conversation over its model's context window: refuse it at submit (the
# default), or drop its oldest turns until it fits.
ContextOverflow = Literal["refuse", "sliding_window"]
CONTEXT_OVERFLOW_DEFAULT: ContextOverflow = "refuse"
CONTEXT_OVERFLOW_CHOICES: tuple[str, ...] = get_args(ContextOverflow)


@dataclass(frozen=True, slots=True)
class Fitted:
    """A request as it will be sent, and what the sliding window dropped to make it fit."""

    request: JobRequest
    # Its prompt tokens as counted (the estimator's count), after any drop.
    prompt_tokens: int
    dropped_messages: int = 0
    dropped_tokens: int = 0


def slide_window(request: JobRequest, window: int) -> Fitted:
    """`request` with its oldest turns dropped until its prompt plus output cap fit `window`
    (unchanged if they already do); raises `RequestTooLargeError` naming the numbers when even
    the messages that are never dropped do not fit."""
    fields = request.api_fields()
    model = request.model
    costs = [count_message_tokens(message, model) for message in fields["messages"]]
    prompt = count_prompt_tokens(fields["messages"], fields.get("tools"), model)
    cap = output_cap(request)
    if prompt + cap <= window:
        return Fitted(request, prompt)
    dropped: set[int] = set()
    dropped_tokens = 0
    for turn in _droppable_turns(request.messages):
        if prompt - dropped_tokens + cap <= window:
            break
        dropped.update(turn)
        dropped_tokens += sum(costs[i] for i in turn)
    kept_tokens = prompt - dropped_tokens
    if kept_tokens + cap > window:
        raise RequestTooLargeError(
            f"{model}'s maximum context length is {window} tokens; even with the sliding window "
            f"dropping all {len(dropped)} older messages, this job needs about "
            f"{kept_tokens + cap} ({kept_tokens} in the messages it never drops: system and "
            f"developer messages and the last user message on, {cap} in the completion). "
            "Shorten those messages or lower the output cap.",
            field="messages" if kept_tokens > window else cap_field(request),
        )
    kept = [message for i, message in enumerate(request.messages) if i not in dropped]
    return Fitted(
        request.model_copy(update={"messages": kept}),
        kept_tokens,
        dropped_messages=len(dropped),
        dropped_tokens=dropped_tokens,
    )


def _droppable_turns(messages: list[Message]) -> list[list[int]]:
    """Indexes of the messages that may be dropped, grouped in turns dropped together, oldest
    first: every message before the last user message but system and developer ones, a tool
    result joined to the assistant message whose call it answers."""
    last_user = max((i for i, m in enumerate(messages) if isinstance(m, UserMessage)), default=0)
    turns: list[list[int]] = []
    for i, message in enumerate(messages[:last_user]):
        if isinstance(message, SystemMessage | DeveloperMessage):
            continue
        if isinstance(message, ToolMessage | FunctionMessage) and turns:
            # The contract puts tool results right after their call: the previous turn; a
            # (deprecated) function result follows its function_call the same way.
            turns[-1].append(i)
            continue
        turns.append([i])
    return turns
