"""Fair dispatch: a tier's jobs wait in per-priority, per-tenant backlogs, and its workers move
them to the Celery queue by weighted fair share in tokens.

Celery stays the engine: its queue still carries every job to a worker, and retries,
deferrals, re-queues and dead-letter retries still go straight onto it. What changes, on a
tier with `fair_dispatch`, is how a *submitted* job reaches it. The producer puts the job in
its backlog (`push`: one script, backlog_push.lua); a dispatcher thread in each of the tier's
workers (worker/dispatcher.py) keeps the queue about `queue_target_per_slot` jobs per
worker slot deep, moving jobs out of the backlogs and onto it (`dispatch`:
backlog_dispatch.lua) in the order the scheduling rule gives. The queue stays short, so what
waits, waits where it can still be reordered.

The rule is start-time fair queueing, at two levels: a class's virtual time grows by a taken
job's tokens (prompt estimate plus reserved output, as the limiter counts them) over the
class's weight, and so does a tenant's within its class; the next job is the oldest of the
tenant with the earliest time, in the class with the earliest time. So over any busy stretch,
classes and tenants get the tier's tokens in proportion to their weights; one with nothing
waiting gets nothing and leaves its share to the others (work-conserving), and joins again at
the current time, with no credit banked while idle. No class is starved: `bulk`'s weight is
small, not zero, so a bulk job waits at most its backlog's tokens ahead of it over bulk's
share of the tier's rate.

Nothing is lost or run twice when a dispatcher dies: the producer renders each job's queue
message as kombu would publish it (tierq/core/queue_entry.py), and the script that chooses a
job pushes that message onto the queue in the same atomic step. A job is in a backlog or on
the queue, never between; and the worker, whose one core runs the jobs, publishes nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

import redis

from tierq.core import scripts
from tierq.core.budget import job_cost
from tierq.core.contract import JobEnvelope
from tierq.core.keys import Keys, as_text
from tierq.core.priority import PRIORITIES
from tierq.core.settings import Settings

# Jobs per backlog_push call, and the script's arguments per job.
PUSH_CHUNK = 500
FIELDS_PER_JOB = 6

# The tenant of jobs submitted without one (the Python client's).
NO_TENANT = "-"


def tenant_of(envelope: JobEnvelope) -> str:
    return envelope.tenant or NO_TENANT


class Backlogs:
    """A deployment's backlogs, through one blocking Redis client."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._keys = Keys(settings.key_prefix)
        self._push = scripts.register(client, "backlog_push")
        self._dispatch = scripts.register(client, "backlog_dispatch")
        shares = settings.fair_share
        self._class_weights = json.dumps(shares.priority_weights)
        self._tenant_weights = json.dumps(shares.tenant_weights)

    def fair(self, tier: str) -> bool:
        """Whether `tier`'s submitted jobs go through backlogs."""
        return self._settings.tiers[tier].fair_dispatch

    def push(self, envelopes: Sequence[JobEnvelope], entries: Sequence[str]) -> None:
        """Put submitted jobs (all of one tier or several) in their backlogs, each with its
        queue message (`entries`, one per job, from tierq/core/queue_entry.py)."""
        by_tier: dict[str, list[Any]] = {}
        order = time.time()
        for n, (envelope, entry) in enumerate(zip(envelopes, entries, strict=True)):
            cost = job_cost(envelope.request, self._settings, envelope.estimated_prompt_tokens)
            by_tier.setdefault(envelope.tier, []).extend(
                [
                    envelope.job_id,
                    envelope.priority,
                    tenant_of(envelope),
                    cost.total,
                    order + n * 1e-6,
                    entry,
                ]
            )
        for tier, jobs in by_tier.items():
            queue = self._settings.queue_for(tier)
            # A chunk per script call, so one big submission never holds Redis for long.
            for start in range(0, len(jobs), PUSH_CHUNK * FIELDS_PER_JOB):
                self._push_chunk(queue, jobs[start : start + PUSH_CHUNK * FIELDS_PER_JOB])

    def _push_chunk(self, queue: str, jobs: list[Any]) -> None:
        self._push(
            keys=[
                self._keys.dispatch_clock(queue),
                self._keys.backlog_costs(queue),
                self._keys.backlog_entries(queue),
            ],
            args=[
                self._keys.backlog_prefix(queue),
                self._keys.backlog_tenants_prefix(queue),
                *jobs,
            ],
        )

    def dispatch(self, tier: str, depth: int, most: int) -> list[str]:
        """Move `tier`'s jobs in fair order onto its queue until the queue holds `depth`
        messages or `most` jobs have moved; the ids moved, each watched until it should long
        have been claimed (`claim_within`)."""
        queue = self._settings.queue_for(tier)
        moved = self._dispatch(
            keys=[
                self._keys.dispatch_clock(queue),
                self._keys.backlog_costs(queue),
                self._keys.backlog_entries(queue),
                queue,
                self._keys.watch,
            ],
            args=[
                self._keys.backlog_prefix(queue),
                self._keys.backlog_tenants_prefix(queue),
                self._keys.job_prefix,
                most,
                depth,
                self._class_weights,
                self._tenant_weights,
                ",".join(PRIORITIES),
                self.claim_within(tier),
            ],
        )
        return [as_text(job_id) for job_id in moved]

    def claim_within(self, tier: str) -> float:
        """How long a job moved onto `tier`'s queue may wait there before the reaper puts it
        there again: two leases, plus the queue's depth of calls (about `queue_target_per_slot`
        calls per slot) at the tier's call timeout."""
        settings = self._settings
        per_slot = settings.fair_share.queue_target_per_slot
        return 2 * settings.lease_seconds + per_slot * settings.call_timeout_for(tier)

    def waiting(self, tier: str) -> dict[str, dict[str, int]]:
        """Jobs waiting in `tier`'s backlogs: priority -> tenant -> count (for `tierq stats`
        and metrics); one pipelined read per priority."""
        found: dict[str, dict[str, int]] = {}
        queue = self._settings.queue_for(tier)
        for priority in PRIORITIES:
            tenants = [
                as_text(t)
                for t in self._redis.zrange(self._keys.backlog_tenants(queue, priority), 0, -1)
            ]
            if not tenants:
                continue
            pipe = self._redis.pipeline(transaction=False)
            for tenant in tenants:
                pipe.zcard(self._keys.backlog(queue, priority, tenant))
            found[priority] = {
                tenant: int(count)
                for tenant, count in zip(tenants, pipe.execute(), strict=True)
                if count
            }
        return found

    def oldest(self, tier: str) -> float | None:
        """When the oldest job waiting in `tier`'s backlogs was submitted (epoch seconds), or
        None with nothing waiting: the wait a queue's own oldest message does not show."""
        queue = self._settings.queue_for(tier)
        pipe = self._redis.pipeline(transaction=False)
        for priority in PRIORITIES:
            pipe.zrange(self._keys.backlog_tenants(queue, priority), 0, -1)
        heads = self._redis.pipeline(transaction=False)
        for priority, tenants in zip(PRIORITIES, pipe.execute(), strict=True):
            for tenant in tenants:
                heads.zrange(
                    self._keys.backlog(queue, priority, as_text(tenant)), 0, 0, withscores=True
                )
        firsts = [float(head[0][1]) for head in heads.execute() if head]
        return min(firsts, default=None)
