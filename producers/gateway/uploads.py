"""One upload to `POST /v1/files`, streamed from the request into Redis as it arrives.

The multipart body is parsed chunk by chunk (form_stream.py) and the file field's bytes go
straight into a `FileWriter`, a part (8 MiB) at a time: the gateway never holds more than a
part and a chunk of a file, whatever its size. Along the way:

- the file is counted in its tenant's storage quota before any of the body is read, and its
  bytes as they arrive (storage_quota.py): 429 as soon as either limit would be passed;
- the memory guard is asked before the upload starts and before each chunk is stored (its
  reading is cached, so this costs nothing): a long upload stops when Redis fills (507);
- newlines are counted as they stream; a file with more lines than a batch may hold stops
  being stored at once, and the rest of the body is only counted, so the 413 can say how many
  lines the file has.

The OpenAI SDK sends `purpose` and `expires_after` before the file, so they are checked when
the file begins and a bad one refuses the upload before anything is stored; when they come
after it, they are checked at the end. Every refusal, and a client that goes away, removes the
parts already written and gives the quota back: a file becomes visible (listed, readable) only
when the whole upload succeeded and `FileWriter.close` published it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import anyio
from fastapi import Request

from tierq.producers.gateway.deps import Gateway
from tierq.producers.gateway.errors import APIError
from tierq.producers.gateway.file_models import (
    MAX_EXPIRES_AFTER_SECONDS,
    MIN_EXPIRES_AFTER_SECONDS,
    FileObject,
)
from tierq.producers.gateway.file_store import (
    UNPUBLISHED_TTL_SECONDS,
    FileStore,
    FileWriter,
    new_file_id,
)
from tierq.producers.gateway.form_stream import (
    Field,
    FileData,
    FileEnd,
    FileStart,
    FormError,
    FormEvent,
    FormStream,
    is_multipart,
)
from tierq.producers.gateway.storage_quota import StorageLimits, UploadAllowance

DEFAULT_FILENAME = "upload.jsonl"


def _bad(message: str, param: str | None) -> APIError:
    return APIError(400, message, param=param, code="invalid_request")


def _missing_file() -> APIError:
    return _bad("Missing required parameter: 'file'.", "file")


def check_purpose(fields: Mapping[str, str]) -> None:
    purpose = fields.get("purpose")
    if purpose is None:
        raise _bad("Missing required parameter: 'purpose'.", "purpose")
    if purpose != "batch":
        raise _bad(
            f"Invalid purpose {purpose!r}: this gateway keeps files for batches only "
            "(purpose 'batch').",
            "purpose",
        )


def ttl_of(fields: Mapping[str, str], default: int) -> int:
    """The upload's `expires_after` (the SDK sends `expires_after[anchor]` and `[seconds]`)."""
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
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


async def receive_upload(request: Request, gateway: Gateway, tenant: str) -> FileObject:
    """Store the request's file for `tenant` and answer its object; `APIError` (400, 413, 429),
    `StorageQuotaExceededError` or `StoreFullError` otherwise, with nothing left behind."""
    content_type = request.headers.get("content-type")
    if not is_multipart(content_type):
        raise _missing_file()
    try:
        form = FormStream(content_type or "")
    except FormError as error:
        raise _bad(str(error), None) from None
    await gateway.memory_guard.check()
    upload = Upload(gateway, tenant)
    try:
        await upload.allowance.open()
        async for chunk in request.stream():
            for event in form.feed(chunk):
                await upload.take(event)
        for event in form.finish():
            await upload.take(event)
        return await upload.publish()
    except FormError as error:
        await upload.abandon()
        raise _bad(str(error), None) from None
    except BaseException:
        await upload.abandon()
        raise


class Upload:
    """What one upload has received so far, and where its bytes go."""

    def __init__(self, gateway: Gateway, tenant: str) -> None:
        settings = gateway.settings.gateway
        self._gateway = gateway
        self._tenant = tenant
        self._store = FileStore.of(gateway)
        self._default_ttl = settings.file_ttl_seconds
        self._max_lines = settings.max_batch_lines
        self.allowance = UploadAllowance(
            self._store.quota,
            tenant,
            new_file_id(),
            limits=StorageLimits(settings.tenant_max_files, settings.tenant_max_file_bytes),
            step_bytes=self._store.part_bytes,
            holding_seconds=UNPUBLISHED_TTL_SECONDS,
        )
        self.fields: dict[str, str] = {}
        self._writer: FileWriter | None = None
        self._file_seen = False
        self._in_file = False
        self._storing = True
        self.bytes = 0
        self._newlines = 0
        self._last = b""

    async def take(self, event: FormEvent) -> None:
        match event:
            case Field(name=name, value=value):
                self.fields[name] = value
            case FileStart(name="file", filename=filename):
                if self._file_seen:
                    raise _bad("Only one file may be uploaded at a time.", "file")
                self._file_seen = self._in_file = True
                if "purpose" in self.fields:  # the SDK's order: refuse before storing anything
                    check_purpose(self.fields)
                    ttl_of(self.fields, self._default_ttl)
                self._writer = self._store.writer(
                    self._tenant,
                    filename=filename or DEFAULT_FILENAME,
                    purpose="batch",
                    ttl_seconds=self._default_ttl,
                    file_id=self.allowance.file_id,
                )
            case FileData(data=data) if self._in_file:
                await self._receive(data)
            case FileEnd():
                self._in_file = False
            case _:
                pass  # another file field than `file`: ignored, as the API ignores it

    async def _receive(self, data: bytes) -> None:
        if not data:
            return
        self.bytes += len(data)
        self._newlines += data.count(b"\n")
        self._last = data[-1:]
        if self._newlines > self._max_lines and self._storing:
            # Refused whatever follows: stop storing now, and only count the rest.
            await self.abandon()
        if not self._storing:
            return
        assert self._writer is not None
        await self._gateway.memory_guard.check()
        await self.allowance.grow(len(data))
        await self._writer.write(data)

    async def publish(self) -> FileObject:
        if not self._file_seen or self._writer is None:
            raise _missing_file()
        check_purpose(self.fields)
        ttl = ttl_of(self.fields, self._default_ttl)
        if not self.bytes:
            raise _bad("The file is empty.", "file")
        # Lines of any kind, blank ones included: a file of blank lines would otherwise cost a
        # parse of its whole size for nothing.
        lines = self._newlines + (0 if self._last == b"\n" else 1)
        if lines > self._max_lines:
            # Refused at the door, rather than by a batch that fails later: it could never run.
            raise APIError(
                413,
                f"The file has {lines} lines, more than the {self._max_lines} requests a batch "
                "may hold (TIERQ_GATEWAY__MAX_BATCH_LINES; blank lines count).",
                param="file",
                code="too_many_requests_in_file",
            )
        await self.allowance.settle(ttl)
        return await self._writer.close(ttl_seconds=ttl)

    async def abandon(self) -> None:
        """Remove what was written and give the quota back; also when the request is being
        cancelled (shielded, so the clean-up itself is not cut short)."""
        self._storing = False
        with anyio.CancelScope(shield=True):
            if self._writer is not None:
                await self._writer.discard()
            await self.allowance.release()
