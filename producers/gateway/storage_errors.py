"""What the gateway's storage (file_store.py, batch_store.py) raises when it cannot serve a
request: plain domain errors, with no HTTP in them.

The routes' error handler (errors.py) answers each in the API's shape, and the background
finalizer catches them by meaning ("the input file is gone"), never by a status code.
"""

from __future__ import annotations

from tierq.core.errors import TierqError


class StorageError(TierqError):
    """Raised by the gateway's storage for a request it cannot serve as asked."""


class NoSuchObjectError(StorageError, LookupError):
    """Raised when an id names nothing the tenant may read: unknown, expired, deleted, or
    another tenant's (the four look the same, so ids cannot be probed)."""

    # What the id names, as the API spells it in its error ("file", "batch").
    kind = "object"

    def __init__(self, ident: str) -> None:
        super().__init__(f"no {self.kind} {ident!r}")
        self.ident = ident

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ident!r}>"


class NoSuchFileError(NoSuchObjectError):
    """Raised when a file id names no file of the tenant's (or its bytes vanished while read)."""

    kind = "file"


class NoSuchBatchError(NoSuchObjectError):
    """Raised when a batch id names no batch of the tenant's."""

    kind = "batch"


class UnknownCursorError(StorageError, ValueError):
    """Raised when a listing's `after` cursor names nothing in the tenant's listing."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"no {kind} {ident!r} to list after")
        self.kind = kind
        self.ident = ident

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.ident!r}>"
