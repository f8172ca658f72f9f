"""Job records in Redis: one hash per job, written by producers and workers, read by pollers.

Why not Celery's result backend: a job must be known from the moment it is accepted (Celery
answers PENDING for any id, known or not), a failure must carry the API's error rather than a
Python exception, and status, attempts and timestamps belong in one record that later features
(idempotency, cancellation, tenants) extend. The record is a hash of two fields: `status`, so a
script can act on it atomically, and `record`, the `JobResult` as JSON.

Every write refreshes the TTL (`result_ttl_seconds`), so a result stays readable that long after
the job's last change. The client retries on connection errors and timeouts (what Celery's
`result_backend_always_retry` would do for its own backend).
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from worker.results import JobResult, JobStatus
from worker.settings import Settings

# Seconds between pings on an idle pooled connection, so a dead one is noticed before use.
HEALTH_CHECK_INTERVAL_SECONDS = 25
# Attempts of one Redis command across a brief outage (with exponential back-off, ~10 s in all).
REDIS_COMMAND_RETRIES = 8

# Write the record unless the job already ended: a redelivered message must not reopen a
# finished job (and pay for its call again). Returns the finished record, or false.
_START_UNLESS_FINAL = """
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'succeeded' or status == 'failed' then
  return redis.call('HGET', KEYS[1], 'record')
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'record', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return false
"""


def connect(settings: Settings) -> redis.Redis:
    """A pooled client for job records, resilient to brief Redis outages."""
    return redis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_keepalive=True,
        socket_connect_timeout=5,
        socket_timeout=10,
        health_check_interval=HEALTH_CHECK_INTERVAL_SECONDS,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), REDIS_COMMAND_RETRIES),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        decode_responses=False,
    )


class JobStore:
    """Reads and writes `JobResult` records; safe to share between threads."""

    def __init__(self, client: redis.Redis, *, key_prefix: str, ttl_seconds: int) -> None:
        self._redis = client
        self._key_prefix = key_prefix
        self._ttl_seconds = ttl_seconds
        self._start_script = client.register_script(_START_UNLESS_FINAL)

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None) -> JobStore:
        return cls(
            client or connect(settings),
            key_prefix=settings.key_prefix,
            ttl_seconds=settings.result_ttl_seconds,
        )

    @property
    def redis(self) -> redis.Redis:
        return self._redis

    def key(self, job_id: str) -> str:
        return f"{self._key_prefix}job:{job_id}"

    def save(self, result: JobResult) -> None:
        """Write the record as it stands and restart its TTL."""
        key = self.key(result.job_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"status": result.status.value, "record": result.to_json()})
        pipe.expire(key, self._ttl_seconds)
        pipe.execute()

    def save_many(self, results: Sequence[JobResult]) -> None:
        """Write many records in one round trip (bulk submission)."""
        pipe = self._redis.pipeline(transaction=False)
        for result in results:
            key = self.key(result.job_id)
            pipe.hset(key, mapping={"status": result.status.value, "record": result.to_json()})
            pipe.expire(key, self._ttl_seconds)
        pipe.execute()

    def start(self, result: JobResult) -> JobResult | None:
        """Record an attempt as started, unless the job already ended; then return that record."""
        finished = self._start_script(
            keys=[self.key(result.job_id)],
            args=[result.status.value, result.to_json(), self._ttl_seconds],
        )
        return JobResult.from_json(finished) if finished else None

    def get(self, job_id: str) -> JobResult | None:
        raw = self._redis.hget(self.key(job_id), "record")
        return JobResult.from_json(raw) if raw else None

    def get_many(self, job_ids: Sequence[str]) -> list[JobResult | None]:
        """Records for many jobs in one round trip; None where a job is unknown or expired."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.key(job_id), "record")
        return [JobResult.from_json(raw) if raw else None for raw in pipe.execute()]

    def delete(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._redis.delete(*(self.key(job_id) for job_id in job_ids))

    def status(self, job_id: str) -> JobStatus | None:
        raw = self._redis.hget(self.key(job_id), "status")
        if not raw:
            return None
        return JobStatus(raw.decode() if isinstance(raw, bytes) else raw)
