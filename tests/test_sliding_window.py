"""Long conversations: refused at submit by default; with `context_overflow="sliding_window"`,
their oldest turns are dropped until they fit, and the record says what was dropped.

The trimming is a pure function (`tierq.core.sliding_window.slide_window`), specified first on
its own; then a 300-turn conversation goes the whole way, producer → worker → simulator, with
the simulator enforcing the same narrow window the producer was given.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import (
    GatewayFactory,
    Simulator,
    TenantKey,
    gateway_client,
    nonce,
    run_tierq,
)
from tierq.core.contract import JobRequest, parse_job_request
from tierq.core.errors import InvalidJobError, RequestTooLargeError
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.core.sliding_window import slide_window
from tierq.core.tokens import count_prompt_tokens
from tierq.devkit.processes import ManagedProcess
from tierq.producers.client import TierqClient
from tierq.producers.submission import prepare

MODEL = "gpt-4o-mini"
CAP = 50


def system(text: str = "You are terse.") -> dict[str, Any]:
    return {"role": "system", "content": text}


def said(role: str, text: str) -> dict[str, Any]:
    return {"role": role, "content": text}


def calling(*call_ids: str) -> dict[str, Any]:
    """An assistant message calling the tool `lookup` once per id."""
    return {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": call_id,
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"q": "a long query text"}'},
            }
            for call_id in call_ids
        ],
    }


def result(call_id: str) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": call_id, "content": "a tool result with some words"}


def request(messages: list[dict[str, Any]]) -> JobRequest:
    return parse_job_request({"model": MODEL, "messages": messages, "max_tokens": CAP})


def window_for(messages: list[dict[str, Any]]) -> int:
    """The window these messages plus the output cap fill exactly."""
    return count_prompt_tokens(messages, None, MODEL) + CAP


def sent(job: JobRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = job.api_fields()["messages"]
    return messages


# --- the trimming, as a pure function ----------------------------------------------------------


def test_a_conversation_that_fits_exactly_is_sent_unchanged() -> None:
    messages = [system(), said("user", "one"), said("assistant", "two"), said("user", "three")]

    fitted = slide_window(request(messages), window_for(messages))

    assert sent(fitted.request) == messages
    assert (fitted.dropped_messages, fitted.dropped_tokens) == (0, 0)
    assert fitted.prompt_tokens == window_for(messages) - CAP


def test_one_token_over_drops_only_the_oldest_turn() -> None:
    messages = [system(), said("user", "one"), said("assistant", "two"), said("user", "three")]

    fitted = slide_window(request(messages), window_for(messages) - 1)

    kept = [messages[0], *messages[2:]]
    assert sent(fitted.request) == kept
    assert fitted.dropped_messages == 1
    assert fitted.dropped_tokens == window_for(messages) - window_for(kept)
    assert fitted.prompt_tokens + CAP <= window_for(messages) - 1


def test_system_and_developer_messages_are_never_dropped_and_stay_in_place() -> None:
    messages = [
        system(),
        said("user", "first question"),
        said("assistant", "first answer"),
        said("developer", "Answer in French."),
        said("user", "second question"),
        said("assistant", "second answer"),
        said("user", "last question"),
    ]
    kept = [messages[0], messages[3], messages[6]]

    fitted = slide_window(request(messages), window_for(kept))

    assert sent(fitted.request) == kept
    assert fitted.dropped_messages == 4
    assert fitted.dropped_tokens == window_for(messages) - window_for(kept)


def test_a_tool_call_and_its_results_are_dropped_together() -> None:
    messages = [
        system(),
        said("user", "look it up"),
        calling("call_1", "call_2"),
        result("call_1"),
        result("call_2"),
        said("assistant", "here is what I found"),
        said("user", "thanks, and then?"),
    ]
    # Dropping the first user message is not enough; the call goes next, with both results.
    kept = [messages[0], messages[5], messages[6]]

    fitted = slide_window(request(messages), window_for(kept))

    assert sent(fitted.request) == kept
    assert fitted.dropped_messages == 4
    JobRequest.model_validate(fitted.request.api_fields())  # still a request the API takes


def test_a_tool_result_never_outlives_its_call_even_when_one_message_would_do() -> None:
    messages = [
        system(),
        calling("call_1"),
        result("call_1"),
        said("user", "and now?"),
    ]

    # One token over: dropping the call alone would fit, but its result goes with it.
    fitted = slide_window(request(messages), window_for(messages) - 1)

    assert sent(fitted.request) == [messages[0], messages[3]]
    assert fitted.dropped_messages == 2


def test_a_function_result_never_outlives_its_function_call() -> None:
    messages = [
        system(),
        {
            "role": "assistant",
            "content": None,
            "function_call": {"name": "lookup", "arguments": "{}"},
        },
        {"role": "function", "name": "lookup", "content": "a function result with some words"},
        said("user", "and now?"),
    ]

    # One token over: dropping the call alone would fit, but its result goes with it.
    fitted = slide_window(request(messages), window_for(messages) - 1)

    assert sent(fitted.request) == [messages[0], messages[3]]
    assert fitted.dropped_messages == 2


def test_the_last_user_message_and_what_follows_it_are_never_dropped() -> None:
    messages = [
        system(),
        said("user", "an old question"),
        said("assistant", "an old answer"),
        said("user", "the question now"),
        calling("call_9"),
        result("call_9"),
    ]
    kept = [messages[0], *messages[3:]]

    fitted = slide_window(request(messages), window_for(kept))

    assert sent(fitted.request) == kept
    assert fitted.dropped_messages == 2


def test_a_conversation_whose_kept_messages_cannot_fit_is_refused_naming_the_numbers() -> None:
    messages = [system(), said("user", "old"), said("assistant", "older"), said("user", "now")]
    kept = [messages[0], messages[3]]
    window = window_for(kept) - 1

    with pytest.raises(RequestTooLargeError) as refused:
        slide_window(request(messages), window)

    needed = window_for(kept)
    assert f"maximum context length is {window} tokens" in str(refused.value)
    assert f"needs about {needed} ({needed - CAP} in the messages it never drops" in str(
        refused.value
    )
    assert refused.value.field == "max_tokens"


# --- at submit, before any I/O -----------------------------------------------------------------


def test_prepare_checks_the_budget_on_the_trimmed_conversation() -> None:
    messages = [system(), *[said("user", f"question {i}") for i in range(40)]]
    kept = [messages[0], messages[-1]]
    narrow = Settings(_env_file=None, context_windows={MODEL: window_for(kept) + 5})

    with pytest.raises(RequestTooLargeError, match="maximum context length"):
        prepare(narrow, request(messages))
    job = prepare(narrow, request(messages), "sliding_window")

    assert sent(job.request)[0] == messages[0]
    assert sent(job.request)[-1] == messages[-1]
    assert job.prompt_tokens == count_prompt_tokens(sent(job.request), None, MODEL)
    assert job.dropped_messages == len(messages) - len(sent(job.request))


def test_an_unknown_context_overflow_choice_is_refused_naming_it() -> None:
    with pytest.raises(InvalidJobError) as refused:
        prepare(Settings(_env_file=None), request([said("user", "hi")]), "summarize")  # type: ignore[arg-type]

    assert refused.value.errors[0]["field"] == "context_overflow"


# --- end to end --------------------------------------------------------------------------------

WINDOW = 2_000


@pytest.fixture
def narrow_simulator(simulator: Simulator) -> Iterator[Simulator]:
    """The simulator enforcing a `WINDOW`-token context window, as the API would; restored after."""
    simulator.configure(context_window=WINDOW)
    try:
        yield simulator
    finally:
        simulator.configure(context_window=None)


def long_conversation(marker: str, turns: int = 300) -> list[dict[str, Any]]:
    """A system message, `turns` questions and answers, and a last question marked `marker`."""
    messages = [system(f"You are a patient tutor. {marker}")]
    for i in range(turns):
        messages += [said("user", f"question {i}?"), said("assistant", f"answer {i}.")]
    return [*messages, said("user", f"the last question {marker}?")]


def test_a_300_turn_conversation_over_the_window_is_refused_without_the_sliding_window(
    settings: Settings, narrow_simulator: Simulator, workers: dict[str, ManagedProcess]
) -> None:
    marker = nonce()
    messages = long_conversation(marker)
    narrow = settings.model_copy(update={"context_windows": {MODEL: WINDOW}})

    with TierqClient(narrow) as client, pytest.raises(RequestTooLargeError) as refused:
        client.submit(model=MODEL, messages=messages, max_tokens=CAP)

    total = count_prompt_tokens(messages, None, MODEL)
    assert f"maximum context length is {WINDOW} tokens" in str(refused.value)
    assert f"needs about {total + CAP} ({total} in the messages" in str(refused.value)
    assert narrow_simulator.requests_with(marker) == []


def test_a_300_turn_conversation_over_the_window_succeeds_with_the_sliding_window(
    settings: Settings, narrow_simulator: Simulator, workers: dict[str, ManagedProcess]
) -> None:
    # Given a conversation far over the model's window, on the producer and at the "API"
    marker = nonce()
    messages = long_conversation(marker)
    assert count_prompt_tokens(messages, None, MODEL) > 2 * WINDOW
    narrow = settings.model_copy(update={"context_windows": {MODEL: WINDOW}})

    # When it is submitted with the sliding window
    with TierqClient(narrow) as client:
        job_id = client.submit(
            model=MODEL, messages=messages, max_tokens=CAP, context_overflow="sliding_window"
        )
        record = client.wait(job_id, timeout=60)

    # Then it succeeds; the API got the system message, the newest turns and the last question
    assert record.status is JobStatus.SUCCEEDED, record.error
    [call] = narrow_simulator.requests_with(marker)
    body = call["body"]
    dropped = record.context_dropped_messages
    assert body["messages"] == [messages[0], *messages[1 + dropped :]]
    assert "context_overflow" not in body
    # And the record names what went: the oldest messages and their tokens
    assert dropped > 0
    assert record.context_dropped_tokens == count_prompt_tokens(
        messages, None, MODEL
    ) - count_prompt_tokens(body["messages"], None, MODEL)
    assert record.usage is not None
    assert record.usage.prompt_tokens + CAP <= WINDOW
    # No more than needed: one more turn would not have fitted.
    one_more = [messages[0], *messages[dropped:]]
    assert count_prompt_tokens(one_more, None, MODEL) + CAP > WINDOW


def test_the_cli_refuses_by_default_and_slides_with_context_overflow(
    worker_env: dict[str, str], narrow_simulator: Simulator, workers: dict[str, ManagedProcess]
) -> None:
    marker = nonce()
    body = {"model": MODEL, "messages": long_conversation(marker), "max_tokens": CAP}
    env = {**worker_env, "TIERQ_CONTEXT_WINDOWS": json.dumps({MODEL: WINDOW})}

    refused = run_tierq(env, "submit", "--request", "-", stdin=json.dumps(body))
    done = run_tierq(
        env,
        "submit", "--request", "-", "--context-overflow", "sliding_window", "--wait", "--json",
        stdin=json.dumps(body),
    )  # fmt: skip

    assert refused.returncode == 2, refused.stderr
    assert f"maximum context length is {WINDOW} tokens" in refused.stderr
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)
    assert record["context_dropped_messages"] > 0
    [call] = narrow_simulator.requests_with(marker)
    assert call["body"]["messages"][-1] == body["messages"][-1]


def test_the_gateway_takes_context_overflow_in_the_tierq_object(
    start_gateway_with: GatewayFactory,
    tenant_key: TenantKey,
    narrow_simulator: Simulator,
    workers: dict[str, ManagedProcess],
) -> None:
    root, _ = start_gateway_with(TIERQ_CONTEXT_WINDOWS=json.dumps({MODEL: WINDOW}))
    marker = nonce()
    body = {"model": MODEL, "messages": long_conversation(marker), "max_tokens": CAP}
    _, key = tenant_key()

    with gateway_client(root, key) as http:
        refused = http.post("/v1/jobs", json=body)
        sliding = {**body, "tierq": {"context_overflow": "sliding_window"}}
        accepted = http.post("/v1/jobs", json=sliding)
        assert accepted.status_code == 202, accepted.text
        record = http.get(accepted.json()["status_url"], params={"wait": 30}, timeout=40).json()

    assert refused.status_code == 422
    assert f"maximum context length is {WINDOW} tokens" in refused.json()["error"]["message"]
    assert record["status"] == "succeeded", record
    assert record["context_dropped_messages"] > 0
    [call] = narrow_simulator.requests_with(marker)
    assert call["body"]["messages"][0] == body["messages"][0]
    assert "tierq" not in call["body"]
