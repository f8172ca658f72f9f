"""The gateway's storage: domain errors raised by the stores and answered by the routes in the
API's shape, and the per-batch lock (redis-py's `Lock`) the finalizer holds while it works."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx2
import pytest
import redis.asyncio
from redis.exceptions import LockNotOwnedError

from tests.support import nonce
from tierq.core.keys import Keys
from tierq.core.settings import Settings
from tierq.producers.gateway.batch_store import LOCK_SECONDS, BatchStore
from tierq.producers.gateway.file_store import FileStore
from tierq.producers.gateway.storage_errors import (
    NoSuchBatchError,
    NoSuchFileError,
    UnknownCursorError,
)

TenantKey = Callable[..., tuple[str, str]]


def test_the_stores_raise_domain_errors_for_what_they_cannot_find(settings: Settings) -> None:
    keys = Keys(f"test-{nonce()}:")

    async def refusals() -> tuple[str, list[BaseException]]:
        client = redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value())
        try:
            files = FileStore(client, keys, longest_ttl_seconds=3_600)
            batches = BatchStore(client, keys, file_ttl_seconds=3_600)
            # Given a file of tenant "a"
            mine = await files.save("a", b"{}\n", filename="in.jsonl", purpose="batch",
                                    ttl_seconds=3_600)  # fmt: skip
            attempts = [
                files.get("a", "file-unknown"),
                files.get("b", mine.id),  # another tenant's: the same as unknown
                files.content("a", "file-unknown"),
                files.delete("b", mine.id),
                batches.get("a", "batch_unknown"),
                files.page("a", after="file-unknown", limit=10, newest_first=True, purpose=None),
                batches.page("a", "batch_unknown", 10),
            ]
            outcomes = await asyncio.gather(*attempts, return_exceptions=True)
            # And the file that was refused to "b" is still there for "a"
            assert (await files.get("a", mine.id)).id == mine.id
            return mine.id, [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        finally:
            await client.aclose()

    mine, errors = asyncio.run(refusals())

    assert [repr(error) for error in errors] == [
        "<NoSuchFileError 'file-unknown'>",
        f"<NoSuchFileError {mine!r}>",
        "<NoSuchFileError 'file-unknown'>",
        f"<NoSuchFileError {mine!r}>",
        "<NoSuchBatchError 'batch_unknown'>",
        "<UnknownCursorError file 'file-unknown'>",
        "<UnknownCursorError batch 'batch_unknown'>",
    ]
    assert isinstance(errors[1], NoSuchFileError)
    assert isinstance(errors[4], NoSuchBatchError)
    assert isinstance(errors[6], UnknownCursorError)


def test_the_routes_answer_storage_errors_as_the_api_does(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, key = tenant_key()
    with httpx2.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}) as http:
        answers = {
            path: (response.status_code, response.json())
            for path in (
                "/v1/files/file-unknown",
                "/v1/files/file-unknown/content",
                "/v1/batches/batch_unknown",
                "/v1/files?after=file-unknown",
                "/v1/batches?after=batch_unknown",
            )
            for response in [http.get(path)]
        }
        deleted = http.delete("/v1/files/file-unknown")
        cancelled = http.post("/v1/batches/batch_unknown/cancel")

    def error(message: str, code: str, param: str | None = None) -> dict[str, object]:
        return {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        }

    no_file = error("No such file: 'file-unknown'", "file_not_found")
    no_batch = error("No such batch: 'batch_unknown'", "batch_not_found")
    assert answers == {
        "/v1/files/file-unknown": (404, no_file),
        "/v1/files/file-unknown/content": (404, no_file),
        "/v1/batches/batch_unknown": (404, no_batch),
        "/v1/files?after=file-unknown": (
            400,
            error("No file 'file-unknown' to list after.", "invalid_request", "after"),
        ),
        "/v1/batches?after=batch_unknown": (
            400,
            error("No batch 'batch_unknown' to list after.", "invalid_request", "after"),
        ),
    }
    assert (deleted.status_code, deleted.json()) == (404, no_file)
    assert (cancelled.status_code, cancelled.json()) == (404, no_batch)


def test_a_batchs_lock_has_one_holder_and_only_a_holder_renews_or_frees_it(
    settings: Settings,
) -> None:
    keys = Keys(f"test-{nonce()}:")

    async def scenario() -> None:
        client = redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value())
        try:
            store = BatchStore(client, keys, file_ttl_seconds=3_600)
            first, second = store.lock("batch_1"), store.lock("batch_1")

            # Given one gateway holding the batch: another is refused at once, not made to wait
            assert await first.acquire()
            assert not await second.acquire()
            # It lapses LOCK_SECONDS after its holder last renewed it
            ttl = await client.pttl(keys.batch_lock("batch_1"))
            assert LOCK_SECONDS * 1000 - 2_000 < ttl <= LOCK_SECONDS * 1000
            await client.pexpire(keys.batch_lock("batch_1"), 5_000)
            await first.reacquire()
            assert await client.pttl(keys.batch_lock("batch_1")) > 5_000

            # When it lapses (its holder stalled) and another gateway takes the batch over
            await client.delete(keys.batch_lock("batch_1"))
            assert await second.acquire()

            # Then the stalled holder can neither renew it nor free it from the new holder
            with pytest.raises(LockNotOwnedError):
                await first.reacquire()
            with pytest.raises(LockNotOwnedError):
                await first.release()
            assert await second.owned()
            await second.release()
            assert not await client.exists(keys.batch_lock("batch_1"))
        finally:
            await client.aclose()

    asyncio.run(scenario())
