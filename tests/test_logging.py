"""Worker logs: one JSON line per event, bound to the job; never a prompt, a completion or a key."""

from __future__ import annotations

import json

from tests.support import API_KEY, WorkerFactory, eventually, nonce, user
from tierq.core.results import JobStatus
from tierq.devkit.processes import ManagedProcess, log_events
from tierq.producers.client import TierqClient


def test_no_log_line_carries_the_prompt_the_completion_or_the_key(
    client: TierqClient, workers: dict[str, ManagedProcess]
) -> None:
    secret_prompt = f"my-private-prompt-{nonce()}"
    ok = client.submit(model="gpt-4o-mini", messages=user(secret_prompt))
    streamed = client.submit(model="gpt-4o", messages=user(secret_prompt), stream=True)
    failed = client.submit(
        model="gpt-4o-mini",
        messages=user(f"{secret_prompt} [sim fail=400]"),
    )
    results = client.wait_many([ok, streamed, failed], timeout=30)
    completions = [r.content for r in results if r.content]
    assert results[0].status is JobStatus.SUCCEEDED
    assert results[2].status is JobStatus.FAILED
    assert completions

    logs = "".join(process.log_text() for process in workers.values())
    assert ok in logs  # the jobs were logged...
    assert secret_prompt not in logs  # ...but not what they said
    assert API_KEY not in logs
    for completion in completions:
        assert completion not in logs


def test_each_job_ends_in_one_canonical_json_line_with_latency_and_tokens(
    client: TierqClient, workers: dict[str, ManagedProcess]
) -> None:
    job_id = client.submit(model="gpt-4o-mini", messages=user("hi"))
    result = client.wait(job_id, timeout=30)

    # The worker writes the line just after recording the result the client waited for.
    finished = eventually(
        lambda: [
            event
            for event in log_events(workers["fast"].log_path)
            if event.get("event") == "job.finished" and event.get("job_id") == job_id
        ],
        what="the job's job.finished line",
        timeout=10,
    )

    assert len(finished) == 1
    line = finished[0]
    assert line["tier"] == "fast"
    assert line["model"] == "gpt-4o-mini"
    assert line["attempt"] == 1
    assert line["status"] == "succeeded"
    assert result.usage is not None
    assert line["prompt_tokens"] == result.usage.prompt_tokens
    assert line["completion_tokens"] == result.usage.completion_tokens
    assert isinstance(line["api_ms"], float)
    json.dumps(line)  # a plain JSON object, nothing exotic


def test_debug_logging_still_keeps_prompts_out(
    start_worker_with: WorkerFactory,
) -> None:
    worker, settings = start_worker_with("fast", TIERQ_LOG_LEVEL="DEBUG")
    secret_prompt = f"debug-private-prompt-{nonce()}"

    with TierqClient(settings) as tierq:
        result = tierq.wait(
            tierq.submit(model="gpt-4o-mini", messages=user(secret_prompt)),
            timeout=30,
        )

    logs = worker.log_text()
    assert result.status is JobStatus.SUCCEEDED
    assert '"level": "debug"' in logs  # it really logged at DEBUG
    assert secret_prompt not in logs
    assert API_KEY not in logs
