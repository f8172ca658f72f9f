"""Jobs with far deadlines, sent through the provider's Batch API at half price: the Redis side.

A submitted job whose deadline is at least `TIERQ_SPEND__BATCH_MIN_SECONDS` away (and that
is not streamed, and names no `service_tier` of its own) waits in its queue's batch pool
instead of the queue (`push`). A worker's batcher (worker/batcher.py) takes pooled jobs into a
provider batch (`take`, one script), uploads them as JSONL, creates the batch, polls it, and
settles each job from the output file when it ends.

Nothing depends on the batcher surviving. Taken jobs are on the watch list, due when their
batch is given up (the earliest deadline less `TIERQ_SPEND__BATCH_MARGIN_SECONDS`): should
the batch be lost, or still running then, the reaper runs them on the queue in time. Each
step on a batch (submitting it, collecting it) is claimed for a short lease, so two workers
never do the same step at once, and a worker that dies mid-step only delays it. Collecting is
idempotent: each job is settled under the batch's token (`pbatch:<id>`), so a collection run
again after a crash writes and bills each answer once.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import redis

from tierq.core import scripts
from tierq.core.contract import JobEnvelope
from tierq.core.keys import Keys, as_text
from tierq.core.settings import Settings

# How long a step on a batch (forming and submitting, or collecting) is held.
STEP_LEASE_SECONDS = 120.0
STATE_FORMING, STATE_SUBMITTED, STATE_DONE = "forming", "submitted", "done"


def batch_token(batch_id: str) -> str:
    """The settle token of a provider batch's answers: one write and one bill per job."""
    return f"pbatch:{batch_id}"


@dataclass(frozen=True, slots=True)
class ProviderBatch:
    """One provider batch as Redis holds it."""

    batch_id: str
    state: str
    job_ids: list[str]
    provider_id: str | None
    give_up_at: float
    cancel_sent: bool
    formed_at: float


class ProviderBatches:
    """A deployment's batch pools and provider batches, through one blocking Redis client."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._keys = Keys(settings.key_prefix)
        self._take = scripts.register(client, "pbatch_take")
        self._claim = scripts.register(client, "pbatch_claim")

    def batched(self, envelope: JobEnvelope) -> bool:
        """Whether a submitted job goes to the provider's Batch API: its deadline is at least
        the horizon after its submission (so "24 h from now" is, however long submitting took)."""
        spend = self._settings.spend
        if envelope.provider_batch:
            return envelope.deadline is not None  # forwarded: its batch's end is its deadline
        if not spend.batch or envelope.deadline is None or envelope.request.stream:
            return False
        if "service_tier" in envelope.request.model_fields_set:
            return False  # the caller's own service level wins
        left = (envelope.deadline - envelope.submitted_at).total_seconds()
        return left >= spend.batch_min_seconds

    def push(self, envelopes: Sequence[JobEnvelope]) -> None:
        """Put submitted jobs in their queues' batch pools, by deadline."""
        pipe = self._redis.pipeline(transaction=False)
        for envelope in envelopes:
            assert envelope.deadline is not None  # batched() said so
            pool = self._keys.batch_pool(self._settings.queue_for(envelope.tier))
            pipe.zadd(pool, {envelope.job_id: envelope.deadline.timestamp()})
        pipe.execute()

    def pooled(self, tier: str) -> int:
        return int(self._redis.zcard(self._keys.batch_pool(self._settings.queue_for(tier))))

    def take(self, tier: str, most: int) -> tuple[str, list[str]] | None:
        """A new batch of up to `most` pooled jobs of `tier` (earliest deadlines first), formed
        and held by the caller; None when no queued job was pooled."""
        queue = self._settings.queue_for(tier)
        batch_id = uuid.uuid4().hex
        taken = self._take(
            keys=[
                self._keys.batch_pool(queue),
                self._keys.provider_batches(queue),
                self._keys.provider_batch(batch_id),
                self._keys.watch,
            ],
            args=[
                most,
                self._keys.job_prefix,
                batch_id,
                STEP_LEASE_SECONDS,
                self._settings.spend.batch_margin_seconds,
            ],
        )
        job_ids = [as_text(job_id) for job_id in taken]
        return (batch_id, job_ids) if job_ids else None

    def claim(self, batch_id: str, state: str) -> bool:
        """Hold `batch_id` for one step if it is in `state` and no one holds it."""
        key = self._keys.provider_batch(batch_id)
        return bool(self._claim(keys=[key], args=[state, STEP_LEASE_SECONDS]))

    def release(self, batch_id: str) -> None:
        self._redis.hset(self._keys.provider_batch(batch_id), "lease_until", "0")

    def get(self, batch_id: str) -> ProviderBatch | None:
        raw = {
            as_text(k): as_text(v)
            for k, v in self._redis.hgetall(self._keys.provider_batch(batch_id)).items()
        }
        if not raw:
            return None
        return ProviderBatch(
            batch_id=batch_id,
            state=raw.get("state", STATE_FORMING),
            job_ids=list(json.loads(raw.get("jobs", "[]"))),
            provider_id=raw.get("provider_id") or None,
            give_up_at=float(raw.get("give_up_at", "0")),
            cancel_sent=raw.get("cancel_sent") == "1",
            formed_at=float(raw.get("formed_at", "0")),
        )

    def open_batches(self, tier: str) -> list[str]:
        queue = self._settings.queue_for(tier)
        return [as_text(b) for b in self._redis.zrange(self._keys.provider_batches(queue), 0, -1)]

    def submitted(self, batch_id: str, provider_id: str) -> None:
        self._redis.hset(
            self._keys.provider_batch(batch_id),
            mapping={"state": STATE_SUBMITTED, "provider_id": provider_id, "lease_until": "0"},
        )

    def cancel_sent(self, batch_id: str) -> None:
        self._redis.hset(self._keys.provider_batch(batch_id), "cancel_sent", "1")

    def run_on_queue(self, job_ids: Sequence[str]) -> None:
        """Jobs the batch did not answer: due on the watch list now, so a reaper runs them on
        the queue (a new generation of their kept message), as for any job lost in flight."""
        if job_ids:
            self._redis.zadd(self._keys.watch, dict.fromkeys(job_ids, time.time()))

    def done(self, tier: str, batch_id: str) -> None:
        queue = self._settings.queue_for(tier)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._keys.provider_batch(batch_id), "state", STATE_DONE)
        pipe.expire(self._keys.provider_batch(batch_id), self._settings.result_ttl_seconds)
        pipe.zrem(self._keys.provider_batches(queue), batch_id)
        pipe.execute()

    def last_formed(self, tier: str) -> float:
        """When `tier`'s batcher last formed a batch (0: never), for the collection pace."""
        raw = self._redis.hget(self._keys.batch_pace, self._settings.queue_for(tier))
        return float(raw) if raw else 0.0

    def formed_now(self, tier: str) -> None:
        self._redis.hset(self._keys.batch_pace, self._settings.queue_for(tier), time.time())

    def next_submission(self, tier: str) -> float | None:
        """When `tier`'s pooled jobs are next sent (epoch seconds), or None with none pooled."""
        if not self.pooled(tier):
            return None
        return self.last_formed(tier) + self._settings.spend.batch_collect_seconds
