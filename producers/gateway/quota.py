"""Per-tenant quota on jobs in flight (queued, running or retrying), held atomically.

A submission reserves its room before anything is enqueued, and the reservation becomes the
jobs once they are:

1. `reserve` runs one script (lua/quota_reserve.lua): it drops the tenant's lapsed
   reservations, counts its jobs in flight plus the slots its live reservations hold (a
   ZCARD and a GET, whatever the count), and refuses (`TenantQuotaExceededError`, whose count
   includes the submissions under way; the routes answer 429 with `Retry-After`) if the new
   jobs would not fit; else it records a reservation of that many slots, lapsing after
   `RESERVATION_SECONDS`. Concurrent submissions of one tenant each see the others'
   reservations, so together they never pass the quota.
2. After `submit_many` returns, `Reservation.fill` runs a second script
   (lua/quota_confirm.lua): the reservation goes, the job ids join the tenant's sorted set of
   jobs in flight (those not already final). If the submission fails, leaving the `async with`
   block gives the reservation back; if it failed part-way (`BrokerUnavailableError`), the
   jobs it names as enqueued, or maybe enqueued, are filled in, since they will run. A
   submitter that dies or is cancelled in between leaves its reservation to lapse by itself:
   its jobs may have been enqueued by the thread still publishing them, so a lapse, not a
   release, is the honest end. A submission that outlasts its reservation still has its jobs
   counted when it reports back (they are in flight); only such a one can pass the quota.
3. A job leaves the set in the script that makes it final (lua/settle.lua for succeeded and
   failed, dead letters included; lua/cancel.lua), which the job's record names the tenant
   for. A retried dead letter (lua/retry_dead.lua) joins the set again: it is queued again.
   No sweep of the set is ever needed for a job that ends.

What the scripts cannot see is a job that never ends: its record expired while it waited (a
queue no worker read for the result TTL), or it finished under a worker that did not yet pass
the tenant's key (a rolling upgrade). When a reservation would be refused, the reserve script
first looks at the `OLDEST_CHECKED` oldest jobs in the set and drops those whose record is gone
or final: a refused submission costs a bounded number of reads, never one per job in flight,
and each refusal clears that many of such leftovers.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from types import TracebackType

import redis.asyncio
import structlog
from redis.exceptions import RedisError

from tierq.core import scripts
from tierq.core.errors import BrokerUnavailableError, TenantQuotaExceededError
from tierq.core.keys import Keys

log = structlog.get_logger("tierq.gateway")

# How long a reservation holds its room if its submission never reports back (the gateway
# died): longer than a submission takes (Redis's command retries, ~10 s, and Celery's publish
# retries, ~30 s, for the largest request), short enough that a crash blocks nobody for long.
RESERVATION_SECONDS = 120.0
# The oldest jobs in flight a refusal looks at, to drop those that ended unseen or were lost.
OLDEST_CHECKED = 20


class Reservation:
    """Room for `slots` jobs of one tenant while they are submitted: an async context manager
    whose block submits them and calls `fill` with their ids. Leaving the block without
    `fill` gives the room back (see the module's docstring for a failed submission)."""

    def __init__(self, quota: TenantQuota, tenant: str, member: str, slots: int) -> None:
        self.tenant = tenant
        self.slots = slots
        self._quota = quota
        self._member = member
        self._settled = False

    async def fill(self, job_ids: Sequence[str]) -> None:
        """The reservation becomes these jobs, in flight until each is final.

        The jobs are enqueued by now: a Redis fault here must not fail the request (a caller
        told to try again would submit, and pay for, the jobs twice). It is logged; the
        reservation lapses, and until then still counts the jobs."""
        self._settled = True
        try:
            await self._quota.confirm(self.tenant, self._member, job_ids)
        except RedisError as error:
            log.warning(
                "quota.confirm_failed", tenant=self.tenant, jobs=len(job_ids), error=str(error)
            )

    async def release(self) -> None:
        """Give the room back: nothing was enqueued under it."""
        await self.fill([])

    async def __aenter__(self) -> Reservation:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._settled:
            return
        if error is None:
            await self.release()
        elif isinstance(error, BrokerUnavailableError):
            await self._settle_quietly(error.job_ids)
        elif isinstance(error, Exception):
            await self._settle_quietly([])
        # Cancelled or interrupted: the submission may still be publishing in its thread; the
        # reservation lapses after RESERVATION_SECONDS.

    async def _settle_quietly(self, job_ids: Sequence[str]) -> None:
        # The submission's own error is the one to raise; a reservation not given back lapses.
        with contextlib.suppress(RedisError):
            await self.fill(job_ids)


class TenantQuota:
    def __init__(
        self,
        client: redis.asyncio.Redis,
        keys: Keys,
        limit: int,
        ttl: int,
        *,
        reservation_seconds: float = RESERVATION_SECONDS,
    ) -> None:
        self._redis = client
        self._keys = keys
        self.limit = limit
        # The set of jobs in flight is kept this long after its last addition (the result TTL,
        # as the jobs' records are).
        self._ttl = ttl
        self._reservation_seconds = reservation_seconds
        self._reserve = scripts.register(client, "quota_reserve")
        self._confirm = scripts.register(client, "quota_confirm")

    async def reserve(self, tenant: str, jobs: int, *, partial: bool = False) -> Reservation:
        """Hold room for `jobs` more of the tenant's jobs, or raise `TenantQuotaExceededError`.

        With `partial`, take as many slots as there is room for (at least one), up to `jobs`:
        the reservation's `slots` says how many (a batch submitted as its tenant's jobs end).
        """
        if jobs < 1:
            raise ValueError(f"a reservation is for one job or more, not {jobs}")
        member_id = uuid.uuid4().hex
        taken, count = await self._reserve(
            keys=[
                self._keys.tenant_in_flight(tenant),
                self._keys.tenant_reservations(tenant),
                self._keys.tenant_reserved(tenant),
            ],
            args=[
                member_id,
                jobs,
                1 if partial else jobs,
                self.limit,
                self._reservation_seconds,
                self._keys.job_prefix,
                OLDEST_CHECKED,
            ],
        )
        if not taken:
            raise TenantQuotaExceededError(tenant, int(count), self.limit)
        return Reservation(self, tenant, f"{int(taken)}:{member_id}", int(taken))

    async def confirm(self, tenant: str, member: str, job_ids: Sequence[str]) -> None:
        """End a reservation (`member`, as the reserve script recorded it): its jobs join the
        tenant's jobs in flight (none: the room is given back)."""
        await self._confirm(
            keys=[
                self._keys.tenant_in_flight(tenant),
                self._keys.tenant_reservations(tenant),
                self._keys.tenant_reserved(tenant),
                *(self._keys.job(job_id) for job_id in job_ids),
            ],
            args=[member, self._ttl, *job_ids],
        )
