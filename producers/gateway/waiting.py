"""Requests that hold a connection open (long-polls, event streams): capped per tenant, and
let go of as soon as their client is.

Each one holds a Redis connection (a subscription or a blocking read) from the gateway's
pool, so without a cap one tenant could take them all and leave the others with errors. The
cap is per gateway process, counted in memory: it is there to protect this process's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from fastapi import Request

from tierq.producers.gateway.errors import APIError

T = TypeVar("T")


class ClientGone(Exception):
    """The client closed its connection while its request waited."""


class Waiters:
    def __init__(self, per_tenant: int) -> None:
        self.per_tenant = per_tenant
        self._held: Counter[str] = Counter()

    def take(self, tenant: str) -> None:
        """Count one more open wait for `tenant`, or answer 429 when it holds its share."""
        if self._held[tenant] >= self.per_tenant:
            raise APIError(
                429,
                f"{self._held[tenant]} requests of this tenant are already waiting here, the "
                f"most one may hold open (TIERQ_GATEWAY__MAX_WAITING_PER_TENANT); wait for "
                "some to end",
                type="rate_limit_error",
                code="too_many_waiting",
                headers={"Retry-After": "1"},
            )
        self._held[tenant] += 1

    def give_back(self, tenant: str) -> None:
        self._held[tenant] -= 1
        if self._held[tenant] <= 0:
            del self._held[tenant]

    @contextlib.contextmanager
    def slot(self, tenant: str) -> Iterator[None]:
        self.take(tenant)
        try:
            yield
        finally:
            self.give_back(tenant)


async def unless_gone(request: Request, waiting: Awaitable[T]) -> T:
    """`waiting`'s result, or `ClientGone` as soon as the client has left (the wait and the
    connection it holds are then given up).

    The client's leaving is heard, not polled: once the body is read, the server's next ASGI
    message is `http.disconnect`, sent the moment the connection drops (what Starlette's own
    streaming responses listen for). `Request.is_disconnected()` polled on a timer proved
    unreliable here: it reads with an already-cancelled scope, and a drop could go unseen
    until the job had started.
    """
    task = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(_disconnect(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientGone
    finally:
        for pending in (task, gone):
            if not pending.done():
                pending.cancel()
        # Their outcomes are dropped, but never a cancellation of this coroutine itself.
        await asyncio.gather(task, gone, return_exceptions=True)


async def _disconnect(request: Request) -> None:
    """Return when the client's connection is gone (any body left unread is dropped)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
