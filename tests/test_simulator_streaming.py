"""Streams sent chunk by chunk, and streams that fail after they started, seen by the SDK.

The API sends a completion as it is generated; a client that buffers, or that only handles
errors raised before the first byte, is caught here: chunks arrive spread over time
(`--chunk-delay-ms`, `chunk_delay_ms` in `PATCH /sim/config`, `[sim chunk_delay_ms=N]`),
`[sim fail=stream_cut after=N]` closes the connection after N chunks and
`[sim fail=stream_error after=N]` sends the API's mid-stream error event.
"""

import json
import time

import httpx2
import openai
import pytest
from openai.types.chat import ChatCompletionChunk

from tests import test_simulator as shared
from tests.support import SimulatorFactory, eventually
from tests.test_simulator import ask, configure

# The simulator fixtures of tests/test_simulator.py: one simulator process for this module.
base_url = shared.base_url
sim_client = shared.sim_client
client = shared.client
fresh_simulator = shared.fresh_simulator

AUTHORIZATION = {"Authorization": "Bearer sk-test"}


def timed_stream(
    client: openai.OpenAI, text: str, **params: object
) -> tuple[list[ChatCompletionChunk], list[float]]:
    """The chunks of a streamed answer, and when each arrived (seconds after the request)."""
    started = time.monotonic()
    chunks: list[ChatCompletionChunk] = []
    arrivals: list[float] = []
    stream = client.chat.completions.create(
        model="gpt-4o", messages=ask(text), stream=True, **params
    )
    for chunk in stream:
        chunks.append(chunk)
        arrivals.append(time.monotonic() - started)
    return chunks, arrivals


def chunks_until_failure(
    client: openai.OpenAI, text: str
) -> tuple[list[ChatCompletionChunk], openai.APIError]:
    """The chunks a stream delivered before it failed, and the SDK's error."""
    received: list[ChatCompletionChunk] = []
    stream = client.chat.completions.create(model="gpt-4o", messages=ask(text), stream=True)
    with pytest.raises(openai.APIError) as raised:  # noqa: PT012 (the chunks before it count)
        for chunk in stream:
            received.append(chunk)
    return received, raised.value


def test_a_stream_arrives_chunk_by_chunk_with_the_configured_delay(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # Given 60 ms between two chunks
    configure(sim_client, chunk_delay_ms=60)

    # When six tokens are streamed with usage
    chunks, arrivals = timed_stream(
        client, "[sim tokens=6]", seed=3, stream_options={"include_usage": True}
    )

    # Then the role chunk, six content chunks, the finish and the usage chunk arrive over time
    assert chunks[0].choices[0].delta.role == "assistant"
    contents = [c.choices[0].delta.content for c in chunks[1:7]]
    assert all(contents)
    assert len(contents) == 6
    assert chunks[7].choices[0].finish_reason == "stop"
    assert chunks[8].choices == []
    assert chunks[8].usage is not None
    assert len(chunks) == 9
    assert arrivals[-1] - arrivals[0] >= 8 * 0.06 - 0.01
    # the first chunk is read well before the last one is even sent
    assert arrivals[0] < arrivals[-1] - 0.3


def test_usage_is_null_on_every_chunk_but_the_last_when_it_is_asked_for(
    sim_client: httpx2.Client,
) -> None:
    configure(sim_client, chunk_delay_ms=5)
    body = {
        "model": "gpt-4o",
        "messages": ask("[sim tokens=3]"),
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    answer = sim_client.post("/v1/chat/completions", json=body, headers=AUTHORIZATION)
    without = sim_client.post(
        "/v1/chat/completions", json={**body, "stream_options": None}, headers=AUTHORIZATION
    )

    events = [json.loads(e.removeprefix("data: ")) for e in answer.text.split("\n\n")[:-2]]
    assert answer.text.endswith("data: [DONE]\n\n")
    assert all("usage" in event and event["usage"] is None for event in events[:-1])
    assert events[-1]["choices"] == []
    assert events[-1]["usage"]["completion_tokens"] == 3
    plain = [json.loads(e.removeprefix("data: ")) for e in without.text.split("\n\n")[:-2]]
    assert all("usage" not in event for event in plain)


def test_chunk_delay_directive_overrides_the_config(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    _, slow = timed_stream(client, "[sim tokens=5 chunk_delay_ms=50]")
    configure(sim_client, chunk_delay_ms=300)
    _, fast = timed_stream(client, "[sim tokens=5 chunk_delay_ms=0]")

    assert slow[-1] - slow[0] >= 6 * 0.05 - 0.01  # 7 chunks: role, 5 tokens, finish
    assert fast[-1] < 6 * 0.3  # not the configured 300 ms between chunks


def test_chunk_delay_is_a_command_line_option(start_simulator_with: SimulatorFactory) -> None:
    simulator = start_simulator_with("--chunk-delay-ms", "40")

    with openai.OpenAI(base_url=simulator.base_url, api_key="sk-test", max_retries=0) as sdk:
        _, arrivals = timed_stream(sdk, "[sim tokens=4]")

    assert simulator.http.get("/sim/config").json()["chunk_delay_ms"] == 40
    assert arrivals[-1] - arrivals[0] >= 5 * 0.04 - 0.01  # 6 chunks: role, 4 tokens, finish


def test_stream_cut_after_n_chunks_fails_while_iterating_as_a_connection_error(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    received, error = chunks_until_failure(client, "[sim fail=stream_cut after=3 tokens=10]")

    assert isinstance(error, openai.APIConnectionError)
    assert not isinstance(error, openai.APITimeoutError)
    assert len(received) == 3
    (record,) = sim_client.get("/sim/requests").json()["data"]
    assert (record["status"], record["fault"]) == (200, "stream_cut")


def test_stream_cut_also_cuts_a_paced_stream(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    configure(sim_client, chunk_delay_ms=20)

    received, error = chunks_until_failure(client, "[sim fail=stream_cut after=2 tokens=10]")

    assert isinstance(error, openai.APIConnectionError)
    assert len(received) == 2


def test_stream_error_after_n_chunks_is_raised_as_the_sdks_api_error(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    received, error = chunks_until_failure(client, "[sim fail=stream_error after=2 tokens=10]")

    # The SDK raises the base APIError (no status: the stream had already started with 200)
    assert type(error) is openai.APIError
    assert len(received) == 2
    assert error.message.startswith("The server had an error processing your request.")
    assert isinstance(error.body, dict)
    assert error.body["type"] == "server_error"
    (record,) = sim_client.get("/sim/requests").json()["data"]
    assert (record["status"], record["fault"]) == (200, "stream_error")


def test_the_error_event_has_the_apis_shape_and_ends_the_stream(sim_client: httpx2.Client) -> None:
    body = {"model": "gpt-4o", "messages": ask("[sim fail=stream_error after=1]"), "stream": True}

    answer = sim_client.post("/v1/chat/completions", json=body, headers=AUTHORIZATION)

    events = answer.text.split("\n\n")
    assert answer.status_code == 200
    assert len(events) == 3
    assert events[-1] == ""
    error = json.loads(events[1].removeprefix("data: "))
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "param", "code"}


def test_stream_faults_obey_times(client: openai.OpenAI) -> None:
    text = "[sim fail=stream_cut after=1 times=1 tokens=4]"

    received, error = chunks_until_failure(client, text)
    chunks, _ = timed_stream(client, text)

    assert isinstance(error, openai.APIConnectionError)
    assert len(received) == 1
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert len(chunks) == 6


def test_stream_faults_on_an_unstreamed_request(client: openai.OpenAI) -> None:
    # A cut closes the connection halfway through the body; an error event becomes a 500.
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="gpt-4o", messages=ask("[sim fail=stream_cut]"))
    with pytest.raises(openai.InternalServerError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=ask("[sim fail=stream_error]"))

    assert raised.value.status_code == 500


def test_a_client_that_leaves_mid_stream_stops_the_sending(
    client: openai.OpenAI, sim_client: httpx2.Client
) -> None:
    # Given a stream that would take 10 s (50 tokens, 200 ms apart)
    stream = client.chat.completions.create(
        model="gpt-4o", messages=ask("[sim tokens=50 chunk_delay_ms=200]"), stream=True
    )
    first = next(iter(stream))
    assert first.choices[0].delta.role == "assistant"
    assert sim_client.get("/sim/stats").json()["in_flight"] == 1  # still being sent

    # When the client closes it after the first chunk
    stream.close()

    # Then the simulator stops sending long before the stream would have ended
    eventually(
        lambda: sim_client.get("/sim/stats").json()["in_flight"],
        until=lambda count: count == 0,
        what="the simulator to stop the abandoned stream",
        timeout=2,
    )
