"""Structured outputs and tool calls through real jobs: a Pydantic class in, its object out.

Jobs run on the session's real workers against the simulator, which answers `json_schema`
requests with JSON valid for the schema and takes `[sim ...]` directives for the failures
(`refuse=yes`; a small output cap truncates). The SDK's own `parse()` is called against the
same simulator to prove tierq sends exactly the schema it sends.
"""

from __future__ import annotations

import asyncio
import json
from enum import StrEnum
from typing import Any

import openai
import pydantic
import pytest

from tests.support import Simulator, nonce, user
from tierq import (
    AsyncTierqClient,
    InvalidJobError,
    JobNotSucceededError,
    JobResult,
    JobStatus,
    StructuredOutputError,
    StructuredOutputInvalid,
    StructuredOutputRefusal,
    StructuredOutputTruncated,
    TierqClient,
)
from tierq.core.settings import Settings


class Currency(StrEnum):
    EUR = "EUR"
    USD = "USD"


class Address(pydantic.BaseModel):
    street: str
    city: str
    postcode: str | None


class LineItem(pydantic.BaseModel):
    description: str
    quantity: int
    unit_price: float


class Invoice(pydantic.BaseModel):
    """Nested models, a list of them, an enum and an optional field: what `parse()` handles."""

    number: str
    currency: Currency
    billed_to: Address
    items: list[LineItem]
    paid: bool


class Person(pydantic.BaseModel):
    name: str
    age: int


def structured_job(text: str, **params: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": user(text), "response_format": Invoice, **params}


# --- the round trip ----------------------------------------------------------------------------


def test_a_nested_pydantic_model_round_trips_through_a_job(client: TierqClient) -> None:
    job_id = client.submit(**structured_job(f"Extract the invoice. {nonce()}"))

    invoice = client.wait(job_id, timeout=30).parsed(Invoice)

    assert isinstance(invoice, Invoice)
    assert isinstance(invoice.billed_to, Address)
    assert invoice.items
    assert all(isinstance(item, LineItem) for item in invoice.items)
    assert isinstance(invoice.currency, Currency)


def test_the_asyncio_client_sends_classes_from_submit_and_submit_many(
    settings: Settings, client: TierqClient
) -> None:
    async def scenario() -> list[JobResult]:
        async with AsyncTierqClient(settings) as tierq:
            one = await tierq.submit(**structured_job(f"async one {nonce()}"))
            many = await tierq.submit_many(
                [structured_job(f"async many {i} {nonce()}") for i in range(3)]
            )
            return await tierq.wait_many([one, *many], timeout=30)

    records = asyncio.run(scenario())

    assert [type(record.parsed(Invoice)) for record in records] == [Invoice] * 4


def test_the_schema_sent_is_the_one_the_sdks_parse_sends(
    client: TierqClient, simulator: Simulator
) -> None:
    # Given the SDK's own parse() called against the simulator with the class
    sdk_marker, tierq_marker = nonce(), nonce()
    with openai.OpenAI(base_url=simulator.base_url, api_key="sk-test", max_retries=0) as sdk:
        sdk_answer = sdk.chat.completions.parse(
            model="gpt-4o",
            messages=[{"role": "user", "content": sdk_marker}],
            response_format=Invoice,
        )
    assert isinstance(sdk_answer.choices[0].message.parsed, Invoice)

    # When tierq submits a job with the same class
    client.wait(client.submit(**structured_job(tierq_marker)), timeout=30)

    # Then the API receives the same response_format, and the schema byte for byte (property
    # order included, which is the order a strict answer is written in). (The contract writes
    # the wrapper's keys in its own order, `name` before `schema`; JSON objects are unordered.)
    [sdk_call] = simulator.requests_with(sdk_marker)
    [tierq_call] = simulator.requests_with(tierq_marker)
    sent, sdk_sent = tierq_call["body"]["response_format"], sdk_call["body"]["response_format"]
    assert sent == sdk_sent
    assert json.dumps(sent["json_schema"]["schema"]) == json.dumps(
        sdk_sent["json_schema"]["schema"]
    )
    assert sent["type"] == "json_schema"
    assert sent["json_schema"]["strict"] is True
    assert sent["json_schema"]["schema"]["additionalProperties"] is False


def test_a_class_the_sdk_cannot_turn_into_a_schema_is_refused_naming_response_format(
    client: TierqClient,
) -> None:
    with pytest.raises(InvalidJobError) as refused:
        client.submit(model="gpt-4o", messages=user("hi"), response_format=int)

    assert refused.value.errors[0]["field"] == "response_format"


# --- each way an answer cannot be read ----------------------------------------------------------


def test_the_simulator_refuses_on_request_as_the_api_does(simulator: Simulator) -> None:
    # `[sim refuse=yes]` answers as the API does when a model declines: the SDK's own parse()
    # and stream see `refusal` set, no content, no parsed object.
    messages: Any = [{"role": "user", "content": f"[sim refuse=yes] {nonce()}"}]
    with openai.OpenAI(base_url=simulator.base_url, api_key="sk-test", max_retries=0) as sdk:
        parsed = sdk.chat.completions.parse(
            model="gpt-4o", messages=messages, response_format=Invoice
        )
        with sdk.chat.completions.stream(
            model="gpt-4o", messages=messages, response_format=Invoice
        ) as stream:
            streamed = stream.get_final_completion()
        with pytest.raises(openai.BadRequestError, match="refuse"):
            sdk.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "[sim refuse=no] hi"}]
            )

    for answer in (parsed, streamed):
        message = answer.choices[0].message
        assert message.refusal == "I'm sorry, but I can't help with that request."
        assert (message.content, message.parsed, answer.choices[0].finish_reason) == (
            None,
            None,
            "stop",
        )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
def test_a_refusal_raises_structured_output_refusal_with_its_text(
    client: TierqClient, stream: bool
) -> None:
    job_id = client.submit(**structured_job(f"[sim refuse=yes] {nonce()}", stream=stream))
    record = client.wait(job_id, timeout=30)

    with pytest.raises(StructuredOutputRefusal) as refused:
        record.parsed(Invoice)

    assert record.status is JobStatus.SUCCEEDED
    assert refused.value.refusal == "I'm sorry, but I can't help with that request."
    assert refused.value.job_id == job_id
    assert record.message_param() == {"role": "assistant", "refusal": refused.value.refusal}


def test_an_answer_cut_at_the_output_cap_raises_structured_output_truncated(
    client: TierqClient,
) -> None:
    record = client.wait(
        client.submit(**structured_job(nonce(), max_completion_tokens=5)), timeout=30
    )

    with pytest.raises(StructuredOutputTruncated) as truncated:
        record.parsed(Invoice)

    assert record.response is not None
    assert record.response.choices[0].finish_reason == "length"
    assert truncated.value.content == record.content
    assert "max_completion_tokens" in str(truncated.value)


@pytest.mark.parametrize(
    ("response_format", "error_type"),
    [(None, "json_invalid"), (Invoice, "missing")],
    ids=["text-not-json", "json-of-another-shape"],
)
def test_an_answer_that_does_not_validate_raises_structured_output_invalid(
    client: TierqClient, response_format: type | None, error_type: str
) -> None:
    request: dict[str, Any] = {"model": "gpt-4o", "messages": user(nonce())}
    if response_format is not None:
        request["response_format"] = response_format
    record = client.wait(client.submit(request), timeout=30)

    with pytest.raises(StructuredOutputInvalid) as invalid:
        record.parsed(Person)

    assert invalid.value.schema_name == "Person"
    assert invalid.value.errors[0]["type"] == error_type
    assert not isinstance(invalid.value, pydantic.ValidationError)
    assert isinstance(invalid.value, StructuredOutputError)


def test_a_job_that_did_not_succeed_has_no_answer_to_parse(client: TierqClient) -> None:
    record = client.wait(client.submit(**structured_job(f"[sim fail=400] {nonce()}")), timeout=30)

    with pytest.raises(JobNotSucceededError) as no_answer:
        record.parsed(Invoice)
    with pytest.raises(JobNotSucceededError):
        record.message_param()

    assert no_answer.value.status == "failed"
    assert "bad_request" in str(no_answer.value)


# --- tool calls --------------------------------------------------------------------------------

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
        "strict": True,
    },
}


def test_a_tool_call_answer_continues_the_conversation_in_the_next_job(
    client: TierqClient, simulator: Simulator
) -> None:
    # Given a job whose answer calls a tool
    marker = nonce()
    conversation: list[dict[str, Any]] = user(f"Use get_weather for Paris. {marker}")
    first = client.wait(
        client.submit(model="gpt-4o-mini", messages=conversation, tools=[WEATHER_TOOL]),
        timeout=30,
    )
    assistant = first.message_param()
    [call] = assistant["tool_calls"]
    assert first.response is not None
    assert first.response.choices[0].finish_reason == "tool_calls"

    # When its message and the tool's answer are appended and a next job is submitted
    conversation = [
        *conversation,
        assistant,
        {"role": "tool", "tool_call_id": call["id"], "content": '{"temp_c": 21}'},
        {"role": "user", "content": "And now in one sentence?"},
    ]
    second = client.wait(
        client.submit(model="gpt-4o-mini", messages=conversation, tools=[WEATHER_TOOL]),
        timeout=30,
    )

    # Then it succeeds, and the API saw the assistant message exactly as the first job answered
    assert second.status is JobStatus.SUCCEEDED
    assert second.content
    assert assistant == {
        "role": "assistant",
        "tool_calls": [
            {
                "id": call["id"],
                "type": "function",
                "function": {"name": "get_weather", "arguments": call["function"]["arguments"]},
            }
        ],
    }
    assert json.loads(call["function"]["arguments"])["city"]
    sent = simulator.requests_with(marker)[-1]["body"]["messages"]
    assert sent[1] == assistant
    assert sent[2]["tool_call_id"] == call["id"]
