"""A cap on the uploads one gateway process receives at once.

An upload holds a connection, a part of its file in memory and a Redis connection for as long
as its client takes to send it; a few slow clients could otherwise tie up a process. One upload
more than `TIERQ_GATEWAY__MAX_CONCURRENT_UPLOADS` is answered 429 at once, with `Retry-After`,
and never queued: a queue would hold the very connections the cap is there to spare. The count
is per process (one event loop, so no lock): the fleet's figure scales with its gateways.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from tierq.producers.gateway.errors import APIError

# What a refused upload is told to wait before it tries again.
RETRY_AFTER_SECONDS = 1


class UploadSlots:
    """Uploads under way in this process, at most `limit`."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.taken = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        """A slot for the length of one upload; `APIError` 429 at once when none is free."""
        if self.taken >= self.limit:
            raise APIError(
                429,
                f"This gateway is receiving {self.limit} uploads already "
                "(TIERQ_GATEWAY__MAX_CONCURRENT_UPLOADS); try again shortly.",
                type="rate_limit_error",
                param="file",
                code="too_many_concurrent_uploads",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        self.taken += 1
        try:
            yield
        finally:
            self.taken -= 1
