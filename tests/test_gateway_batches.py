"""The OpenAI Files and Batches API of the gateway, driven by the official `openai` SDK over real
HTTP, with the session's real workers and the simulator behind it.

The first tests read the batch file module alone (no Redis, no HTTP); the rest run batches end
to end. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import redis
import redis.asyncio
from openai.types import Batch

from tests.support import (
    Simulator,
    TenantKey,
    bearer,
    clean_environment,
    create_api_key,
    eventually,
    gateway_client,
    in_flight,
    job,
    nonce,
    unique_tenant,
)
from tierq.core.jobcontrol import JobControl
from tierq.core.jobstore import JobStore
from tierq.core.keys import Keys
from tierq.core.results import JobError, JobResult, JobStatus
from tierq.core.settings import Settings
from tierq.devkit.processes import (
    ManagedProcess,
    log_events,
    settings_for,
    start_gateway,
    start_worker,
)
from tierq.producers.batchfile import (
    BatchRequest,
    cancelled_line,
    is_error_line,
    output_line,
    parse_batch_file,
)
from tierq.producers.gateway.batch_store import BatchStore
from tierq.producers.gateway.file_models import FileObject
from tierq.producers.gateway.file_store import FileStore
from tierq.producers.gateway.storage_errors import NoSuchFileError

BATCH_WAIT_SECONDS = 30.0


def request_line(custom_id: str, text: str, **params: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": job(text, **{"max_tokens": 20, **params}),
    }


def jsonl(lines: list[dict[str, Any] | str]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


@contextmanager
def sdk(root: str, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0, timeout=30) as client:
        yield client


def start_batch(client: openai.OpenAI, lines: list[dict[str, Any] | str]) -> Batch:
    upload = client.files.create(file=("input.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(
        input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
    )


def batch_reaching(
    client: openai.OpenAI, batch_id: str, statuses: set[str], timeout: float = BATCH_WAIT_SECONDS
) -> Batch:
    """The batch, once its status is one of `statuses`."""
    return eventually(
        lambda: client.batches.retrieve(batch_id),
        until=lambda batch: batch.status in statuses,
        what=f"batch {batch_id} to be {' or '.join(sorted(statuses))}",
        timeout=timeout,
        interval=0.1,
    )


def file_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


# --- the batch file, alone ---------------------------------------------------------------------


@pytest.fixture
def plain_settings() -> Settings:
    return settings_for(clean_environment())


def test_a_malformed_line_refuses_the_whole_file_naming_each_line(
    plain_settings: Settings,
) -> None:
    good = request_line("a", "hi")
    data = jsonl([good, "", "{not json", {**good, "custom_id": "b", "method": "GET"}, good])
    parsed = parse_batch_file(data, plain_settings)
    assert [(e.line, e.code, e.param) for e in parsed.errors] == [
        (3, "invalid_json_line", None),  # blank line 2 is skipped but still counted
        (4, "invalid_method", "method"),
        (5, "duplicate_custom_id", "custom_id"),
    ]
    assert (parsed.requests, parsed.rejected) == ([], []), "nothing of a refused file runs"


def test_a_body_breaking_the_contract_fails_alone_and_the_line_limit_holds(
    plain_settings: Settings,
) -> None:
    lines: list[dict[str, Any] | str] = [
        request_line("ok", "hi"),
        request_line("hot", "hi", temperature=5),
    ]
    parsed = parse_batch_file(jsonl(lines), plain_settings)
    assert [r.custom_id for r in parsed.requests] == ["ok"]
    assert [(r.custom_id, r.line, r.error.errors[0]["field"]) for r in parsed.rejected] == [
        ("hot", 2, "temperature")
    ]
    assert parsed.total == 2
    assert parsed.model == "gpt-4o-mini"
    two = plain_settings.model_copy(
        update={"gateway": plain_settings.gateway.model_copy(update={"max_batch_lines": 1})}
    )
    assert [e.code for e in parse_batch_file(jsonl(lines), two).errors] == [
        "too_many_requests_in_file"
    ]
    assert [e.code for e in parse_batch_file(b"\n\n", plain_settings).errors] == ["empty_file"]


def test_a_validated_batchs_requests_come_back_from_redis_exactly_as_parsed(
    settings: Settings, plain_settings: Settings
) -> None:
    # The finalizer keeps a batch's requests in Redis once validated, and submits from there
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    schema = {"name": "answer", "schema": {"type": "object"}, "strict": True}
    data = jsonl(
        [
            request_line("a", "x", response_format={"type": "json_schema", "json_schema": schema}),
            request_line("b", "y", tools=[tool], temperature=0.2, metadata={"team": "t"}),
            request_line("c", "z", stop=["END"], seed=7),
        ]
    )
    parsed = parse_batch_file(data, plain_settings)

    async def stored() -> tuple[list[BatchRequest], list[BatchRequest], list[str]]:
        client = redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value())
        try:
            store = BatchStore(client, Keys(f"test-{nonce()}:"), file_ttl_seconds=3_600)
            await store.record_validation("batch_1", parsed.requests[:1], {})
            await store.record_validation("batch_1", parsed.requests, {})  # repeated: replaces
            every = await store.requests("batch_1", 0, 10, max_bytes=1 << 20)
            # A chunk bounded in bytes holds at least one request, and stops past the bound
            bounded = await store.requests("batch_1", 1, 10, max_bytes=1)
            ids = [cid async for chunk in store.custom_ids("batch_1", 1) for cid in chunk]
            return every, bounded, ids
        finally:
            await client.aclose()

    requests, bounded, unsubmitted = asyncio.run(stored())

    assert requests == parsed.requests
    assert bounded == parsed.requests[1:2]
    assert [r.request.api_fields() for r in requests] == [
        r.request.api_fields() for r in parsed.requests
    ]
    assert unsubmitted == ["b", "c"]


def test_a_file_written_in_parts_reads_back_whole_and_appears_only_once_closed(
    settings: Settings,
) -> None:
    # Parts keep a large batch output under Redis's value limit; here they are 10 bytes
    pieces = [b"0123", b"456789abcdefghij", b"", b"k" * 25, b"lmn"]
    files_prefix = f"test-{nonce()}:"

    async def written() -> tuple[bool, FileObject, bytes, list[bytes]]:
        client = redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value())
        try:
            files = FileStore(client, Keys(files_prefix), longest_ttl_seconds=3_600,
                              part_bytes=10)  # fmt: skip
            writer = files.writer("t", filename="out.jsonl", purpose="batch_output",
                                  ttl_seconds=3_600)  # fmt: skip
            for piece in pieces:
                await writer.write(piece)
            try:
                await files.get("t", writer.file_id)
                visible_before_close = True
            except NoSuchFileError:
                visible_before_close = False
            file = await writer.close()
            _, whole = await files.content("t", file.id)
            _, parts = await files.stream("t", file.id)
            streamed = [part async for part in parts]
            # A part gone while the file is read (deleted, expired): never a short file
            await client.hdel(Keys(files_prefix).file(file.id), "part:2")
            try:
                await files.content("t", file.id)
                truncated_read = True
            except NoSuchFileError:
                truncated_read = False
            return visible_before_close or truncated_read, file, whole, streamed
        finally:
            await client.aclose()

    visible_before_close, file, whole, parts = asyncio.run(written())

    assert not visible_before_close, "visible before close, or read short"
    assert whole == b"".join(pieces)
    assert file.bytes == len(whole) == 48
    assert [len(part) for part in parts] == [10, 10, 10, 10, 8]


def test_result_lines_follow_the_api_shape_for_each_outcome() -> None:
    now = datetime.now(UTC)
    base = {"job_id": "j1", "tier": "fast", "model": "gpt-4o-mini", "submitted_at": now}
    refused = JobResult(
        **base,
        status=JobStatus.FAILED,
        error=JobError(type="bad_request", message="too long", status_code=400, code="c"),
    )
    timed_out = JobResult(
        **base, status=JobStatus.FAILED, error=JobError(type="timeout", message="no answer")
    )
    refused_line = output_line("r", refused)
    assert refused_line["response"]["status_code"] == 400
    assert refused_line["response"]["body"]["error"]["code"] == "c"
    assert refused_line["error"] is None
    assert is_error_line(refused_line)
    assert output_line("t", timed_out)["error"] == {"code": "timeout", "message": "no answer"}
    cancelled = output_line("c", JobResult(**base, status=JobStatus.CANCELLED))
    assert cancelled["response"] is None
    assert cancelled["error"]["code"] == "batch_cancelled"
    assert cancelled_line("x", "batch_expired")["error"]["code"] == "batch_expired"
    with pytest.raises(ValueError, match="not finished"):
        output_line("q", JobResult(**base, status=JobStatus.QUEUED))


def test_a_batch_cancel_spares_a_job_in_flight_but_not_one_whose_worker_died(
    settings: Settings,
) -> None:
    # What a batch winding down asks of each unfinished job (lua/cancel.lua, spare_running).
    store = JobStore.from_settings(settings)
    control = JobControl(store)
    base = {"tier": "fast", "model": "gpt-4o-mini", "submitted_at": datetime.now(UTC)}
    jobs = {
        name: JobResult(job_id=f"{name}-{nonce()}", status=JobStatus.QUEUED, **base)
        for name in ("queued", "in_flight", "orphaned")
    }
    try:
        store.save_many(list(jobs.values()), ["{}"] * len(jobs))
        # Two taken by workers: one holds its lease, the other's lease has lapsed (it died).
        for name, lease_seconds in (("in_flight", 60.0), ("orphaned", 0.0)):
            running = jobs[name].model_copy(update={"status": JobStatus.RUNNING})
            assert store.claim(running, name, lease_seconds, "{}", generation=0).claimed

        def cancel(name: str, *, spare_running: bool) -> str:
            record = store.get(jobs[name].job_id)
            assert record is not None
            return control.cancel(record, spare_running=spare_running)[0]

        outcomes = {name: cancel(name, spare_running=True) for name in jobs}
        assert outcomes == {"queued": "cancelled", "in_flight": "running", "orphaned": "cancelled"}
        assert store.status(jobs["in_flight"].job_id) is JobStatus.RUNNING
        # The job spared could have been cancelled: a job's own cancel discards its answer.
        assert cancel("in_flight", spare_running=False) == "cancelled"
    finally:
        store.delete([job.job_id for job in jobs.values()])
        store.redis.close()


# --- end to end --------------------------------------------------------------------------------


def test_a_batch_runs_to_completed_with_answers_and_failures_in_their_files(
    gateway_url: str, tenant_key: TenantKey, simulator: Simulator
) -> None:
    marker = nonce()
    good = [request_line(f"ok-{i}", f"{marker} question {i}") for i in range(9)]
    lines: list[dict[str, Any] | str] = [
        *good,
        request_line("hot", f"{marker} too hot", temperature=5),
        request_line("long", f"{marker} [sim fail=400 code=context_length_exceeded]"),
    ]
    _, key = tenant_key()
    with sdk(gateway_url, key) as client:
        created = start_batch(client, lines)
        assert created.status == "validating"
        assert created.expires_at == created.created_at + 24 * 3600
        batch = batch_reaching(client, created.id, {"completed", "failed"})
        outputs = file_lines(client, batch.output_file_id)
        errors = file_lines(client, batch.error_file_id)
        assert batch.output_file_id is not None
        output_file = client.files.retrieve(batch.output_file_id)

    assert batch.status == "completed", batch.errors
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 11, "completed": 9, "failed": 2}
    assert batch.in_progress_at
    assert batch.finalizing_at
    assert batch.completed_at
    assert batch.model == "gpt-4o-mini"
    assert output_file.purpose == "batch_output"
    assert sorted(line["custom_id"] for line in outputs) == sorted(g["custom_id"] for g in good)
    for line in outputs:
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["request_id"]  # the tierq job id
        body = line["response"]["body"]
        assert body["object"] == "chat.completion"
        assert body["choices"][0]["message"]["content"]
        assert body["usage"]["total_tokens"] > 0
    assert batch.usage is not None
    assert batch.usage.total_tokens == sum(
        o["response"]["body"]["usage"]["total_tokens"] for o in outputs
    )
    by_id = {line["custom_id"]: line for line in errors}
    assert set(by_id) == {"hot", "long"}
    assert by_id["hot"]["response"]["status_code"] == 400
    assert by_id["hot"]["response"]["body"]["error"]["param"] == "temperature"
    assert by_id["long"]["response"]["status_code"] == 400
    assert by_id["long"]["response"]["body"]["error"]["code"] == "context_length_exceeded"
    # Each request was one job, called once; the one that broke the contract never became one.
    assert by_id["hot"]["response"]["request_id"] is None
    with gateway_client(gateway_url, key, timeout=5) as http:
        for line in [*outputs, by_id["long"]]:
            record = http.get(f"/v1/jobs/{line['response']['request_id']}").json()
            assert record["attempts"] == 1
    assert not any("too hot" in str(call["body"]) for call in simulator.requests_with(marker))


def test_a_malformed_input_file_fails_the_batch_naming_the_lines_and_runs_nothing(
    gateway_url: str, tenant_key: TenantKey, settings: Settings, simulator: Simulator
) -> None:
    marker = nonce()
    first = request_line("a", f"{marker} hello")
    lines: list[dict[str, Any] | str] = [first, "this is not json", first]
    tenant, key = tenant_key()
    with sdk(gateway_url, key) as client:
        batch = batch_reaching(client, start_batch(client, lines).id, {"failed", "in_progress"})
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.errors is not None
    assert batch.errors.object == "list"
    assert [(e.line, e.code) for e in batch.errors.data or []] == [
        (2, "invalid_json_line"),
        (3, "duplicate_custom_id"),
    ]
    assert batch.output_file_id is None
    assert batch.error_file_id is None
    assert in_flight(settings, tenant) == 0
    assert simulator.requests_with(marker) == []


def test_cancelling_a_running_batch_ends_it_cancelled_with_the_unfinished_in_the_error_file(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    marker = nonce()
    # 30 slow requests: the worker runs 20 at once, so some are still queued when cancelled.
    lines: list[dict[str, Any] | str] = [
        request_line(f"slow-{i}", f"{marker} {i} [sim latency_ms=2500]") for i in range(30)
    ]
    _, key = tenant_key()
    with sdk(gateway_url, key) as client:
        created = start_batch(client, lines)
        batch_reaching(client, created.id, {"in_progress"}, timeout=10)
        # The input is read once, to validate it: deleting it now changes nothing below
        assert client.files.delete(created.input_file_id).deleted
        cancelling = client.batches.cancel(created.id)
        assert cancelling.status == "cancelling"
        assert cancelling.cancelling_at is not None
        batch = batch_reaching(client, created.id, {"cancelled"})
        outputs = file_lines(client, batch.output_file_id)
        errors = file_lines(client, batch.error_file_id)
        assert client.batches.cancel(created.id).status == "cancelled"  # again: no change
    assert batch.cancelled_at is not None
    assert batch.request_counts is not None
    assert batch.request_counts.total == 30 == len(outputs) + len(errors)
    assert batch.request_counts.failed == len(errors) >= 10
    assert all(e["error"]["code"] == "batch_cancelled" and e["response"] is None for e in errors)
    assert {line["custom_id"] for line in outputs + errors} == {f"slow-{i}" for i in range(30)}


def test_a_tenant_sees_and_lists_only_its_own_files_and_batches(
    gateway_url: str, tenant_key: TenantKey, settings: Settings
) -> None:
    _, owner_key = tenant_key()
    _, other_key = tenant_key()
    with sdk(gateway_url, owner_key) as owner, sdk(gateway_url, other_key) as other:
        ids = [start_batch(owner, [request_line("one", nonce())]).id for _ in range(3)]
        batch = owner.batches.retrieve(ids[0])
        for attempt in (
            lambda: other.files.retrieve(batch.input_file_id),
            lambda: other.files.content(batch.input_file_id),
            lambda: other.batches.retrieve(batch.id),
            lambda: other.batches.cancel(batch.id),
            lambda: other.batches.create(
                input_file_id=batch.input_file_id,
                endpoint="/v1/chat/completions",
                completion_window="24h",
            ),
        ):
            with pytest.raises(openai.NotFoundError):
                attempt()
        assert [b.id for b in other.batches.list().data] == []
        newest_first = list(reversed(ids))
        page = owner.batches.list(limit=2)
        assert [b.id for b in page.data] == newest_first[:2]
        assert page.has_more
        rest = owner.batches.list(limit=2, after=newest_first[1])
        assert [b.id for b in rest.data] == newest_first[2:]
        assert not rest.has_more
        # A cursor whose batch has expired since still pages on
        with redis.Redis.from_url(settings.redis_url.get_secret_value()) as r:
            r.delete(Keys(settings.key_prefix).batch(newest_first[1]))
        assert [b.id for b in owner.batches.list(after=newest_first[1])] == newest_first[2:]
        assert [b.id for b in owner.batches.list()] == [newest_first[0], newest_first[2]]
        done = batch_reaching(owner, ids[0], {"completed"})
        with pytest.raises(openai.ConflictError):
            owner.batches.cancel(done.id)
    with httpx2.Client(headers=bearer(owner_key)) as http:
        listing = http.get(f"{gateway_url}/v1/batches", params={"limit": 2}).json()
    assert listing["object"] == "list"
    assert (listing["first_id"], listing["last_id"]) == (newest_first[0], newest_first[2])


def test_a_tenant_lists_pages_and_deletes_only_its_own_files(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, owner_key = tenant_key()
    _, other_key = tenant_key()
    with sdk(gateway_url, owner_key) as owner, sdk(gateway_url, other_key) as other:
        # Given three uploads, and a batch whose output file is the fourth file
        batch = start_batch(owner, [request_line("one", nonce())])
        uploads = [batch.input_file_id] + [
            owner.files.create(file=(f"in{i}.jsonl", jsonl([request_line("a", "x")])),
                               purpose="batch").id
            for i in range(2)
        ]  # fmt: skip
        output = batch_reaching(owner, batch.id, {"completed"}).output_file_id

        # Then the listing is newest first, pages as the SDK pages, and filters by purpose
        first = owner.files.list(limit=2, purpose="batch")
        assert [f.id for f in first.data] == uploads[::-1][:2]
        assert first.has_more
        assert [f.id for f in owner.files.list(limit=2, purpose="batch")] == uploads[::-1]
        assert [f.id for f in owner.files.list(order="asc", purpose="batch")] == uploads
        assert [f.id for f in owner.files.list(purpose="batch_output")] == [output]
        assert {f.id for f in owner.files.list()} == {*uploads, output}
        # And another tenant sees none of them, and cannot delete them
        assert list(other.files.list()) == []
        with pytest.raises(openai.NotFoundError):
            other.files.delete(uploads[0])

        # When the owner deletes a file, it is gone: not readable, not listed, not deletable
        deleted = owner.files.delete(uploads[0])
        assert (deleted.id, deleted.object, deleted.deleted) == (uploads[0], "file", True)
        with pytest.raises(openai.NotFoundError):
            owner.files.retrieve(uploads[0])
        with pytest.raises(openai.NotFoundError):
            owner.files.delete(uploads[0])
        assert [f.id for f in owner.files.list(order="asc", purpose="batch")] == uploads[1:]
        # And the finished batch that read it keeps its results
        assert len(file_lines(owner, output)) == 1
        # And the clean-up loop works: deleting each file as the SDK pages through them
        for file in owner.files.list(limit=1):
            owner.files.delete(file.id)
        assert list(owner.files.list()) == []
        assert list(owner.files.list(purpose="fine-tune")) == []  # a filter, as in the API

        for bad in (
            lambda: owner.files.list(limit=0),
            lambda: owner.files.list(order="sideways"),  # type: ignore[arg-type]
            lambda: owner.files.list(after="file-unknown"),
        ):
            with pytest.raises(openai.BadRequestError):
                bad()


def test_bad_parameters_answer_400_and_unknown_ids_404_in_the_api_shape(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, key = tenant_key()
    with sdk(gateway_url, key) as client:
        data = jsonl([request_line("a", "x")])
        upload = client.files.create(file=("in.jsonl", data), purpose="batch")
        assert (upload.object, upload.purpose, upload.bytes) == ("file", "batch", len(data))
        assert upload.expires_at is not None
        assert upload.expires_at > upload.created_at
        refused: list[tuple[Callable[[], object], str | None]] = [
            (
                lambda: client.files.create(file=("x.jsonl", b"{}\n"), purpose="fine-tune"),
                "purpose",
            ),
            (
                lambda: client.batches.create(
                    input_file_id=upload.id, endpoint="/v1/embeddings", completion_window="24h"
                ),
                "endpoint",
            ),
            (
                lambda: client.batches.create(
                    input_file_id=upload.id,
                    endpoint="/v1/chat/completions",
                    completion_window="48h",  # type: ignore[arg-type]
                ),
                "completion_window",
            ),
            (lambda: client.batches.list(limit=0), "limit"),
            (lambda: client.batches.list(limit=101), "limit"),
        ]
        for call, param in refused:
            with pytest.raises(openai.BadRequestError) as caught:
                call()
            assert caught.value.status_code == 400
            assert isinstance(caught.value.body, dict)
            assert caught.value.body["param"] == param
        with pytest.raises(openai.NotFoundError):
            client.batches.retrieve("batch_unknown")
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve("file-unknown")


# --- a cluster of its own: gateways that stop and start ------------------------------------------


@dataclass
class Cluster:
    """A fast-tier worker with its own queues and keys, and the environment for gateways in
    front of it. No other gateway (of this session, or of another sharing the Redis) sees its
    batches, so the simulator's count of a marker is this cluster's alone."""

    env: dict[str, str]
    settings: Settings
    logs_dir: Path

    def gateway(self, **overrides: str) -> tuple[ManagedProcess, str]:
        log = self.logs_dir / f"gateway-{nonce()}.log"
        return start_gateway(log, {**self.env, **overrides})

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url.get_secret_value())

    def batch_key(self, batch_id: str) -> str:
        return Keys(self.settings.key_prefix).batch(batch_id)


@pytest.fixture(scope="module")
def cluster(worker_env: dict[str, str], logs_dir: Path, simulator: Simulator) -> Iterator[Cluster]:
    isolation = nonce()
    env = {
        **worker_env,
        "TIERQ_QUEUE_PREFIX": f"tq-{isolation}.",
        "TIERQ_KEY_PREFIX": f"tq-{isolation}:",
    }
    # Four at a time, so a batch of slow requests keeps some queued.
    worker = start_worker("fast", logs_dir / f"worker-fast-{isolation}.log", env, concurrency=4)
    yield Cluster(env, settings_for(env), logs_dir)
    # A worker stopped mid-call waits out its whole shutdown grace: let cancelled calls end
    # (best effort: at worst, the stop takes that grace).
    with contextlib.suppress(AssertionError):
        eventually(
            lambda: not simulator.http.get("/sim/stats").json()["in_flight"],
            what="the simulator's calls ending",
            timeout=10,
            interval=0.1,
        )
    worker.stop()


@contextmanager
def running(gateway: tuple[ManagedProcess, str]) -> Iterator[str]:
    process, root = gateway
    try:
        yield root
    finally:
        process.stop()


def test_a_batch_survives_a_gateway_restart_and_no_request_is_paid_twice(
    cluster: Cluster, simulator: Simulator
) -> None:
    key = create_api_key(cluster.settings, unique_tenant())
    marker = nonce()
    lines: list[dict[str, Any] | str] = [
        request_line(f"r{i}", f"{marker} {i} [sim latency_ms=500]") for i in range(6)
    ]
    with running(cluster.gateway()) as root, sdk(root, key) as client:
        batch_id = start_batch(client, lines).id
        batch_reaching(client, batch_id, {"in_progress"}, timeout=10)
    # The gateway stopped with jobs running. Given, besides, a crash between submitting the jobs
    # and recording them: the batch says nothing was submitted, so the next gateway submits
    # every request again.
    with cluster.redis() as store:
        fields = store.hgetall(cluster.batch_key(batch_id))
        submitted = {k.decode(): v.decode() for k, v in fields.items() if k.startswith(b"job:")}
        assert len(submitted) == 6
        store.hdel(cluster.batch_key(batch_id), *submitted)
        store.hset(cluster.batch_key(batch_id), "cursor", 0)
    with running(cluster.gateway()) as root, sdk(root, key) as client:
        batch = batch_reaching(client, batch_id, {"completed", "failed"})
        outputs = file_lines(client, batch.output_file_id)
    assert batch.status == "completed"
    # The same jobs (one idempotency key per request), each called once.
    assert {f"job:{o['custom_id']}": o["response"]["request_id"] for o in outputs} == submitted
    assert len(simulator.requests_with(marker)) == 6


def test_a_cancelled_batch_keeps_every_answer_paid_for_and_runs_nothing_more(
    cluster: Cluster, simulator: Simulator
) -> None:
    # The worker runs four at a time: when the fifth call arrives, the first answers are in,
    # the next calls are running and the rest are queued.
    key = create_api_key(cluster.settings, unique_tenant())
    marker = nonce()
    lines: list[dict[str, Any] | str] = [
        request_line(f"r{i}", f"{marker} {i} [sim latency_ms=1500]") for i in range(12)
    ]
    with running(cluster.gateway()) as root, sdk(root, key) as client:
        batch_id = start_batch(client, lines).id
        called = eventually(
            lambda: simulator.requests_with(marker),
            until=lambda calls: len(calls) > 4,
            what="answers in and calls running",
            timeout=BATCH_WAIT_SECONDS,
        )
        assert client.batches.cancel(batch_id).status == "cancelling"
        batch = batch_reaching(client, batch_id, {"cancelled"})
        outputs = file_lines(client, batch.output_file_id)
        errors = file_lines(client, batch.error_file_id)

    # Every call made, finished or running when the cancel came, is an answer in the output...
    paid = simulator.requests_with(marker)
    assert len(outputs) == len(paid) >= len(called)
    assert all(o["response"]["status_code"] == 200 and o["error"] is None for o in outputs)
    # ... and the requests still queued were cancelled without a call.
    assert errors
    assert all(e["error"]["code"] == "batch_cancelled" and e["response"] is None for e in errors)
    assert {line["custom_id"] for line in outputs + errors} == {f"r{i}" for i in range(12)}
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {
        "total": 12,
        "completed": len(outputs),
        "failed": len(errors),
    }
    assert batch.usage is not None
    assert batch.usage.total_tokens == sum(
        o["response"]["body"]["usage"]["total_tokens"] for o in outputs
    )


def test_a_batch_larger_than_the_tenant_quota_is_submitted_as_room_frees(
    cluster: Cluster,
) -> None:
    key = create_api_key(cluster.settings, unique_tenant())
    lines: list[dict[str, Any] | str] = [
        request_line(f"r{i}", f"{nonce()} [sim latency_ms=200]") for i in range(5)
    ]
    process, root = cluster.gateway(TIERQ_GATEWAY__TENANT_MAX_IN_FLIGHT="2")
    with running((process, root)), sdk(root, key) as client:
        batch = batch_reaching(client, start_batch(client, lines).id, {"completed", "failed"})
    assert batch.request_counts is not None
    assert batch.request_counts.completed == 5
    # Submitted in rounds of at most two, each as earlier jobs finished.
    submitted = [
        int(str(event["jobs"]))
        for event in log_events(process.log_path)
        if event.get("event") == "batch.submitted"
    ]
    assert sum(submitted) == 5
    assert max(submitted) <= 2


def test_a_running_batch_whose_stored_requests_are_gone_carries_on_from_its_input_file(
    cluster: Cluster, simulator: Simulator
) -> None:
    # A batch validated before requests were stored in Redis, or whose list expired while
    # every gateway was away: its input file is read again, and nothing is paid twice
    key = create_api_key(cluster.settings, unique_tenant())
    marker = nonce()
    lines: list[dict[str, Any] | str] = [
        request_line(f"r{i}", f"{marker} {i} [sim latency_ms=400]") for i in range(6)
    ]
    process, root = cluster.gateway(TIERQ_GATEWAY__TENANT_MAX_IN_FLIGHT="2")
    with running((process, root)), sdk(root, key) as client:
        created = start_batch(client, lines)
        batch_reaching(client, created.id, {"in_progress"}, timeout=10)
        with cluster.redis() as r:
            r.delete(Keys(cluster.settings.key_prefix).batch_requests(created.id))
        batch = batch_reaching(client, created.id, {"completed", "failed"})
        outputs = file_lines(client, batch.output_file_id)
    assert batch.request_counts is not None
    assert (batch.request_counts.completed, batch.request_counts.failed) == (6, 0)
    assert sorted(line["custom_id"] for line in outputs) == [f"r{i}" for i in range(6)]
    assert len(simulator.requests_with(marker)) == 6
    assert any(e.get("event") == "batch.requests_restored" for e in log_events(process.log_path))


def test_a_batch_past_its_window_ends_expired_with_the_unfinished_in_the_error_file(
    cluster: Cluster,
) -> None:
    key = create_api_key(cluster.settings, unique_tenant())
    lines: list[dict[str, Any] | str] = [
        # 25 s of work (2.5 s each, 4 at a time): more than a loaded machine takes to restart
        # the gateway, so some are still unfinished when the expiry is seen.
        request_line(f"r{i}", f"{nonce()} [sim latency_ms=2500]")
        for i in range(40)
    ]
    with running(cluster.gateway()) as root, sdk(root, key) as client:
        batch_id = start_batch(client, lines).id
        batch_reaching(client, batch_id, {"in_progress"}, timeout=10)
    # Given 24 hours gone by while no gateway ran.
    with cluster.redis() as store:
        raw = store.hget(cluster.batch_key(batch_id), "object")
        assert isinstance(raw, bytes)
        stored = json.loads(raw)
        store.hset(
            cluster.batch_key(batch_id),
            "object",
            json.dumps({**stored, "expires_at": int(time.time()) - 1}),
        )
    with running(cluster.gateway()) as root, sdk(root, key) as client:
        batch = batch_reaching(client, batch_id, {"expired"})
        outputs = file_lines(client, batch.output_file_id)
        errors = file_lines(client, batch.error_file_id)
    assert batch.expired_at is not None
    assert batch.request_counts is not None
    assert batch.request_counts.total == 40 == len(outputs) + len(errors)
    assert errors
    assert all(e["error"]["code"] == "batch_expired" for e in errors)


def test_a_file_with_more_requests_than_a_batch_may_hold_is_refused_at_upload(
    gateway_url: str, tenant_key: TenantKey, plain_settings: Settings
) -> None:
    _, key = tenant_key()
    limit = plain_settings.gateway.max_batch_lines
    with sdk(gateway_url, key) as client, pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.jsonl", b"{}\n" * (limit + 1)), purpose="batch")
    assert refused.value.status_code == 413
    body = refused.value.body
    assert isinstance(body, dict)
    assert body["code"] == "too_many_requests_in_file"
    assert body["param"] == "file"
