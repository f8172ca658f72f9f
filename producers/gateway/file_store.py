"""Where the gateway keeps files: Redis, each file readable by its own tenant only.

A file is one Redis hash (`Keys.file`): its object (the API's `FileObject` as JSON), its tenant
and its bytes in parts of at most `FILE_PART_BYTES` (`parts`, `part:0`, `part:1`, ...), expiring
with the file (`TIERQ_GATEWAY__FILE_TTL_SECONDS`, or the upload's own `expires_after`). Parts
keep a file clear of Redis's 512 MB value limit, let a batch's output be written as it is
rendered and let a download stream, a part at a time. Another tenant's file id is
`NoSuchFileError`, as an unknown one is. Each tenant's file ids are also in a sorted set by
creation time (`Keys.tenant_files`), for listing. Deleting a file leaves its entry, so a
listing's `after` cursor still works when the client deletes what it lists (the common clean-up
loop); entries older than any file can live are dropped when a file is saved, so the set holds
the files of that span, live or not.

Uploads count in their tenant's storage quota (storage_quota.py, kept by the upload route):
deleting a file releases it there, and `keep_at_least` keeps it counted as long as it lives.

The store raises the domain errors of storage_errors.py; the routes (files.py) answer them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio
import structlog

from tierq.core.keys import Keys, as_text
from tierq.producers.gateway.deps import Gateway
from tierq.producers.gateway.file_models import (
    MAX_EXPIRES_AFTER_SECONDS,
    FileDeleted,
    FileList,
    FileObject,
    FilePurpose,
)
from tierq.producers.gateway.storage_errors import NoSuchFileError, UnknownCursorError
from tierq.producers.gateway.storage_quota import StorageQuota

log = structlog.get_logger("tierq.gateway")

# How much longer than its TTL a file can live: a batch created on an input file keeps it
# for its completion window and an hour more (batches.py), whatever its age.
KEPT_FOR_A_BATCH_MARGIN_SECONDS = 2 * 86_400
# The largest value a file's bytes are stored in (Redis refuses values over 512 MB).
FILE_PART_BYTES = 8 * 1024 * 1024
# How long the parts of a file being written outlive its last part, unless it is published.
UNPUBLISHED_TTL_SECONDS = 3_600
# File objects per pipelined read while listing.
LIST_READ_CHUNK = 500


class FileStore:
    """Files in Redis, each readable by its own tenant only."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        *,
        longest_ttl_seconds: int,
        part_bytes: int = FILE_PART_BYTES,
    ) -> None:
        self._redis = client
        self._keys = keys
        self.part_bytes = part_bytes
        # Index entries older than this hold no live file.
        self._index_horizon_seconds = longest_ttl_seconds + KEPT_FOR_A_BATCH_MARGIN_SECONDS
        self.quota = StorageQuota(client, keys, horizon_seconds=self._index_horizon_seconds)

    @classmethod
    def of(cls, gateway: Gateway) -> FileStore:
        longest = max(gateway.settings.gateway.file_ttl_seconds, MAX_EXPIRES_AFTER_SECONDS)
        return cls(gateway.client.redis, gateway.keys, longest_ttl_seconds=longest)

    async def save(
        self, tenant: str, content: bytes, *, filename: str, purpose: FilePurpose, ttl_seconds: int
    ) -> FileObject:
        writer = self.writer(tenant, filename=filename, purpose=purpose, ttl_seconds=ttl_seconds)
        await writer.write(content)
        return await writer.close()

    def writer(
        self,
        tenant: str,
        *,
        filename: str,
        purpose: FilePurpose,
        ttl_seconds: int,
        file_id: str | None = None,
    ) -> FileWriter:
        """A new file, written a part at a time; it exists (is readable, listed) once closed.
        `file_id` is one from `new_file_id()` already used (an upload counts it in its quota
        before its bytes arrive), or a new one."""
        return FileWriter(self, tenant, filename, purpose, ttl_seconds, file_id or new_file_id())

    async def _publish(self, tenant: str, file: FileObject, parts: int, ttl_seconds: int) -> None:
        """Make a written file visible: its object, owner and part count, and its listing."""
        key = self._keys.file(file.id)
        now = int(time.time())
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key, mapping={"object": file.model_dump_json(), "tenant": tenant, "parts": parts}
            )
            pipe.expire(key, ttl_seconds)
            listing = self._keys.tenant_files(tenant)
            # Scored by the precise time: uploads within one second still list in order.
            pipe.zadd(listing, {file.id: time.time()})
            pipe.zremrangebyscore(listing, "-inf", now - self._index_horizon_seconds)
            # No file in it outlives this from its creation, and this one is the newest.
            pipe.expire(listing, self._index_horizon_seconds)
            await pipe.execute()

    async def _write_part(self, file_id: str, index: int, data: bytes | bytearray) -> None:
        key = self._keys.file(file_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, f"part:{index}", data)
            # A writer that dies before closing leaves parts nobody reads: they expire soon
            # (publishing gives the file its own lifetime).
            pipe.expire(key, UNPUBLISHED_TTL_SECONDS)
            await pipe.execute()

    async def _discard(self, file_id: str) -> None:
        await self._redis.delete(self._keys.file(file_id))

    async def page(
        self,
        tenant: str,
        *,
        after: str | None,
        limit: int,
        newest_first: bool,
        purpose: str | None,
    ) -> FileList:
        """A page of the tenant's live files in creation order, filtered by `purpose`.

        Records are read in chunks until the page is full: a purpose filter or deleted files
        could otherwise leave a page short of `limit` with more to come.
        """
        listing = self._keys.tenant_files(tenant)
        rank = self._redis.zrevrank if newest_first else self._redis.zrank
        ids_in = self._redis.zrevrange if newest_first else self._redis.zrange
        start = 0
        if after is not None:
            # A deleted or expired file keeps its place, so the cursor survives it.
            position = await rank(listing, after)
            if position is None:
                raise UnknownCursorError("file", after)
            start = int(position) + 1  # type: ignore[arg-type]  # WITHSCORE off: an int
        files: list[FileObject] = []
        while len(files) <= limit:  # one more than the page says whether there is more
            ids = [as_text(m) for m in await ids_in(listing, start, start + LIST_READ_CHUNK - 1)]
            if not ids:
                break
            start += len(ids)
            async with self._redis.pipeline(transaction=False) as pipe:
                for file_id in ids:
                    pipe.hget(self._keys.file(file_id), "object")
                raws = await pipe.execute()
            found = (FileObject.model_validate_json(raw) for raw in raws if raw is not None)
            files.extend(f for f in found if purpose is None or f.purpose == purpose)
        return FileList.of(files[:limit], has_more=len(files) > limit)

    async def delete(self, tenant: str, file_id: str) -> FileDeleted:
        """Delete the tenant's file, and stop counting it in its quota; `NoSuchFileError` as
        for `get`. Its listing entry stays (see the module's docstring)."""
        await self.get(tenant, file_id)
        if not await self._redis.delete(self._keys.file(file_id)):
            # Expired, or deleted by another request, since it was read.
            raise NoSuchFileError(file_id)
        await self.quota.release(tenant, file_id)
        return FileDeleted(id=file_id, deleted=True)

    async def get(self, tenant: str, file_id: str) -> FileObject:
        """The file's object; `NoSuchFileError` for an unknown or expired id and for another
        tenant's."""
        file: FileObject = (await self._read(tenant, file_id, "object", "tenant"))[0]
        return file

    async def content(self, tenant: str, file_id: str) -> tuple[FileObject, bytes]:
        """The file's object and all its bytes; `NoSuchFileError` as for `get`, and for a file
        deleted or expired while it was read (never a truncated file)."""
        file, parts = await self.stream(tenant, file_id)
        data = b"".join([part async for part in parts])
        if len(data) != file.bytes:
            raise NoSuchFileError(file_id)
        return file, data

    async def stream(self, tenant: str, file_id: str) -> tuple[FileObject, AsyncIterator[bytes]]:
        """The file's object (`NoSuchFileError` as for `get`), and its bytes a part at a time.

        The first part is read here, so a fault (Redis away) or a missing file is raised
        before a download starts. A file deleted or expired, or Redis lost, while the rest is
        read ends early: the reader gets fewer bytes than the object says (a download's
        Content-Length tells its client so).
        """
        file, _, count, legacy = await self._read(
            tenant, file_id, "object", "tenant", "parts", "content"
        )
        if count is None:  # written before files had parts
            first, count = legacy, 1
        else:
            first = await self._redis.hget(self._keys.file(file_id), "part:0")
        if not isinstance(first, bytes):
            raise NoSuchFileError(file_id)
        return file, self._parts(file_id, first, int(count))

    async def _parts(self, file_id: str, first: bytes, count: int) -> AsyncIterator[bytes]:
        yield first
        key = self._keys.file(file_id)
        for index in range(1, count):
            try:
                part = await self._redis.hget(key, f"part:{index}")
            except redis.RedisError as error:
                log.warning("file.read_failed", file_id=file_id, part=index, error=str(error))
                return
            if not isinstance(part, bytes):
                return
            yield part

    async def _read(self, tenant: str, file_id: str, *fields: str) -> tuple[Any, ...]:
        """The file's object, then the other `fields` asked for (the first being `tenant`)."""
        raw, owner, *rest = await self._redis.hmget(self._keys.file(file_id), list(fields))
        if raw is None or owner is None or as_text(owner) != tenant:
            raise NoSuchFileError(file_id)
        return (FileObject.model_validate_json(raw), owner, *rest)

    async def keep_at_least(self, tenant: str, file_id: str, seconds: int) -> None:
        """Let the tenant's file outlive its expiry when a batch still needs it (a resumed
        batch reads its input again); it stays counted in the tenant's quota as long. Its
        object keeps the advertised `expires_at`."""
        key = self._keys.file(file_id)
        remaining = int(await self._redis.ttl(key))
        if 0 <= remaining < seconds:
            await self._redis.expire(key, seconds)
        await self.quota.keep(tenant, file_id, seconds)


def new_file_id() -> str:
    """A new file's id, in the API's form."""
    return f"file-{uuid.uuid4().hex}"


class FileWriter:
    """Writes one new file a part at a time, so a large batch output never has to be held
    whole; the file appears (readable and listed) only when `close` publishes it."""

    def __init__(
        self,
        store: FileStore,
        tenant: str,
        filename: str,
        purpose: FilePurpose,
        ttl: int,
        file_id: str,
    ) -> None:
        self._store = store
        self._tenant = tenant
        self._filename = filename
        self._purpose = purpose
        self._ttl = ttl
        self.file_id = file_id
        self._buffer = bytearray()
        self._parts = 0
        self.bytes = 0

    async def write(self, data: bytes) -> None:
        self.bytes += len(data)
        size = self._store.part_bytes
        rest = memoryview(data)
        if self._buffer:
            taken = size - len(self._buffer)
            self._buffer += rest[:taken]
            rest = rest[taken:]
            if len(self._buffer) < size:
                return
            await self._flush_buffer()
        while len(rest) >= size:  # whole parts straight from `data`, without buffering them
            await self._flush(bytes(rest[:size]))
            rest = rest[size:]
        self._buffer += rest

    async def close(self, *, ttl_seconds: int | None = None) -> FileObject:
        """Write what is buffered and publish the file; `ttl_seconds` replaces the lifetime
        given at the start (an upload whose `expires_after` came after its bytes)."""
        if self._buffer or not self._parts:
            await self._flush_buffer()
        ttl = self._ttl if ttl_seconds is None else ttl_seconds
        now = int(time.time())
        file = FileObject(
            id=self.file_id,
            bytes=self.bytes,
            created_at=now,
            filename=self._filename,
            purpose=self._purpose,
            expires_at=now + ttl,
        )
        await self._store._publish(self._tenant, file, self._parts, ttl)
        return file

    async def discard(self) -> None:
        """Remove the parts written so far of a file never published (an upload refused or
        cut short): nothing of it stays in Redis."""
        self._buffer.clear()
        await self._store._discard(self.file_id)

    async def _flush_buffer(self) -> None:
        """Write the buffer as a part, handing it over rather than copying it (a part's bytes
        are held once) and starting a new one: the connection may still hold what it was
        given when the write returns, so the old buffer is never changed again."""
        data, self._buffer = self._buffer, bytearray()
        await self._flush(data)

    async def _flush(self, data: bytes | bytearray) -> None:
        await self._store._write_part(self.file_id, self._parts, data)
        self._parts += 1
