"""One tenant must not exhaust the shared Redis: the gateway's storage quota per tenant, uploads
streamed into Redis as they arrive, the cap on uploads at once, and the fleet-wide memory guard.

Real gateway processes over real HTTP, the `openai` SDK where it can say the call, and raw
multipart bodies (written here, chunk by chunk) where a test needs the body's pace or order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import redis

from tests.support import (
    GatewayFactory,
    TenantKey,
    create_api_key,
    eventually,
    gateway_client,
    nonce,
    refused_with,
    settings_for,
    unique_tenant,
)
from tierq.core.errors import StoreFullError
from tierq.core.keys import Keys
from tierq.core.memory_guard import GuardState, MemoryGuard, MemoryReading
from tierq.core.settings import Settings
from tierq.devkit.local_redis import EmbeddedRedis
from tierq.devkit.processes import ManagedProcess, start_gateway
from tierq.producers.gateway.form_stream import Field, FileData, FileEnd, FileStart, FormStream

MIB = 1024 * 1024
# The quotas of the module's gateway: small enough to reach in a test.
MAX_FILES = 3
MAX_FILE_BYTES = 20 * MIB
MAX_CONCURRENT_UPLOADS = 2
BOUNDARY = "tierq-test-boundary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
CHUNK = 64 * 1024


@contextmanager
def sdk(root: str, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0, timeout=60) as client:
        yield client


def field(name: str, value: str) -> bytes:
    return (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
    ).encode()


def multipart(
    content: Iterable[bytes],
    *,
    before: dict[str, str] | None = None,
    after: dict[str, str] | None = None,
    filename: str = "in.jsonl",
) -> Iterator[bytes]:
    """A multipart upload's body, a chunk at a time: the fields `before` the file (the SDK's
    order; `purpose` "batch" by default), the file's `content` as it is iterated, then the
    fields `after` it."""
    for name, value in ({"purpose": "batch"} if before is None else before).items():
        yield field(name, value)
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    yield from content
    yield b"\r\n"
    for name, value in (after or {}).items():
        yield field(name, value)
    yield f"--{BOUNDARY}--\r\n".encode()


def jsonl_bytes(total: int, line_bytes: int = 2048) -> Iterator[bytes]:
    """`total` bytes of JSON lines of `line_bytes` each (few lines: a batch holds 50,000), in
    chunks of about `CHUNK`."""
    line = b'{"x": "' + b"a" * (line_bytes - 10) + b'"}\n'
    assert len(line) == line_bytes
    per_chunk = max(1, CHUNK // line_bytes)
    sent = 0
    while sent < total:
        chunk = (line * per_chunk)[: total - sent]
        sent += len(chunk)
        yield chunk


def error_of(caught: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    body = caught.value.body
    assert isinstance(body, dict)
    return body


@pytest.fixture(scope="module")
def quota_gateway(worker_env: dict[str, str], logs_dir: Path) -> Iterator[tuple[str, Settings]]:
    """A gateway whose tenants may keep `MAX_FILES` files of `MAX_FILE_BYTES` in all, and
    which receives `MAX_CONCURRENT_UPLOADS` uploads at once."""
    env = {
        **worker_env,
        "TIERQ_GATEWAY__TENANT_MAX_FILES": str(MAX_FILES),
        "TIERQ_GATEWAY__TENANT_MAX_FILE_BYTES": str(MAX_FILE_BYTES),
        "TIERQ_GATEWAY__MAX_CONCURRENT_UPLOADS": str(MAX_CONCURRENT_UPLOADS),
    }
    process, root = start_gateway(logs_dir / f"gateway-quota-{nonce()}.log", env)
    yield root, settings_for(env)
    process.stop()


@pytest.fixture
def store(settings: Settings) -> Iterator[tuple[redis.Redis, Keys]]:
    """The tests' Redis, to look at what the gateway keeps, and its key names."""
    with redis.Redis.from_url(settings.redis_url.get_secret_value()) as client:
        yield client, Keys(settings.key_prefix)


def counted(client: redis.Redis, keys: Keys, tenant: str) -> tuple[set[str], int]:
    """The files a tenant's storage quota counts, and their bytes."""
    ids = {m.decode() for m in client.zrange(keys.tenant_uploads(tenant), 0, -1)}
    total = client.hget(keys.tenant_upload_bytes(tenant), "total")
    return ids, int(total or 0)


# --- the storage quota -------------------------------------------------------------------------


def test_a_tenant_keeps_at_most_its_quota_of_files_and_deleting_one_frees_a_slot(
    quota_gateway: tuple[str, Settings],
    tenant_key: TenantKey,
    store: tuple[redis.Redis, Keys],
) -> None:
    root, _ = quota_gateway
    client_redis, keys = store
    tenant, key = tenant_key()
    _, other_key = tenant_key()
    with sdk(root, key) as client:
        # Given a tenant keeping as many files as it may
        kept = [
            client.files.create(file=(f"in{i}.jsonl", b"{}\n"), purpose="batch")
            for i in range(MAX_FILES)
        ]
        assert counted(client_redis, keys, tenant) == ({f.id for f in kept}, 3 * MAX_FILES)

        # When it uploads one more, it is refused 429, in the API's shape, naming the setting
        with pytest.raises(openai.RateLimitError) as refused:
            client.files.create(file=("more.jsonl", b"{}\n"), purpose="batch")
        error = error_of(refused)
        assert error["code"] == "storage_quota_exceeded"
        assert "TIERQ_GATEWAY__TENANT_MAX_FILES" in error["message"]
        assert refused.value.response.headers["x-should-retry"] == "false"
        # And nothing of it is kept or counted
        assert {f.id for f in client.files.list()} == {f.id for f in kept}
        assert counted(client_redis, keys, tenant) == ({f.id for f in kept}, 3 * MAX_FILES)

        # While another tenant uploads as usual
        with sdk(root, other_key) as other:
            assert other.files.create(file=("x.jsonl", b"{}\n"), purpose="batch").bytes == 3

        # And once the tenant deletes a file, its slot is free again
        client.files.delete(kept[0].id)
        assert counted(client_redis, keys, tenant)[0] == {f.id for f in kept[1:]}
        again = client.files.create(file=("again.jsonl", b"{}\n{}\n"), purpose="batch")
        assert again.bytes == 6
        with pytest.raises(openai.RateLimitError):
            client.files.create(file=("more.jsonl", b"{}\n"), purpose="batch")


def test_an_upload_passing_the_bytes_quota_is_refused_mid_stream_and_leaves_nothing_behind(
    quota_gateway: tuple[str, Settings],
    tenant_key: TenantKey,
    store: tuple[redis.Redis, Keys],
) -> None:
    root, _ = quota_gateway
    client_redis, keys = store
    tenant, key = tenant_key()
    with gateway_client(root, key, timeout=60) as http:
        # Given a 12 MiB file under the 20 MiB quota: stored, in two parts written as it came
        control = http.post(
            "/v1/files", content=multipart(jsonl_bytes(12 * MIB)), headers=MULTIPART
        )
        assert control.status_code == 200, control.text
        control_id = control.json()["id"]
        assert client_redis.hget(keys.file(control_id), "parts") == b"2"
        assert counted(client_redis, keys, tenant) == ({control_id}, 12 * MIB)

        # When a second 12 MiB file streams in: its first 8 MiB fit, and are stored as a part
        seen: dict[str, str] = {}

        def under_way() -> str | None:
            ids = counted(client_redis, keys, tenant)[0] - {control_id}
            if ids and client_redis.hexists(keys.file(next(iter(ids))), "part:0"):
                return next(iter(ids))
            return None

        def second_file() -> Iterator[bytes]:
            chunks = jsonl_bytes(12 * MIB)
            sent = 0
            for chunk in chunks:
                yield chunk
                sent += len(chunk)
                if sent >= 8 * MIB:
                    break
            seen["id"] = eventually(under_way, what="the first part stored", timeout=20)
            yield from chunks

        refused = http.post("/v1/files", content=multipart(second_file()), headers=MULTIPART)

    # Then it is refused 429 once its bytes pass the quota, naming the setting
    error = refused_with(refused, 429, "file")
    assert error["code"] == "storage_quota_exceeded"
    assert "TIERQ_GATEWAY__TENANT_MAX_FILE_BYTES" in error["message"]
    # And the part it had written is gone, and only the first file is kept and counted
    assert client_redis.exists(keys.file(seen["id"])) == 0
    assert counted(client_redis, keys, tenant) == ({control_id}, 12 * MIB)
    with gateway_client(root, key) as http:
        assert [f["id"] for f in http.get("/v1/files").json()["data"]] == [control_id]


def test_an_expired_file_stops_counting_without_anyone_deleting_it(
    quota_gateway: tuple[str, Settings],
    tenant_key: TenantKey,
    store: tuple[redis.Redis, Keys],
) -> None:
    root, _ = quota_gateway
    client_redis, keys = store
    tenant, key = tenant_key()
    with sdk(root, key) as client:
        kept = [
            client.files.create(file=(f"in{i}.jsonl", b"{}\n"), purpose="batch")
            for i in range(MAX_FILES)
        ]
        with pytest.raises(openai.RateLimitError):
            client.files.create(file=("more.jsonl", b"{}\n"), purpose="batch")

        # Given the accounting expects each file when Redis expires it (one clock: Redis's)
        for file in kept:
            score = client_redis.zscore(keys.tenant_uploads(tenant), file.id)
            seconds, micros = client_redis.time()
            left_ms = client_redis.pttl(keys.file(file.id))
            assert score is not None
            assert abs(score - (seconds + micros / 1e6 + left_ms / 1000)) < 2

        # When the first file's time comes: Redis expires it, and tells nobody
        seconds, micros = client_redis.time()
        client_redis.pexpire(keys.file(kept[0].id), 300)
        client_redis.zadd(
            keys.tenant_uploads(tenant), {kept[0].id: seconds + micros / 1e6 + 0.3}, xx=True
        )
        eventually(
            lambda: client_redis.exists(keys.file(kept[0].id)) == 0,
            what="the file expiring",
            timeout=10,
        )

        # Then the next upload is accepted, and the expired file is no longer counted
        fresh = client.files.create(file=("fresh.jsonl", b"{}\n{}\n"), purpose="batch")
    ids, total = counted(client_redis, keys, tenant)
    assert ids == {kept[1].id, kept[2].id, fresh.id}
    assert total == 3 + 3 + 6


def test_fields_after_the_file_are_checked_at_the_end_and_a_refusal_leaves_nothing(
    quota_gateway: tuple[str, Settings],
    tenant_key: TenantKey,
    store: tuple[redis.Redis, Keys],
) -> None:
    root, _ = quota_gateway
    client_redis, keys = store
    tenant, key = tenant_key()
    seconds = {"expires_after[anchor]": "created_at", "expires_after[seconds]": "7200"}
    with gateway_client(root, key) as http:
        # A purpose that comes after the file, but is wrong: 400, and nothing kept or counted
        wrong = http.post(
            "/v1/files",
            content=multipart([b"{}\n"], before={}, after={"purpose": "fine-tune"}),
            headers=MULTIPART,
        )
        assert refused_with(wrong, 400, "purpose")
        assert counted(client_redis, keys, tenant) == (set(), 0)
        assert http.get("/v1/files").json()["data"] == []
        # Missing altogether: 400 too
        missing = http.post("/v1/files", content=multipart([b"{}\n"], before={}), headers=MULTIPART)
        assert refused_with(missing, 400, "purpose")

        # A right one after the file, with its expiry: the file is kept as it says
        right = http.post(
            "/v1/files",
            content=multipart([b"{}\n", b"{}\n"], before={}, after={"purpose": "batch", **seconds}),
            headers=MULTIPART,
        )
        assert right.status_code == 200, right.text
        file = right.json()
        assert (file["bytes"], file["purpose"]) == (6, "batch")
        assert file["expires_at"] - file["created_at"] == 7200
        assert counted(client_redis, keys, tenant) == ({file["id"]}, 6)
        # And an empty file is still a 400
        empty = http.post("/v1/files", content=multipart([]), headers=MULTIPART)
        assert refused_with(empty, 400, "file")["message"] == "The file is empty."


def test_a_form_parsed_as_it_streams_reads_the_same_whatever_the_chunks() -> None:
    body = b"".join(multipart([b"{}\n" * 1000], after={"expires_after[anchor]": "created_at"}))
    for size in (1, 7, 4096, len(body)):
        form = FormStream(MULTIPART["content-type"])
        events = [e for i in range(0, len(body), size) for e in form.feed(body[i : i + size])]
        events += form.finish()
        data = b"".join(e.data for e in events if isinstance(e, FileData))
        others = [e for e in events if not isinstance(e, FileData)]
        assert data == b"{}\n" * 1000
        assert others == [
            Field("purpose", "batch"),
            FileStart("file", "in.jsonl"),
            FileEnd(),
            Field("expires_after[anchor]", "created_at"),
        ]


# --- uploads at once ---------------------------------------------------------------------------


class HeldUpload:
    """An upload that sends its fields and a first chunk, then waits to be let go."""

    def __init__(self, pool: ThreadPoolExecutor, root: str, key: str) -> None:
        self.go = threading.Event()
        self.answer: Future[httpx2.Response] = pool.submit(self._send, root, key)

    def _body(self) -> Iterator[bytes]:
        yield b"{}\n"
        if not self.go.wait(60):
            raise TimeoutError("held upload never let go")
        yield b"{}\n"

    def _send(self, root: str, key: str) -> httpx2.Response:
        with gateway_client(root, key, timeout=90) as http:
            return http.post("/v1/files", content=multipart(self._body()), headers=MULTIPART)


def test_one_upload_more_than_the_cap_is_refused_at_once_and_never_queued(
    quota_gateway: tuple[str, Settings],
    tenant_key: TenantKey,
    store: tuple[redis.Redis, Keys],
) -> None:
    root, _ = quota_gateway
    client_redis, keys = store

    def hold(pool: ThreadPoolExecutor) -> HeldUpload:
        tenant, key = tenant_key()
        held = HeldUpload(pool, root, key)
        eventually(
            lambda: counted(client_redis, keys, tenant)[0],
            what="the gateway receiving the held upload",
            timeout=20,
        )
        return held

    def probe() -> tuple[float, httpx2.Response]:
        with gateway_client(root, tenant_key()[1]) as http:
            started = time.monotonic()
            answer = http.post(
                "/v1/files", content=b"".join(multipart([b"{}\n"])), headers=MULTIPART
            )
            return time.monotonic() - started, answer

    with ThreadPoolExecutor(max_workers=MAX_CONCURRENT_UPLOADS) as pool:
        held = [hold(pool)]
        try:
            # Given one slot of two taken, an upload is received as usual
            assert probe()[1].status_code == 200
            # When the other is taken too
            held.append(hold(pool))
            # Then one more is refused 429 at once, with Retry-After, rather than queued
            took, refused = probe()
            error = refused_with(refused, 429, "file")
            assert error["code"] == "too_many_concurrent_uploads"
            assert "TIERQ_GATEWAY__MAX_CONCURRENT_UPLOADS" in error["message"]
            assert refused.headers["retry-after"] == "1"
            assert took < 2
        finally:
            for upload in held:
                upload.go.set()
        # And the held uploads complete, and free their slots
        assert [upload.answer.result(60).status_code for upload in held] == [200, 200]
    assert probe()[1].status_code == 200


# --- memory --------------------------------------------------------------------------------------


def high_water_bytes(pid: int) -> int:
    """The peak resident memory of a process so far (VmHWM, Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def lone_gateway(
    worker_env: dict[str, str], logs_dir: Path
) -> Iterator[tuple[ManagedProcess, str, Settings]]:
    """A gateway process of its own (its PID, to read its memory), taking files up to 128 MiB."""
    env = {**worker_env, "TIERQ_GATEWAY__MAX_FILE_BYTES": str(128 * MIB)}
    process, root = start_gateway(logs_dir / f"gateway-memory-{nonce()}.log", env)
    yield process, root, settings_for(env)
    process.stop()


def test_a_large_upload_streams_through_the_gateway_without_being_held_whole(
    lone_gateway: tuple[ManagedProcess, str, Settings], tenant_key: TenantKey
) -> None:
    process, root, _ = lone_gateway
    _, key = tenant_key()
    size = 64 * MIB
    with gateway_client(root, key, timeout=120) as http:
        # Given the gateway's peak memory once it has received a small upload (code loaded)
        warm = http.post("/v1/files", content=multipart(jsonl_bytes(1 * MIB)), headers=MULTIPART)
        assert warm.status_code == 200, warm.text
        baseline = high_water_bytes(process.pid)

        # When a 64 MiB file is uploaded
        upload = http.post("/v1/files", content=multipart(jsonl_bytes(size)), headers=MULTIPART)
        assert upload.status_code == 200, upload.text
        grown = high_water_bytes(process.pid) - baseline

        # Then it is stored whole, while the gateway's peak grew by a fraction of it (a part
        # of 8 MiB in hand, and a chunk)
        file_id = upload.json()["id"]
        assert http.get(f"/v1/files/{file_id}").json()["bytes"] == size
        http.delete(f"/v1/files/{file_id}")
    # (measured: 7 to 8 MiB, a part; holding the file whole, as `await upload.read()` did, is
    # 64 MiB at the least)
    assert grown < size // 4, f"the gateway's peak memory grew {grown / MIB:.1f} MiB"


def test_the_memory_guard_judges_a_reading_against_the_fraction() -> None:
    assert MemoryReading(899, 1000).refusal(0.9) is None
    refusal = MemoryReading(900, 1000).refusal(0.9)
    assert isinstance(refusal, StoreFullError)
    assert (refusal.used_bytes, refusal.max_bytes, refusal.fraction) == (900, 1000, 0.9)
    # No maxmemory, or a fraction of 1: no guard
    assert MemoryReading(10**12, 0).refusal(0.9) is None
    assert MemoryReading(1000, 1000).refusal(1.0) is None
    assert MemoryReading.from_info({"used_memory": 5, "maxmemory": 7}) == MemoryReading(5, 7)


def test_the_memory_guard_reads_redis_at_most_once_a_second() -> None:
    now = [100.0]
    state = GuardState(0.9, clock=lambda: now[0])
    assert state.due()
    state.asking()
    # A check arriving while the first reading is in flight, with none yet, asks too
    assert state.due()
    state.record({"used_memory": 950, "maxmemory": 1000})
    with pytest.raises(StoreFullError):
        state.judge()
    now[0] += 0.5
    assert not state.due()
    now[0] += 0.5
    assert state.due()
    # A reading that failed is asked again at the next check
    state.asking()
    state.failed()
    assert state.due()


def test_the_blocking_guard_refuses_once_redis_passes_the_fraction(
    private_redis: EmbeddedRedis,
) -> None:
    with redis.Redis.from_url(private_redis.url) as client:
        used = int(client.info("memory")["used_memory"])
        # Below the fraction: nothing raised; a guard off (fraction 1) never raises
        client.config_set("maxmemory", used * 4)
        MemoryGuard(client, 0.9).check()
        client.config_set("maxmemory", used + 1024)
        with pytest.raises(StoreFullError):
            MemoryGuard(client, 0.9).check()
        MemoryGuard(client, 1.0).check()
        client.config_set("maxmemory", 0)
        MemoryGuard(client, 0.9).check()


def test_a_nearly_full_redis_refuses_new_work_with_507_and_still_serves_reads(
    private_redis: EmbeddedRedis, start_gateway_with: GatewayFactory
) -> None:
    root, settings = start_gateway_with(TIERQ_REDIS_URL=private_redis.url)
    key = create_api_key(settings, unique_tenant())
    job = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": nonce()}]}
    filler_key = Keys(f"test-{nonce()}:").job("filler")  # any key the gateway never reads
    with redis.Redis.from_url(private_redis.url) as admin, gateway_client(root, key) as http:
        used = int(admin.info("memory")["used_memory"])
        ceiling = used + 64 * MIB
        admin.config_set("maxmemory", ceiling)
        with sdk(root, key) as client:
            # Given a Redis with room: an upload, a batch and a job are accepted
            upload = client.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
            client.batches.create(
                input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            submitted = http.post("/v1/jobs", json=job)
            assert submitted.status_code == 202, submitted.text
            job_id = submitted.json()["id"]

            # When it fills past the fraction (0.9) of its maxmemory
            # (a MiB at a time: a command's own bytes count against maxmemory while it runs)
            while int(admin.info("memory")["used_memory"]) < 0.93 * ceiling:
                admin.hset(filler_key, nonce(), b"x" * MIB)

            # Then new jobs are refused 507 (within the guard's second), in the API's shape
            refused = eventually(
                lambda: http.post("/v1/jobs", json=job),
                until=lambda r: r.status_code != 202,
                what="a 507",
                timeout=10,
            )
            error = refused_with(refused, 507)
            assert (error["type"], error["code"]) == ("server_error", "store_full")
            assert "TIERQ_REDIS_MEMORY_GUARD_FRACTION" in error["message"]
            assert refused.headers["retry-after"]
            # And so are uploads and batches
            with pytest.raises(openai.InternalServerError) as caught:
                client.files.create(file=("in2.jsonl", b"{}\n"), purpose="batch")
            assert (caught.value.status_code, error_of(caught)["code"]) == (507, "store_full")
            with pytest.raises(openai.InternalServerError) as caught:
                client.batches.create(
                    input_file_id=upload.id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                )
            assert caught.value.status_code == 507
            # While reads still answer
            assert http.get(f"/v1/jobs/{job_id}").status_code == 200
            assert client.files.retrieve(upload.id).id == upload.id

            # And once there is room again, work is accepted again
            admin.delete(filler_key)
        eventually(
            lambda: http.post("/v1/jobs", json=job),
            until=lambda r: r.status_code == 202,
            what="a 202 again",
            timeout=10,
        )
