"""The OpenAI Files API, as far as batches need it: upload an input file, read a file's object
and its content. Output and error files of batches are written here too (`FileStore.save`).

A file is one Redis hash (`Keys.file`): its object (the API's `FileObject` as JSON), its tenant
and its bytes, expiring with the file (`TIERQ_GATEWAY__FILE_TTL_SECONDS`, or the upload's own
`expires_after`). Another tenant's file id answers 404, as an unknown one does.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Annotated, Any, Literal

import redis.asyncio
from fastapi import APIRouter, Path, Request, Response
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from producers.gateway.deps import Gateway, GatewayState, Tenant
from producers.gateway.errors import APIError, not_found
from worker.keys import Keys, as_text

router = APIRouter(prefix="/v1", tags=["files"])

# The API's bounds on an upload's `expires_after[seconds]`: one hour to thirty days.
MIN_EXPIRES_AFTER_SECONDS = 3_600
MAX_EXPIRES_AFTER_SECONDS = 30 * 86_400

FilePurpose = Literal["batch", "batch_output"]
FileId = Annotated[str, Path(description="A file id, e.g. file-8f3c...")]


class FileObject(BaseModel):
    """The API's `File` object (openai.types.FileObject)."""

    id: str
    object: Literal["file"] = "file"
    bytes: int
    created_at: int
    filename: str
    purpose: FilePurpose
    status: Literal["uploaded", "processed", "error"] = "processed"
    expires_at: int | None = None
    status_details: str | None = None


class FileStore:
    """Files in Redis, each readable by its own tenant only."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self._redis = client
        self._keys = keys

    @classmethod
    def of(cls, gateway: Gateway) -> FileStore:
        return cls(gateway.client.redis, gateway.keys)

    async def save(
        self, tenant: str, content: bytes, *, filename: str, purpose: FilePurpose, ttl_seconds: int
    ) -> FileObject:
        now = int(time.time())
        file = FileObject(
            id=f"file-{uuid.uuid4().hex}",
            bytes=len(content),
            created_at=now,
            filename=filename,
            purpose=purpose,
            expires_at=now + ttl_seconds,
        )
        key = self._keys.file(file.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(
                key,
                mapping={"object": file.model_dump_json(), "tenant": tenant, "content": content},
            )
            pipe.expire(key, ttl_seconds)
            await pipe.execute()
        return file

    async def get(self, tenant: str, file_id: str) -> FileObject:
        """The file's object; 404 for an unknown or expired id and for another tenant's."""
        return (await self._read(tenant, file_id, "object", "tenant"))[0]

    async def content(self, tenant: str, file_id: str) -> tuple[FileObject, bytes]:
        """The file's object and bytes, in one read; 404 as for `get`."""
        file, _, data = await self._read(tenant, file_id, "object", "tenant", "content")
        return file, bytes(data or b"")

    async def _read(self, tenant: str, file_id: str, *fields: str) -> tuple[FileObject, Any, Any]:
        raw, owner, *rest = await self._redis.hmget(self._keys.file(file_id), list(fields))
        if raw is None or owner is None or as_text(owner) != tenant:
            raise not_found("file", file_id)
        return FileObject.model_validate_json(raw), owner, rest[0] if rest else None

    async def keep_at_least(self, file_id: str, seconds: int) -> None:
        """Let a file outlive its expiry when a batch still needs it (a resumed batch reads
        its input again). Its object keeps the advertised `expires_at`."""
        key = self._keys.file(file_id)
        remaining = int(await self._redis.ttl(key))
        if 0 <= remaining < seconds:
            await self._redis.expire(key, seconds)


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
    file, content = await FileStore.of(gateway).content(tenant, file_id)
    # The name came from the uploader: only safe characters reach the header.
    filename = re.sub(r"[^A-Za-z0-9._-]", "_", file.filename)
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
