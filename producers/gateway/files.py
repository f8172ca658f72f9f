"""The OpenAI Files API for batch files: upload an input file, list a tenant's files, read a
file's object and its content, delete a file. Output and error files of batches are written
here too (`FileWriter`).

A file is one Redis hash (`Keys.file`): its object (the API's `FileObject` as JSON), its tenant
and its bytes in parts of at most `FILE_PART_BYTES` (`parts`, `part:0`, `part:1`, ...), expiring
with the file (`TIERQ_GATEWAY__FILE_TTL_SECONDS`, or the upload's own `expires_after`). Parts
keep a file clear of Redis's 512 MB value limit, let a batch's output be written as it is
rendered and let a download stream, a part at a time. Another tenant's file id answers 404, as
an unknown one does. Each tenant's file ids are also in a sorted set by creation time
(`Keys.tenant_files`), for listing. Deleting a file leaves its entry, so a listing's `after`
cursor still works when the client deletes what it lists (the common clean-up loop); entries
older than any file can live are dropped when a file is saved, so the set holds the files of
that span, live or not.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import redis
import redis.asyncio
import structlog
from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.responses import StreamingResponse

from tierq.core.keys import Keys, as_text
from tierq.producers.gateway.deps import Gateway, GatewayState, Tenant
from tierq.producers.gateway.errors import APIError, not_found
from tierq.producers.gateway.expiry import MAX_EXPIRES_AFTER_SECONDS, MIN_EXPIRES_AFTER_SECONDS
from tierq.producers.gateway.pages import Listed, ListPage

router = APIRouter(prefix="/v1", tags=["files"])
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
# The API's bounds and default for a listing's `limit`.
MAX_LIST_LIMIT = 10_000

FilePurpose = Literal["batch", "batch_output"]
FileId = Annotated[str, Path(description="A file id, e.g. file-8f3c...")]
ListAfter = Annotated[
    str | None, Query(description="A file id: the page starts after it, in the listing's order.")
]
# Read as text and checked by hand, so a bad one answers 400 as the API does (not 422).
ListLimit = Annotated[str | None, Query(description=f"1 to {MAX_LIST_LIMIT} (the default).")]
ListOrder = Annotated[
    str | None, Query(description="By creation time: 'desc' (newest first, the default) or 'asc'.")
]
ListPurpose = Annotated[
    str | None,
    Query(description="Only files of this purpose ('batch' and 'batch_output' are kept here)."),
]


class FileObject(Listed):
    """The API's `File` object (openai.types.FileObject)."""

    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileList(ListPage[FileObject]):
    """The API's page of files (`client.files.list()` pages through it by `after`)."""


class FileDeleted(BaseModel):
    """The API's answer to a deletion (openai.types.FileDeleted)."""

    id: str
    object: Literal["file"] = "file"
    deleted: bool


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
        self, tenant: str, *, filename: str, purpose: FilePurpose, ttl_seconds: int
    ) -> FileWriter:
        """A new file, written a part at a time; it exists (is readable, listed) once closed."""
        return FileWriter(self, tenant, filename, purpose, ttl_seconds)

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

    async def _write_part(self, file_id: str, index: int, data: bytes) -> None:
        key = self._keys.file(file_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, f"part:{index}", data)
            # A writer that dies before closing leaves parts nobody reads: they expire soon
            # (publishing gives the file its own lifetime).
            pipe.expire(key, UNPUBLISHED_TTL_SECONDS)
            await pipe.execute()

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
                raise _bad(f"No file {after!r} to list after.", "after")
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
        """Delete the tenant's file; 404 as for `get`. Its listing entry stays (see above)."""
        await self.get(tenant, file_id)
        if not await self._redis.delete(self._keys.file(file_id)):
            # Expired, or deleted by another request, since it was read.
            raise not_found("file", file_id)
        return FileDeleted(id=file_id, deleted=True)

    async def get(self, tenant: str, file_id: str) -> FileObject:
        """The file's object; 404 for an unknown or expired id and for another tenant's."""
        file: FileObject = (await self._read(tenant, file_id, "object", "tenant"))[0]
        return file

    async def content(self, tenant: str, file_id: str) -> tuple[FileObject, bytes]:
        """The file's object and all its bytes; 404 as for `get`, and for a file deleted or
        expired while it was read (never a truncated file)."""
        file, parts = await self.stream(tenant, file_id)
        data = b"".join([part async for part in parts])
        if len(data) != file.bytes:
            raise not_found("file", file_id)
        return file, data

    async def stream(self, tenant: str, file_id: str) -> tuple[FileObject, AsyncIterator[bytes]]:
        """The file's object (404 as for `get`), and its bytes a part at a time.

        The first part is read here, so a fault (Redis away: 503) or a missing file answers
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
            raise not_found("file", file_id)
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
            raise not_found("file", file_id)
        return (FileObject.model_validate_json(raw), owner, *rest)

    async def keep_at_least(self, file_id: str, seconds: int) -> None:
        """Let a file outlive its expiry when a batch still needs it (a resumed batch reads
        its input again). Its object keeps the advertised `expires_at`."""
        key = self._keys.file(file_id)
        remaining = int(await self._redis.ttl(key))
        if 0 <= remaining < seconds:
            await self._redis.expire(key, seconds)


class FileWriter:
    """Writes one new file a part at a time, so a large batch output never has to be held
    whole; the file appears (readable and listed) only when `close` publishes it."""

    def __init__(
        self, store: FileStore, tenant: str, filename: str, purpose: FilePurpose, ttl: int
    ) -> None:
        self._store = store
        self._tenant = tenant
        self._filename = filename
        self._purpose = purpose
        self._ttl = ttl
        self.file_id = f"file-{uuid.uuid4().hex}"
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
            await self._flush(bytes(self._buffer))
            self._buffer.clear()
        while len(rest) >= size:  # whole parts straight from `data`, without buffering them
            await self._flush(bytes(rest[:size]))
            rest = rest[size:]
        self._buffer += rest

    async def close(self) -> FileObject:
        if self._buffer or not self._parts:
            await self._flush(bytes(self._buffer))
            self._buffer.clear()
        now = int(time.time())
        file = FileObject(
            id=self.file_id,
            bytes=self.bytes,
            created_at=now,
            filename=self._filename,
            purpose=self._purpose,
            expires_at=now + self._ttl,
        )
        await self._store._publish(self._tenant, file, self._parts, self._ttl)
        return file

    async def _flush(self, data: bytes) -> None:
        await self._store._write_part(self.file_id, self._parts, data)
        self._parts += 1


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "purpose"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "purpose": {"type": "string", "enum": ["batch"]},
                        "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
                        "expires_after[seconds]": {
                            "type": "integer",
                            "minimum": MIN_EXPIRES_AFTER_SECONDS,
                            "maximum": MAX_EXPIRES_AFTER_SECONDS,
                        },
                    },
                }
            }
        },
    }
}
_UNAUTHORIZED: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing or unknown API key"}
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    **_UNAUTHORIZED,
    400: {"description": "Invalid parameters (the API's error shape)"},
    413: {
        "description": "File over TIERQ_GATEWAY__MAX_FILE_BYTES, or with more requests than "
        "TIERQ_GATEWAY__MAX_BATCH_LINES"
    },
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **_UNAUTHORIZED,
    404: {"description": "No such file (another tenant's answer the same)"},
}


def _bad(message: str, param: str | None) -> APIError:
    return APIError(400, message, param=param, code="invalid_request")


def _ttl(form: Any, default: int) -> int:
    """The upload's `expires_after` (the SDK sends `expires_after[anchor]` and `[seconds]`)."""
    anchor = form.get("expires_after[anchor]")
    seconds = form.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return default
    if anchor != "created_at":
        raise _bad("expires_after.anchor must be 'created_at'.", "expires_after.anchor")
    if not isinstance(seconds, str) or not re.fullmatch(r"[0-9]{1,9}", seconds):
        raise _bad("expires_after.seconds must be an integer.", "expires_after.seconds")
    value = int(seconds)
    if not MIN_EXPIRES_AFTER_SECONDS <= value <= MAX_EXPIRES_AFTER_SECONDS:
        raise _bad(
            f"expires_after.seconds must be between {MIN_EXPIRES_AFTER_SECONDS} and "
            f"{MAX_EXPIRES_AFTER_SECONDS}.",
            "expires_after.seconds",
        )
    return value


@router.post(
    "/files", summary="Upload a batch input file", openapi_extra=_UPLOAD_BODY, responses=_ERRORS
)
async def upload_file(request: Request, gateway: GatewayState, tenant: Tenant) -> FileObject:
    """Multipart upload, as the SDK's `client.files.create(file=..., purpose="batch")` sends it.

    The form is read by hand rather than declared, so that a missing or wrong field answers 400
    as the API does (declared form fields would answer FastAPI's 422).
    """
    async with request.form() as form:
        upload = form.get("file")
        purpose = form.get("purpose")
        if not isinstance(upload, UploadFile):
            raise _bad("Missing required parameter: 'file'.", "file")
        if purpose is None:
            raise _bad("Missing required parameter: 'purpose'.", "purpose")
        if purpose != "batch":
            raise _bad(
                f"Invalid purpose {purpose!r}: this gateway keeps files for batches only "
                "(purpose 'batch').",
                "purpose",
            )
        ttl = _ttl(form, gateway.settings.gateway.file_ttl_seconds)
        content = await upload.read()
        filename = upload.filename or "upload.jsonl"
    if not content:
        raise _bad("The file is empty.", "file")
    limit = gateway.settings.gateway.max_batch_lines
    # Lines of any kind, blank ones included: a file of blank lines would otherwise cost a
    # parse of its whole size for nothing.
    lines = content.count(b"\n") + (0 if content.endswith(b"\n") else 1)
    if lines > limit:
        # Refused at the door, rather than by a batch that fails later: the file could never run.
        raise APIError(
            413,
            f"The file has {lines} lines, more than the {limit} requests a batch may hold "
            "(TIERQ_GATEWAY__MAX_BATCH_LINES; blank lines count).",
            param="file",
            code="too_many_requests_in_file",
        )
    return await FileStore.of(gateway).save(
        tenant, content, filename=filename, purpose="batch", ttl_seconds=ttl
    )


@router.get("/files", summary="List the caller's files", responses=_ERRORS)
async def list_files(
    gateway: GatewayState,
    tenant: Tenant,
    after: ListAfter = None,
    limit: ListLimit = None,
    order: ListOrder = None,
    purpose: ListPurpose = None,
) -> FileList:
    """Newest first by default, as the API lists them; the SDK's `client.files.list()` pages
    through them with `after`."""
    count = MAX_LIST_LIMIT
    if limit is not None:
        if not re.fullmatch(r"[0-9]{1,5}", limit.strip()) or not 1 <= int(limit) <= MAX_LIST_LIMIT:
            raise _bad(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}.", "limit")
        count = int(limit)
    if order not in (None, "asc", "desc"):
        raise _bad("order must be 'asc' or 'desc'.", "order")
    # Any purpose is a filter, as in the API; one this gateway keeps no files of lists none.
    return await FileStore.of(gateway).page(
        tenant, after=after, limit=count, newest_first=order != "asc", purpose=purpose
    )


@router.get("/files/{file_id}", summary="Read a file's object", responses=_NOT_FOUND)
async def retrieve_file(file_id: FileId, gateway: GatewayState, tenant: Tenant) -> FileObject:
    return await FileStore.of(gateway).get(tenant, file_id)


@router.get(
    "/files/{file_id}/content",
    summary="Download a file's content",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}, **_NOT_FOUND},
)
async def file_content(file_id: FileId, gateway: GatewayState, tenant: Tenant) -> Response:
    """Streamed a part at a time: a large output file is never held whole in the gateway."""
    file, parts = await FileStore.of(gateway).stream(tenant, file_id)
    # The name came from the uploader: only safe characters reach the header.
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", file.filename)
    return StreamingResponse(
        parts,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(file.bytes),
        },
    )


@router.delete("/files/{file_id}", summary="Delete a file", responses=_NOT_FOUND)
async def delete_file(file_id: FileId, gateway: GatewayState, tenant: Tenant) -> FileDeleted:
    """A batch already running keeps its requests (the finalizer stores them once validated);
    one still validating its deleted input fails, saying the file no longer exists."""
    return await FileStore.of(gateway).delete(tenant, file_id)
