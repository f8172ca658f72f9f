"""Jobs with far deadlines, sent through the provider's Batch API at half price: the Redis side.

A submitted job whose deadline is at least `TIERQ_SPEND__BATCH_MIN_SECONDS` away (and that
is not streamed, and names no `service_tier` of its own) waits in its queue's batch pool
instead of the queue (`push`). A worker's batcher (worker/batcher.py) takes pooled jobs into a
provider batch (`take`, one script), uploads them as JSONL, creates the batch, polls it, and
settles each job from the output file when it ends.

Nothing depends on a batcher surviving, or running at all. A pooled job is on the watch list
from the moment it enters the pool, due when it would be given up (its deadline less
`TIERQ_SPEND__BATCH_MARGIN_SECONDS`); a taken one, when its batch is given up (the batch's
earliest deadline less the margin). Should the batch never be sent, be lost, or still be
running then, the reaper runs the job on the queue in time, and its record is kept until then
(and for the results' TTL after). Each step on a batch (submitting it, polling or collecting
it) is claimed under a token for a lease longer than the step's calls, so two workers never do
the same step at once, and a worker that dies mid-step only delays it. Collecting is
idempotent: each job is settled under the batch's token (`pbatch:<id>`), so a collection run
again after a crash writes and bills each answer once. The one case paid twice: an answer the
provider still gives after its job was given up and run on the queue (the batcher cancels a
batch well before that, so this needs the provider to ignore the cancel); both answers are in
the ledger, as the provider bills both.
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

# How long a step on a batch is held: forming and submitting (a listing, an upload and a
# create, each up to the batcher's call timeout), and polling or collecting.
SUBMIT_LEASE_SECONDS = 1_800.0
POLL_LEASE_SECONDS = 300.0
STATE_FORMING, STATE_SUBMITTED, STATE_DONE = "forming", "submitted", "done"


def batch_token(batch_id: str) -> str:
    """The settle token of a provider batch's answers (the owner pbatch_take.lua gives its
    jobs): one write and one bill per job."""
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
        self._release = scripts.register(client, "pbatch_release")

    def batched(self, envelope: JobEnvelope) -> bool:
        """Whether a submitted job goes to the provider's Batch API: its deadline is at least
        the horizon after its submission (so "24 h from now" is, however long submitting took)."""
        spend = self._settings.spend
        if envelope.deadline is None or envelope.request.stream:
            return False
        left = (envelope.deadline - envelope.submitted_at).total_seconds()
        if envelope.provider_batch:
            # Forwarded: sent whatever the distance, if the batch has time to run before it
            # would be given up; else it runs on the queue.
            return left >= 2 * spend.batch_margin_seconds
        if not spend.batch or "service_tier" in envelope.request.model_fields_set:
            return False  # the caller's own service level wins
        return left >= spend.batch_min_seconds

    def push(self, envelopes: Sequence[JobEnvelope]) -> None:
        """Put submitted (recorded) jobs in their queues' batch pools, by deadline, each on the
        watch list due when it would be given up, its record kept until then: in one
        transaction, so a pooled job is never unwatched."""
        now = time.time()
        margin = self._settings.spend.batch_margin_seconds
        ttl = self._settings.result_ttl_seconds
        pipe = self._redis.pipeline(transaction=True)
        for envelope in envelopes:
            assert envelope.deadline is not None  # batched() said so
            deadline = envelope.deadline.timestamp()
            pool = self._keys.batch_pool(self._settings.queue_for(envelope.tier))
            pipe.zadd(pool, {envelope.job_id: deadline})
            pipe.zadd(self._keys.watch, {envelope.job_id: deadline - margin})
            pipe.expire(self._keys.job(envelope.job_id), max(1, int(deadline - margin - now + ttl)))
        pipe.execute()

    def pooled(self, tier: str) -> int:
        return int(self._redis.zcard(self._keys.batch_pool(self._settings.queue_for(tier))))

    def take(self, tier: str, most: int, token: str) -> tuple[str, list[str]] | None:
        """A new batch of up to `most` pooled jobs of `tier` (earliest deadlines first), formed
        and held by the caller (`token`); None when no queued job was pooled."""
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
                SUBMIT_LEASE_SECONDS,
                self._settings.spend.batch_margin_seconds,
                self._settings.result_ttl_seconds,
                token,
            ],
        )
        job_ids = [as_text(job_id) for job_id in taken]
        return (batch_id, job_ids) if job_ids else None

    def claim(self, batch_id: str, state: str, seconds: float, token: str) -> bool:
        """Hold `batch_id` under `token` for one step if it is in `state` and no one holds it."""
        key = self._keys.provider_batch(batch_id)
        return bool(self._claim(keys=[key], args=[state, seconds, token]))

    def release(self, batch_id: str, token: str) -> None:
        """Let go of a claim early, if `token` still holds it."""
        self._release(keys=[self._keys.provider_batch(batch_id)], args=[token])

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
        """Jobs the batch did not answer: those still queued are due on the watch list now, so
        a reaper runs them on the queue (a new generation of their kept message), as for any
        job lost in flight."""
        if not job_ids:
            return
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self._keys.job(job_id), "status")
        statuses = pipe.execute()
        due = {
            job_id: time.time()
            for job_id, status in zip(job_ids, statuses, strict=True)
            if status is not None and as_text(status) == "queued"
        }
        if due:
            self._redis.zadd(self._keys.watch, due)

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
