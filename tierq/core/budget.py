"""What a job will spend of its model's budgets, and whether it can ever fit.

A job whose prompt plus output cap exceeds the model's context window, or whose tokens alone
exceed its TPM limit, would wait forever or be refused by the API; it is refused at once
instead, at submission when the limit is configured, in the worker when it was learned. The
window is the model catalog's (`tierq.core.catalog`).
"""

from __future__ import annotations

from dataclasses import dataclass

from tierq.core.contract import JobRequest
from tierq.core.errors import RequestTooLargeError
from tierq.core.settings import Settings
from tierq.core.tokens import estimate_prompt_tokens, reserved_output_tokens


@dataclass(frozen=True, slots=True)
class JobCost:
    """Tokens a job spends against TPM when admitted: its prompt and its reserved output."""

    prompt_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.output_tokens

    def correction(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Tokens to add (or give back) once the real usage is known.

        The API counts the prompt as its tokenizer sees it, so the prompt estimate is replaced
        by the real count either way; the output stays reserved at its cap unless the answer
        was longer than what was reserved for it (a job with no cap set).
        """
        return (prompt_tokens - self.prompt_tokens) + max(0, completion_tokens - self.output_tokens)


def job_cost(request: JobRequest, settings: Settings, prompt_tokens: int | None = None) -> JobCost:
    prompt = estimate_prompt_tokens(request) if prompt_tokens is None else prompt_tokens
    output = reserved_output_tokens(request, settings.limiter.default_output_tokens)
    return JobCost(prompt_tokens=prompt, output_tokens=output)


def check_fits(request: JobRequest, cost: JobCost, settings: Settings) -> None:
    """Refuse a job that no wait can make admissible; raises `RequestTooLargeError`."""
    window = settings.context_window_of(request.model)
    cap = output_cap(request)
    if window is not None and cost.prompt_tokens + cap > window:
        field = "messages" if cost.prompt_tokens > window else cap_field(request)
        raise RequestTooLargeError(
            f"{request.model}'s maximum context length is {window} tokens; this job needs "
            f"about {cost.prompt_tokens + cap} ({cost.prompt_tokens} in the messages, {cap} "
            "in the completion). Shorten the messages or lower the output cap.",
            field=field,
        )
    group = settings.limit_group_for(request.model)
    limits = settings.rate_limits.get(group)
    if limits is not None and limits.tpm is not None and cost.total > limits.tpm:
        raise too_large_for_tpm(request, cost, limits.tpm, group)


def too_large_for_tpm(
    request: JobRequest, cost: JobCost, tpm: int, group: str
) -> RequestTooLargeError:
    return RequestTooLargeError(
        f"this job needs about {cost.total} tokens ({cost.prompt_tokens} prompt + "
        f"{cost.output_tokens} output reserved), more than the whole {tpm} tokens-per-minute "
        f"limit of {group}; it could never be admitted. Lower the output cap or n, or shorten "
        "the messages.",
        field=cap_field(request) if cost.output_tokens > cost.prompt_tokens else "messages",
    )


def output_cap(request: JobRequest) -> int:
    """The output cap the context window must leave room for (0 when none is set)."""
    return request.max_completion_tokens or request.max_tokens or 0


def cap_field(request: JobRequest) -> str:
    """The output cap's parameter, to name in a refusal."""
    return "max_completion_tokens" if request.max_completion_tokens else "max_tokens"
