"""Every Redis key and channel tierq writes (besides Celery's own queues), named in one place.

All start with the configured prefix (`TIERQ_KEY_PREFIX`, "tierq:"), so several deployments
can share one Redis and an operator can find everything of tierq's with one pattern. No other
module spells a key: tests/test_redis_names.py fails if one builds a name from the prefix.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# The one field of an entry of a job's delta stream (`Keys.deltas`); its value is the delta's
# JSON. Written by workers (tierq.worker.deltas), read by the gateway's event stream.
DELTA_FIELD = "delta"


class BatchField(StrEnum):
    """The per-request fields of a batch's hash (`Keys.batch`), `<kind>:<custom_id>`."""

    # The job id a request was submitted as.
    JOB = "job"
    # The error line of a request refused while validating (never submitted).
    REJECTED = "rejected"

    def of(self, custom_id: str) -> str:
        """The field of one request."""
        return f"{self.value}:{custom_id}"

    @property
    def pattern(self) -> str:
        """A match pattern (HSCAN) for the fields of this kind."""
        return f"{self.value}:*"

    def custom_id(self, field: str) -> str:
        """The custom id a field of this kind belongs to."""
        return field.removeprefix(f"{self.value}:")


@dataclass(frozen=True, slots=True)
class Keys:
    """The names under one deployment's prefix; each says its Redis type and what it holds."""

    prefix: str

    def job(self, job_id: str) -> str:
        """Hash: status, record (JobResult JSON), message (the queue message), owner, lease."""
        return f"{self.job_prefix}{job_id}"

    @property
    def job_prefix(self) -> str:
        """What every job's key starts with (`job`), for a script that derives keys from ids
        (the reaper's: the ids it finds are on the watch list)."""
        return f"{self.prefix}job:"

    def done_channel(self, job_id: str) -> str:
        """Pub/sub channel on which a job's end is announced to waiters."""
        return f"{self.prefix}done:{job_id}"

    @property
    def done_channels(self) -> str:
        """Pattern (PSUBSCRIBE) of every job's `done_channel`, for a listener of all ends."""
        return self.done_channel("*")

    @property
    def watch(self) -> str:
        """Sorted set: job id -> when it must have moved on (lease end, retry due) or be
        re-queued by a worker's reaper."""
        return f"{self.prefix}watch"

    # --- fair dispatch (tierq/core/dispatch.py) ---------------------------------------------
    # A backlog belongs to a tier's Celery queue (its name, `TIERQ_QUEUE_PREFIX` + tier), so a
    # fleet on other queues never dispatches it, as it never consumes the queue itself.

    def backlog_prefix(self, queue: str) -> str:
        """What a queue's backlogs' keys start with; `<priority>:<tenant>` follows."""
        return f"{self.prefix}backlog:{queue}:"

    def backlog(self, queue: str, priority: str, tenant: str) -> str:
        """Sorted set: one tenant's jobs of one priority waiting for dispatch, by submission."""
        return f"{self.backlog_prefix(queue)}{priority}:{tenant}"

    def backlog_tenants_prefix(self, queue: str) -> str:
        """What a queue's per-priority tenant sets' keys start with; the priority follows."""
        return f"{self.prefix}backlog-tenants:{queue}:"

    def backlog_tenants(self, queue: str, priority: str) -> str:
        """Sorted set: tenant -> its virtual time, for the tenants with jobs of this priority
        waiting (the earliest is served next)."""
        return f"{self.backlog_tenants_prefix(queue)}{priority}"

    def backlog_costs(self, queue: str) -> str:
        """Hash: job id -> the tokens it reserves, for the jobs waiting in a queue's backlogs."""
        return f"{self.prefix}backlog-costs:{queue}"

    def backlog_entries(self, queue: str) -> str:
        """Hash: job id -> its Celery message as kombu would put it on the queue, for the jobs
        waiting in a queue's backlogs (the dispatch script pushes it; tierq/core/queue_entry.py)."""
        return f"{self.prefix}backlog-entries:{queue}"

    def dispatch_clock(self, queue: str) -> str:
        """Hash: a queue's virtual times (`class:<priority>`, `classes`, `tenants:<priority>`)."""
        return f"{self.prefix}dispatch-clock:{queue}"

    # --- the provider's Batch API (tierq/core/provider_batches.py) ---------------------------

    def batch_pool(self, queue: str) -> str:
        """Sorted set: job id -> its deadline (epoch seconds), for a queue's jobs waiting to go
        into a provider batch."""
        return f"{self.prefix}batch-pool:{queue}"

    def provider_batches(self, queue: str) -> str:
        """Sorted set: tierq batch id -> when to give up on it (its earliest deadline less the
        margin), for a queue's provider batches not yet collected."""
        return f"{self.prefix}provider-batches:{queue}"

    @property
    def batch_pace(self) -> str:
        """Hash: queue -> when its batcher last formed a provider batch (epoch seconds)."""
        return f"{self.prefix}batch-pace"

    def provider_batch(self, batch_id: str) -> str:
        """Hash: one provider batch: state (forming, submitted, done), jobs (JSON), provider
        batch id, lease, give-up time, whether its cancel was sent."""
        return f"{self.prefix}provider-batch:{batch_id}"

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

    def ratelimit_usage(self, group: str, minute: int) -> str:
        """Hash: the requests and tokens a group admitted in one minute (epoch minute, by
        Redis's clock), for `tierq limits`."""
        return f"{self.ratelimit_usage_prefix(group)}{minute}"

    def ratelimit_usage_prefix(self, group: str) -> str:
        """What a group's `ratelimit_usage` keys start with: the limiter's scripts append the
        minute by Redis's clock."""
        return f"{self.ratelimit(group)}:usage:"

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
        """Sorted set: a tenant's jobs queued or running -> when they joined (its quota); a job
        leaves in the script that makes it final."""
        return f"{self.prefix}tenant:{tenant}:inflight"

    def tenant_in_flight_of(self, tenant: str | None) -> list[str]:
        """`tenant_in_flight` as a script's optional last key: none for a job without a tenant
        (one submitted by the Python client)."""
        return [] if tenant is None else [self.tenant_in_flight(tenant)]

    def tenant_reservations(self, tenant: str) -> str:
        """Sorted set: room a tenant's submissions under way hold in its quota,
        "<slots>:<reservation id>" -> when the reservation lapses (Redis's clock)."""
        return f"{self.prefix}tenant:{tenant}:reservations"

    def tenant_reserved(self, tenant: str) -> str:
        """String: the slots a tenant's `tenant_reservations` hold together."""
        return f"{self.prefix}tenant:{tenant}:reserved"

    def file(self, file_id: str) -> str:
        """Hash: a gateway file's object (JSON) and content."""
        return f"{self.prefix}file:{file_id}"

    def tenant_files(self, tenant: str) -> str:
        """Sorted set: a tenant's file ids -> creation time, for listing."""
        return f"{self.prefix}tenant:{tenant}:files"

    def tenant_uploads(self, tenant: str) -> str:
        """Sorted set: a tenant's uploaded files (purpose batch) counted in its storage quota,
        and uploads under way -> when each expires (Redis's clock); past entries are dropped
        by the next reservation."""
        return f"{self.prefix}tenant:{tenant}:uploads"

    def tenant_upload_bytes(self, tenant: str) -> str:
        """Hash: the bytes of each file in `tenant_uploads` (file id -> bytes), and their sum
        in the field `total`."""
        return f"{self.prefix}tenant:{tenant}:uploads:bytes"

    def batch(self, batch_id: str) -> str:
        """Hash: a gateway batch's object (JSON), status and counters, and per request a
        `BatchField` (its job id, or its error line)."""
        return f"{self.prefix}batch:{batch_id}"

    def batch_requests(self, batch_id: str) -> str:
        """List: a validated batch's requests to run, in file order (JSON: custom id, body),
        read a chunk at a time as they are submitted."""
        return f"{self.prefix}batch:{batch_id}:requests"

    def batch_requests_building(self, batch_id: str) -> str:
        """List: `batch_requests` while being written, renamed into place once whole."""
        return f"{self.batch_requests(batch_id)}:building"

    def batch_lock(self, batch_id: str) -> str:
        """String: the token of the one gateway process moving a batch on (redis-py's `Lock`,
        expiring if its holder dies)."""
        return f"{self.batch(batch_id)}:lock"

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
