"""The simulator's Files and Batches API, driven by the real `openai` SDK: what a client that
sends work to the provider's Batch API meets, completion, expiry with partial output and
cancellation included."""

from __future__ import annotations

import json
import time
from typing import Any

import openai
import pytest

from tests.support import API_KEY, Simulator, SimulatorFactory, nonce


def lines(markers: list[str], extra: str = "") -> bytes:
    return "".join(
        json.dumps(
            {
                "custom_id": marker,
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"{marker}{extra}"}],
                },
            }
        )
        + "\n"
        for marker in markers
    ).encode()


@pytest.fixture
def quick(start_simulator_with: SimulatorFactory) -> Simulator:
    return start_simulator_with("--batch-completion-seconds", "0.5", "--seed", "3")


def submit(sdk: openai.OpenAI, content: bytes) -> Any:
    upload = sdk.files.create(file=("input.jsonl", content), purpose="batch")
    return sdk.batches.create(
        input_file_id=upload.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"owner": "test"},
    )


def finished(sdk: openai.OpenAI, batch_id: str) -> Any:
    for _ in range(100):
        batch = sdk.batches.retrieve(batch_id)
        if batch.status not in ("validating", "in_progress", "finalizing", "cancelling"):
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} never ended")


def read_lines(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in sdk.files.content(file_id).text.splitlines()]


def test_a_batch_completes_with_one_answer_per_line_each_recorded_once(quick: Simulator) -> None:
    markers = [nonce() for _ in range(3)]
    with openai.OpenAI(base_url=quick.base_url, api_key=API_KEY, max_retries=0) as sdk:
        created = submit(sdk, lines(markers) + lines([nonce()], " [sim fail=400]"))
        assert created.status == "in_progress"
        assert created.metadata == {"owner": "test"}
        done = finished(sdk, created.id)
        output = read_lines(sdk, done.output_file_id)
        errors = read_lines(sdk, done.error_file_id)
        listed = [b.id for b in sdk.batches.list(limit=10).data]

    assert done.status == "completed"
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 1)
    assert [line["custom_id"] for line in output] == markers
    assert {line["response"]["status_code"] for line in output} == {200}
    assert all(line["response"]["body"]["usage"]["total_tokens"] > 0 for line in output)
    assert errors[0]["response"]["status_code"] == 400
    assert created.id in listed
    # Each line was run once, as a call would be: the simulator's records count it
    assert [len(quick.requests_with(marker)) for marker in markers] == [1, 1, 1]


def test_a_batch_that_expires_keeps_its_partial_output_and_lists_the_rest(
    quick: Simulator,
) -> None:
    markers = [nonce() for _ in range(5)]
    quick.configure(expire_next_batch_after_lines=2)
    with openai.OpenAI(base_url=quick.base_url, api_key=API_KEY, max_retries=0) as sdk:
        done = finished(sdk, submit(sdk, lines(markers)).id)
        output = read_lines(sdk, done.output_file_id)
        errors = read_lines(sdk, done.error_file_id)
        # The setting is spent: the next batch completes
        again = finished(sdk, submit(sdk, lines([nonce()])).id)

    assert done.status == "expired"
    assert [line["custom_id"] for line in output] == markers[:2]
    assert [line["custom_id"] for line in errors] == markers[2:]
    assert {line["error"]["code"] for line in errors} == {"batch_expired"}
    # The lines that ran were paid; the others never reached the model
    assert [len(quick.requests_with(marker)) for marker in markers] == [1, 1, 0, 0, 0]
    assert again.status == "completed"


def test_a_cancelled_batch_runs_nothing(start_simulator_with: SimulatorFactory) -> None:
    slow = start_simulator_with("--batch-completion-seconds", "60")
    markers = [nonce() for _ in range(2)]
    with openai.OpenAI(base_url=slow.base_url, api_key=API_KEY, max_retries=0) as sdk:
        batch = submit(sdk, lines(markers))
        cancelled = sdk.batches.cancel(batch.id)
        errors = read_lines(sdk, cancelled.error_file_id)
        with pytest.raises(openai.NotFoundError):
            sdk.batches.retrieve("batch-unknown")

    assert cancelled.status == "cancelled"
    assert [line["error"]["code"] for line in errors] == ["batch_cancelled"] * 2
    assert [len(slow.requests_with(marker)) for marker in markers] == [0, 0]
