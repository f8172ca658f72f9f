"""Where a batch lives in Redis, and the per-batch lock that lets one gateway process at a time
move it on.

Every read and write of a batch goes through here, so its layout and the Lua script that keeps
concurrent writers honest (lua/batch_transition.lua) sit behind one class, and the routes and
the finalizer need not know either. Like the file store, it raises the domain errors of
storage_errors.py, which the routes answer.

A batch is one hash (`Keys.batch`): `object` (the API's Batch as JSON), `status` (the same,
for compare-and-set: the cancel route and the finalizer never overwrite each other), `tenant`,
`output_ttl`, `valid` (requests to run), `cursor` (how many of them are submitted), and per
request a `BatchField`: `job:<custom_id>` (its job id) or `rejected:<custom_id>` (its error
line). Once validated, its requests to run are a list (`Keys.batch_requests`), read a chunk at
a time as they are submitted and deleted when the batch ends. Its lock (`Keys.batch_lock`) is
redis-py's `Lock`, which expires if its holder dies.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import redis.asyncio
from redis.asyncio.lock import Lock
from redis.typing import EncodableT, FieldT

from tierq.core import scripts
from tierq.core.contract import JobRequest
from tierq.core.keys import BatchField, Keys, as_text
from tierq.producers.batchfile import BatchRequest
from tierq.producers.gateway.batch_models import (
    COMPLETION_WINDOW_SECONDS,
    Batch,
    BatchList,
    BatchStatus,
)
from tierq.producers.gateway.deps import Gateway
from tierq.producers.gateway.storage_errors import NoSuchBatchError, UnknownCursorError

# A batch's lock lapses this long after its holder stopped renewing it (a crashed gateway).
LOCK_SECONDS = 30


@dataclass
class BatchState:
    """What the finalizer reads of a batch before each step."""

    batch: Batch
    tenant: str
    output_ttl: int
    valid: int  # requests to run (0 until validated)
    cursor: int  # how many of them are submitted


# Requests per RPUSH when a validated batch's requests are stored, and per LRANGE of their
# ids; and per LRANGE while taking a chunk to submit (chunks are bounded in bytes too).
REQUESTS_PER_PUSH = 1_000
REQUESTS_PER_READ = 25
# A batch's stored requests outlive its completion window by a day, for a finalizer that was
# away when it expired; they are deleted as soon as the batch ends.
REQUESTS_TTL_SECONDS = COMPLETION_WINDOW_SECONDS + 86_400


class BatchStore:
    def __init__(self, client: redis.asyncio.Redis, keys: Keys, file_ttl_seconds: int) -> None:
        self.redis = client
        self.keys = keys
        self._file_ttl = file_ttl_seconds
        self._transition = scripts.register(client, "batch_transition")

    @classmethod
    def of(cls, gateway: Gateway) -> BatchStore:
        return cls(gateway.client.redis, gateway.keys, gateway.settings.gateway.file_ttl_seconds)

    def lock(self, batch_id: str) -> Lock:
        """The batch's lock: one holder across gateway processes, taken without waiting
        (`acquire()` answers False if another holds it), lapsing `LOCK_SECONDS` after its
        holder last renewed it (`reacquire()`, which raises `LockNotOwnedError` once it has
        lapsed); `release()` frees it only while still held by this holder."""
        return self.redis.lock(
            self.keys.batch_lock(batch_id), timeout=LOCK_SECONDS, blocking=False, thread_local=False
        )

    async def create(self, tenant: str, batch: Batch, output_ttl: int) -> None:
        key = self.keys.batch(batch.id)
        listing = self.keys.tenant_batches(tenant)
        # Kept through the window, then as long as its files.
        ttl = COMPLETION_WINDOW_SECONDS + self._file_ttl
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={
                    "object": batch.model_dump_json(),
                    "status": batch.status.value,
                    "tenant": tenant,
                    "output_ttl": output_ttl,
                    "valid": 0,
                    "cursor": 0,
                },
            )
            pipe.expire(key, ttl)
            now = time.time()
            pipe.zadd(listing, {batch.id: now})
            # Entries stay when their batch expires (a listing's cursor survives it), until no
            # batch that old can be left.
            pipe.zremrangebyscore(listing, "-inf", now - ttl)
            pipe.expire(listing, ttl)
            pipe.sadd(self.keys.active_batches, batch.id)
            await pipe.execute()

    async def get(self, tenant: str, batch_id: str) -> Batch:
        """The batch; `NoSuchBatchError` for an unknown or expired id and for another
        tenant's."""
        raw, owner = await self.redis.hmget(self.keys.batch(batch_id), ["object", "tenant"])
        if raw is None or owner is None or as_text(owner) != tenant:
            raise NoSuchBatchError(batch_id)
        return Batch.model_validate_json(raw)

    async def load(self, batch_id: str) -> BatchState | None:
        fields = ["object", "tenant", "output_ttl", "valid", "cursor"]
        raw, tenant, ttl, valid, cursor = await self.redis.hmget(self.keys.batch(batch_id), fields)
        if raw is None or tenant is None:
            return None
        return BatchState(
            Batch.model_validate_json(raw),
            as_text(tenant),
            int(ttl or self._file_ttl),
            int(valid or 0),
            int(cursor or 0),
        )

    async def status(self, batch_id: str) -> BatchStatus | None:
        raw = await self.redis.hget(self.keys.batch(batch_id), "status")
        return BatchStatus(as_text(raw)) if raw else None

    async def transition(self, batch: Batch, expected: BatchStatus) -> bool:
        """Write `batch` if its stored status is still `expected`."""
        applied = await self._transition(
            keys=[self.keys.batch(batch.id)],
            args=[expected.value, batch.status.value, batch.model_dump_json()],
        )
        return bool(applied)

    async def record_validation(
        self, batch_id: str, requests: Sequence[BatchRequest], rejected: dict[str, str]
    ) -> None:
        """Keep the requests to run (so submitting never needs the input file again) and the
        rejected lines; a validation repeated after a crash replaces them."""
        mapping: dict[FieldT, EncodableT] = {
            BatchField.REJECTED.of(cid): line for cid, line in rejected.items()
        }
        await self.keep_requests(batch_id, requests, {**mapping, "valid": len(requests)})

    async def keep_requests(
        self,
        batch_id: str,
        requests: Sequence[BatchRequest],
        fields: dict[FieldT, EncodableT] | None = None,
    ) -> None:
        """Store the requests to run (and `fields` of the batch with them, at once).

        They are pushed to a key of their own, in pipelined chunks, and renamed into place in
        one small transaction: Redis never holds a whole batch queued in a transaction, and a
        reader never sees half a list.
        """
        listing = self.keys.batch_requests(batch_id)
        building = self.keys.batch_requests_building(batch_id)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.delete(building)
            for start in range(0, len(requests), REQUESTS_PER_PUSH):
                chunk = requests[start : start + REQUESTS_PER_PUSH]
                pipe.rpush(building, *(_request_json(r) for r in chunk))
                # A builder that dies leaves nothing behind for long.
                pipe.expire(building, REQUESTS_TTL_SECONDS)
            await pipe.execute()
        async with self.redis.pipeline(transaction=True) as pipe:
            if requests:
                pipe.rename(building, listing)
                pipe.expire(listing, REQUESTS_TTL_SECONDS)
            else:
                pipe.delete(listing)
            if fields:
                pipe.hset(self.keys.batch(batch_id), mapping=fields)
            await pipe.execute()

    async def has_requests(self, batch_id: str) -> bool:
        return bool(await self.redis.exists(self.keys.batch_requests(batch_id)))

    async def requests(
        self, batch_id: str, start: int, count: int, max_bytes: int
    ) -> list[BatchRequest]:
        """Up to `count` of the batch's requests to run from `start`, stopping once they pass
        `max_bytes` (at least one): read a few at a time, so a chunk of large requests is
        not read many times over."""
        listing = self.keys.batch_requests(batch_id)
        found: list[BatchRequest] = []
        size = 0
        while len(found) < count and size <= max_bytes:
            step = min(REQUESTS_PER_READ, count - len(found))
            at = start + len(found)
            raws = await self.redis.lrange(listing, at, at + step - 1)
            for raw in raws:
                if found and size + len(raw) > max_bytes:
                    return found
                found.append(_request_from(raw))
                size += len(raw)
            if len(raws) < step:
                break
        return found

    async def custom_ids(self, batch_id: str, start: int) -> AsyncIterator[list[str]]:
        """The custom ids of the batch's requests to run from `start` to the end, a chunk
        at a time."""
        listing = self.keys.batch_requests(batch_id)
        while raws := await self.redis.lrange(listing, start, start + REQUESTS_PER_PUSH - 1):
            yield [json.loads(raw)["custom_id"] for raw in raws]
            start += len(raws)

    async def give_up_unsubmitted(self, batch_id: str, submitted: int) -> None:
        """The batch's requests past the first `submitted` can no longer be run (neither the
        stored requests nor the input are left): it runs only those."""
        await self.redis.hset(self.keys.batch(batch_id), "valid", submitted)

    async def record_jobs(self, batch_id: str, jobs: dict[str, str], cursor: int) -> None:
        mapping: dict[FieldT, EncodableT] = {
            BatchField.JOB.of(cid): job for cid, job in jobs.items()
        }
        await self.redis.hset(self.keys.batch(batch_id), mapping={**mapping, "cursor": cursor})

    async def jobs(self, batch_id: str) -> dict[str, str]:
        """The submitted requests' job ids by custom id."""
        return await self._fields(batch_id, BatchField.JOB)

    async def rejected(self, batch_id: str) -> dict[str, str]:
        """The error lines of the requests refused while validating, by custom id."""
        return await self._fields(batch_id, BatchField.REJECTED)

    async def _fields(self, batch_id: str, kind: BatchField) -> dict[str, str]:
        found: dict[str, str] = {}
        async for name, value in self.redis.hscan_iter(
            self.keys.batch(batch_id), match=kind.pattern, count=1_000
        ):
            found[kind.custom_id(as_text(name))] = as_text(value)
        return found

    async def active(self) -> set[str]:
        """The ids of the batches not yet ended, for the finalizer to move on."""
        return {as_text(m) for m in await self.redis.smembers(self.keys.active_batches)}

    async def finish(self, batch_id: str) -> None:
        """The batch ended here: drop what only a running batch needs, and keep its record
        as long as its files."""
        await self.discard(batch_id)
        await self.redis.expire(self.keys.batch(batch_id), self._file_ttl)

    async def discard(self, batch_id: str) -> None:
        """The batch ended elsewhere, or its record expired: stop watching it."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.srem(self.keys.active_batches, batch_id)
            pipe.delete(self.keys.batch_requests(batch_id))
            await pipe.execute()

    async def page(self, tenant: str, after: str | None, limit: int) -> BatchList:
        listing = self.keys.tenant_batches(tenant)
        start = 0
        if after is not None:
            rank = await self.redis.zrevrank(listing, after)
            if rank is None:
                raise UnknownCursorError("batch", after)
            start = int(rank) + 1  # type: ignore[arg-type]  # WITHSCORE off: an int
        batches: list[Batch] = []
        while len(batches) <= limit:  # one more than the page says whether there is more
            ids = await self.redis.zrevrange(listing, start, start + limit)
            if not ids:
                break
            start += len(ids)
            async with self.redis.pipeline(transaction=False) as pipe:
                for batch_id in ids:
                    pipe.hget(self.keys.batch(as_text(batch_id)), "object")
                raws = await pipe.execute()
            batches.extend(Batch.model_validate_json(raw) for raw in raws if raw is not None)
        return BatchList.of(batches[:limit], has_more=len(batches) > limit)


def _request_json(request: BatchRequest) -> str:
    # As the queue envelope carries a request: exactly what the caller set, the API's names.
    body = request.request.model_dump(mode="json", exclude_unset=True, by_alias=True)
    line = {"custom_id": request.custom_id, "line": request.line, "request": body}
    # Compact and unescaped: the list costs about what the input file does, not twice that.
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def _request_from(raw: bytes | str) -> BatchRequest:
    data = json.loads(raw)
    return BatchRequest(data["custom_id"], data["line"], JobRequest.model_validate(data["request"]))
