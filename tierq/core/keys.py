"""Every Redis key and channel tierq writes (besides Celery's own queues), named in one place.

All start with the configured prefix (`TIERQ_KEY_PREFIX`, "tierq:"), so several deployments
can share one Redis and an operator can find everything of tierq's with one pattern.
"""

from __future__ import annotations

from dataclasses import dataclass

# The one field of an entry of a job's delta stream (`Keys.deltas`); its value is the delta's
# JSON. Written by workers (tierq.worker.deltas), read by the gateway's event stream.
DELTA_FIELD = "delta"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str

    def job(self, job_id: str) -> str:
        """Hash: status, record (JobResult JSON), message (the queue message), owner, lease."""
        return f"{self.prefix}job:{job_id}"

    def done_channel(self, job_id: str) -> str:
        """Pub/sub channel on which a job's end is announced to waiters."""
        return f"{self.prefix}done:{job_id}"

    @property
    def watch(self) -> str:
        """Sorted set: job id -> when it must have moved on (lease end, retry due) or be
        re-queued by a worker's reaper."""
        return f"{self.prefix}watch"

    @property
    def dead(self) -> str:
        """Sorted set: job id -> when it failed after exhausting its attempts (dead letters)."""
        return f"{self.prefix}dead"

    def idempotency(self, key: str) -> str:
        """String: the job id and request fingerprint a caller's idempotency key maps to."""
        return f"{self.prefix}idem:{key}"

    def ratelimit(self, group: str) -> str:
        """Hash: a rate-limit group's GCRA state, pause and learned limits."""
        return f"{self.prefix}ratelimit:{group}"

    def deltas(self, job_id: str) -> str:
        """Stream: a streamed job's content deltas as its worker receives them (for SSE)."""
        return f"{self.prefix}deltas:{job_id}"

    def api_key(self, key_hash: str) -> str:
        """String: a gateway API key's record (JSON), found by the SHA-256 of the key."""
        return f"{self.prefix}apikey:{key_hash}"

    @property
    def api_keys(self) -> str:
        """Hash: key id -> SHA-256 of the key, to list and revoke keys by id."""
        return f"{self.prefix}apikeys"

    def tenant_in_flight(self, tenant: str) -> str:
        """Sorted set: a tenant's jobs not yet seen finished -> submission time (its quota)."""
        return f"{self.prefix}tenant:{tenant}:inflight"

    def file(self, file_id: str) -> str:
        """Hash: a gateway file's object (JSON) and content."""
        return f"{self.prefix}file:{file_id}"

    def tenant_files(self, tenant: str) -> str:
        """Sorted set: a tenant's file ids -> creation time, for listing."""
        return f"{self.prefix}tenant:{tenant}:files"

    def batch(self, batch_id: str) -> str:
        """Hash: a gateway batch's object (JSON) and its jobs."""
        return f"{self.prefix}batch:{batch_id}"

    def batch_requests(self, batch_id: str) -> str:
        """List: a validated batch's requests to run, in file order (JSON: custom id, body),
        read a chunk at a time as they are submitted."""
        return f"{self.prefix}batch:{batch_id}:requests"

    def tenant_batches(self, tenant: str) -> str:
        """Sorted set: a tenant's batch ids -> creation time, for listing."""
        return f"{self.prefix}tenant:{tenant}:batches"

    @property
    def active_batches(self) -> str:
        """Set: batch ids not yet finalized, which the gateway's finalizer watches."""
        return f"{self.prefix}batches:active"

    def usage(self, hour: str) -> str:
        """Hash: the usage ledger of one UTC hour ("2026112921"): "tenant\\tmodel\\tmetric" ->
        amount (jobs, tokens, cost), for `tierq usage`."""
        return f"{self.prefix}usage:{hour}"

    def stats(self, minute: int) -> str:
        """Hash: one minute's counters (epoch minute): "tier\\tmetric" -> amount, for
        `tierq stats`."""
        return f"{self.prefix}stats:{minute}"

    @property
    def workers(self) -> str:
        """Hash: worker node name -> its heartbeat (JSON: tier, concurrency, in flight, when)."""
        return f"{self.prefix}workers"


def as_text(value: object) -> str:
    """A Redis reply (bytes from a client without `decode_responses`) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
