"""The OpenAI Files API's routes for batch files: upload an input file, list a tenant's files,
read a file's object and its content, delete a file.

The routes check the request's form and parameters and answer in the API's shape; where files
live is file_store.py (which also writes batches' output files), their shapes file_models.py.
An unknown file, or another tenant's, answers 404 (the error handler in errors.py turns the
store's `NoSuchFileError` into it).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from starlette.responses import StreamingResponse

from tierq.producers.gateway.deps import GatewayState, Tenant
from tierq.producers.gateway.errors import APIError
from tierq.producers.gateway.file_models import (
    MAX_EXPIRES_AFTER_SECONDS,
    MIN_EXPIRES_AFTER_SECONDS,
    FileDeleted,
    FileList,
    FileObject,
)
from tierq.producers.gateway.file_store import FileStore
from tierq.producers.gateway.uploads import receive_upload

router = APIRouter(prefix="/v1", tags=["files"])

# The API's bounds and default for a listing's `limit`.
MAX_LIST_LIMIT = 10_000

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
_UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    429: {
        "description": "Over the tenant's storage quota (TIERQ_GATEWAY__TENANT_MAX_FILES, "
        "TIERQ_GATEWAY__TENANT_MAX_FILE_BYTES), or TIERQ_GATEWAY__MAX_CONCURRENT_UPLOADS "
        "uploads under way in this gateway"
    },
    507: {"description": "Redis is nearly full (TIERQ_REDIS_MEMORY_GUARD_FRACTION)"},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    **_UNAUTHORIZED,
    404: {"description": "No such file (another tenant's answer the same)"},
}


def _bad(message: str, param: str | None) -> APIError:
    return APIError(400, message, param=param, code="invalid_request")


@router.post(
    "/files",
    summary="Upload a batch input file",
    openapi_extra=_UPLOAD_BODY,
    responses=_UPLOAD_ERRORS,
)
async def upload_file(request: Request, gateway: GatewayState, tenant: Tenant) -> FileObject:
    """Multipart upload, as the SDK's `client.files.create(file=..., purpose="batch")` sends it.

    The form is read by hand rather than declared, so that a missing or wrong field answers 400
    as the API does (declared form fields would answer FastAPI's 422), and streamed into Redis
    as it arrives (uploads.py), so a file is never held whole. One upload more than this
    process takes at once answers 429 before anything is read.
    """
    with gateway.uploads.hold():
        return await receive_upload(request, gateway, tenant)


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
