"""A job's Server-Sent Events (GET /v1/jobs/{id}/events) over real HTTP, with real workers;
and the worker's delta publishing against a real Redis."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
import redis
from openai.types.chat import ChatCompletionChunk
from pydantic import SecretStr
from structlog.testing import capture_logs

from tests.support import TenantKey, gateway_client, job, nonce
from tierq.core.keys import Keys
from tierq.core.settings import Settings
from tierq.devkit.local_redis import EmbeddedRedis
from tierq.devkit.processes import free_port
from tierq.worker.deltas import DeltaStreams, coalesce, delta_entries

# Long enough for a job on a loaded 2-core machine, short enough to fail fast.
EVENTS_TIMEOUT_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    data: Any
    id: str | None


def read_events(
    http: httpx2.Client, job_id: str, headers: dict[str, str] | None = None
) -> list[Event]:
    """Every event of the job's stream, until the server closes it."""
    events: list[Event] = []
    fields: dict[str, str] = {}
    with http.stream(
        "GET", f"/v1/jobs/{job_id}/events", headers=headers, timeout=EVENTS_TIMEOUT_SECONDS
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith(":"):
                continue  # a keep-alive comment
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if "data" in fields:
                events.append(
                    Event(
                        fields.get("event", "message"), json.loads(fields["data"]), fields.get("id")
                    )
                )
            fields = {}
    return events


@pytest.fixture
def http(gateway_url: str, tenant_key: TenantKey) -> Iterator[httpx2.Client]:
    """A client of the gateway with a fresh tenant's key."""
    _, key = tenant_key()
    with gateway_client(gateway_url, key, timeout=5) as client:
        yield client


def submit(http: httpx2.Client, prompt: str, **params: Any) -> str:
    accepted = http.post("/v1/jobs", json=job(prompt, **params))
    assert accepted.status_code == 202, accepted.text
    job_id: str = accepted.json()["id"]
    return job_id


def test_a_streamed_jobs_deltas_arrive_in_order_and_join_into_its_result(
    http: httpx2.Client,
) -> None:
    # Given a streamed job of two choices, slow enough that the events are followed live
    job_id = submit(
        http, f"stream {nonce()} [sim latency_ms=300 tokens=150]", stream=True, n=2, seed=3
    )

    # When its events are read to the end
    events = read_events(http, job_id)

    # Then: a status first, deltas in stream order, and the result last
    assert events[0].name == "status"
    assert events[-1].name == "result"
    deltas = [event for event in events if event.name == "delta"]
    assert len(deltas) >= 2
    ids = [tuple(map(int, str(event.id).split("-"))) for event in deltas]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    assert {event.data["attempt"] for event in deltas} == {1}
    # the deltas of each choice, joined, are that choice's answer in the record
    record = events[-1].data
    assert record["status"] == "succeeded"
    for choice in record["response"]["choices"]:
        index = choice["index"]
        joined = "".join(e.data.get("content", "") for e in deltas if e.data["index"] == index)
        assert joined == choice["message"]["content"]
        finish = [e.data["finish_reason"] for e in deltas if "finish_reason" in e.data]
        assert choice["finish_reason"] in finish
    # the last status is the final one, and the result is the record GET /v1/jobs/{id} gives
    statuses = [event.data for event in events if event.name == "status"]
    assert statuses[-1] == {"status": "succeeded", "attempts": 1}
    assert record == http.get(f"/v1/jobs/{job_id}").json()


def test_an_unstreamed_job_gives_status_changes_and_its_result_without_deltas(
    http: httpx2.Client,
) -> None:
    job_id = submit(http, f"plain {nonce()} [sim latency_ms=800]")

    events = read_events(http, job_id)

    names = [event.name for event in events]
    assert "delta" not in names
    assert names[-1] == "result"
    statuses = [event.data["status"] for event in events if event.name == "status"]
    # The job was seen before it finished (queued or running), then finished; no repeats.
    assert statuses[0] in ("queued", "running")
    assert statuses[-1] == "succeeded"
    assert all(a != b for a, b in itertools.pairwise(statuses))
    assert events[-1].data["response"]["choices"][0]["message"]["content"]


def test_a_retried_streamed_jobs_events_carry_the_attempt_that_answered(
    http: httpx2.Client,
) -> None:
    # The first call is refused before any chunk; a later attempt streams the answer.
    job_id = submit(http, f"retry {nonce()} [sim fail=500 times=1]", stream=True)

    events = read_events(http, job_id)

    final = [event.data for event in events if event.name == "status"][-1]
    assert final["status"] == "succeeded"
    assert final["attempts"] == 2
    assert events[-1].data["attempts"] == final["attempts"]
    deltas = [event for event in events if event.name == "delta"]
    assert deltas
    assert {event.data["attempt"] for event in deltas} == {final["attempts"]}


def test_another_tenants_job_answers_404_in_the_apis_error_shape(
    http: httpx2.Client, gateway_url: str, tenant_key: TenantKey
) -> None:
    job_id = submit(http, f"mine {nonce()}")
    _, other_key = tenant_key()

    for unknown in (job_id, "no-such-job"):
        answer = httpx2.get(
            f"{gateway_url}/v1/jobs/{unknown}/events",
            headers={"Authorization": f"Bearer {other_key}"},
            timeout=10,
        )
        assert answer.status_code == 404
        assert answer.json() == {
            "error": {
                "message": f"No such job: {unknown!r}",
                "type": "invalid_request_error",
                "param": None,
                "code": "job_not_found",
            }
        }


def test_last_event_id_resumes_after_that_delta_without_repeats(http: httpx2.Client) -> None:
    # Given a finished streamed job whose events were read once
    job_id = submit(http, f"resume {nonce()} [sim tokens=200]", stream=True)
    first = [event for event in read_events(http, job_id) if event.name == "delta"]
    assert len(first) >= 2

    # When a client reconnects with the id of the first delta it saw
    again = read_events(http, job_id, headers={"Last-Event-ID": str(first[0].id)})

    # Then it gets the deltas after that one, each once, and the result
    assert [(e.id, e.data) for e in again if e.name == "delta"] == [
        (e.id, e.data) for e in first[1:]
    ]
    assert again[-1].name == "result"


def test_a_malformed_last_event_id_is_refused_naming_the_header(http: httpx2.Client) -> None:
    job_id = submit(http, f"bad id {nonce()}")

    answer = http.get(f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": "yesterday"})

    assert answer.status_code == 422
    assert answer.json()["error"]["param"] == "Last-Event-ID"


# --- the worker's side: entries, and publishing them -------------------------------------------


def chunk(*choices: dict[str, Any]) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "gpt-4o-mini",
            "choices": list(choices),
        }
    )


def text(content: str, index: int = 0, finish: str | None = None) -> dict[str, Any]:
    return {"index": index, "delta": {"content": content}, "finish_reason": finish}


def test_a_chunk_gives_one_entry_per_choice_with_only_what_it_carries() -> None:
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "f"}}
    given = chunk(
        {"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None},
        text("Hi", index=1),
        {"index": 2, "delta": {"tool_calls": [call]}, "finish_reason": None},
        {"index": 3, "delta": {}, "finish_reason": "stop"},
    )

    assert delta_entries(given, attempt=2) == [
        {"attempt": 2, "index": 1, "content": "Hi"},
        {"attempt": 2, "index": 2, "tool_calls": [call]},
        {"attempt": 2, "index": 3, "finish_reason": "stop"},
    ]
    assert delta_entries(chunk(), attempt=1) == []  # the usage chunk


def test_buffered_text_of_one_choice_is_joined_and_tool_call_fragments_are_not() -> None:
    buffer: list[dict[str, Any]] = []
    for entry in (
        {"attempt": 1, "index": 0, "content": "Hel"},
        {"attempt": 1, "index": 0, "content": "lo"},
        {"attempt": 1, "index": 1, "content": "Bye"},
        {"attempt": 1, "index": 1, "finish_reason": "stop"},
        {"attempt": 1, "index": 1, "content": "!"},
        {"attempt": 1, "index": 2, "tool_calls": [{"index": 0}]},
        {"attempt": 1, "index": 2, "tool_calls": [{"index": 0}]},
    ):
        coalesce(buffer, entry)

    assert buffer == [
        {"attempt": 1, "index": 0, "content": "Hello"},
        {"attempt": 1, "index": 1, "content": "Bye", "finish_reason": "stop"},
        {"attempt": 1, "index": 1, "content": "!"},
        {"attempt": 1, "index": 2, "tool_calls": [{"index": 0}]},
        {"attempt": 1, "index": 2, "tool_calls": [{"index": 0}]},
    ]


@dataclass(frozen=True, slots=True)
class Streams:
    deltas: DeltaStreams
    redis: redis.Redis
    keys: Keys

    def entries(self, job_id: str) -> list[dict[str, Any]]:
        """The entries of the job's stream, decoded, oldest first."""
        raw = self.redis.xrange(self.keys.deltas(job_id)) or []
        return [json.loads(fields[b"delta"]) for _, fields in raw if fields]


@pytest.fixture
def streams(redis_client: redis.Redis) -> Streams:
    """Delta streams on the tests' Redis, under a key prefix of their own."""
    keys = Keys(f"tierq-{nonce()}:")
    return Streams(DeltaStreams(redis_client, keys, ttl_seconds=60), redis_client, keys)


def test_a_burst_of_chunks_is_written_first_at_once_then_together_at_the_end(
    streams: Streams,
) -> None:
    publisher = streams.deltas.publisher("job-1", attempt=1)

    for piece in ("Once", " upon", " a", " time"):
        publisher.publish(chunk(text(piece)))
    # The first chunk is written at once; the burst after it waits for the interval.
    assert streams.entries("job-1") == [{"attempt": 1, "index": 0, "content": "Once"}]

    publisher.flush()
    assert streams.entries("job-1") == [
        {"attempt": 1, "index": 0, "content": "Once"},
        {"attempt": 1, "index": 0, "content": " upon a time"},
    ]
    assert 0 < streams.redis.ttl(streams.keys.deltas("job-1")) <= 60


def test_a_new_attempt_starts_the_stream_again(streams: Streams) -> None:
    streams.deltas.publisher("job-2", attempt=1).publish(chunk(text("lost")))

    streams.deltas.publisher("job-2", attempt=2).publish(chunk(text("kept", finish="stop")))

    assert streams.entries("job-2") == [
        {"attempt": 2, "index": 0, "content": "kept", "finish_reason": "stop"}
    ]


def test_a_redis_fault_while_publishing_is_logged_once_and_never_raised(
    settings: Settings,
) -> None:
    # The worker's own publishing client (no retries), pointed at a port nobody listens on
    unreachable = SecretStr(f"redis://127.0.0.1:{free_port()}/0")
    deltas = DeltaStreams.from_settings(settings.model_copy(update={"redis_url": unreachable}))
    publisher = deltas.publisher("job-3", attempt=1)

    with capture_logs() as logs:
        for piece in ("a", "b", "c"):
            publisher.publish(chunk(text(piece)))
        publisher.flush()

    assert [(entry["event"], entry["log_level"]) for entry in logs] == [
        ("deltas.publish_failed", "warning")
    ]


def test_a_slow_redis_stops_the_publishing_instead_of_slowing_the_answer(
    private_redis: EmbeddedRedis,
) -> None:
    # A private Redis whose writes are held back (CLIENT PAUSE), as a Redis under load is
    client = redis.Redis.from_url(private_redis.url)
    deltas = DeltaStreams(client, Keys(f"tierq-{nonce()}:"), ttl_seconds=60)
    publisher = deltas.publisher("job-4", attempt=1)
    client.execute_command("CLIENT", "PAUSE", "400", "WRITE")
    spent = 0.0  # in the publisher's own calls, not in the test's waits between them
    with capture_logs() as logs:
        for piece in ["x"] * 40:
            began = time.monotonic()
            publisher.publish(chunk(text(piece)))
            spent += time.monotonic() - began
            time.sleep(0.06)  # past the flush interval each time
        began = time.monotonic()
        publisher.flush()
        spent += time.monotonic() - began
    client.close()
    # One slow write, then no more: the publisher gave up at its first failure, and the 40
    # chunks cost a few pauses at most, not the forty (16 s) that waiting on each would
    assert [entry["event"] for entry in logs] == ["deltas.publish_failed"]
    assert spent < 10 * 0.4
