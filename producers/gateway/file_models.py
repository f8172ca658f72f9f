"""The shapes of the OpenAI Files API: the File object, its list page, a deletion's answer, and
the bounds on a file's `expires_after`.

They live apart from the routes (files.py) and the store (file_store.py) because both speak
them, and batches too (batch_models.py takes the expiry bounds for its output files): one
place for the wire format, with no Redis or FastAPI routing in sight.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from tierq.producers.gateway.pages import Listed, ListPage

# The API's bounds on `expires_after[seconds]`, for uploads and for batch output files: one
# hour to thirty days.
MIN_EXPIRES_AFTER_SECONDS = 3_600
MAX_EXPIRES_AFTER_SECONDS = 30 * 86_400

FilePurpose = Literal["batch", "batch_output"]


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
