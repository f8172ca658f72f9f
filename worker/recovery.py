"""Recovery in seconds, whatever Redis's visibility timeout: leases renewed, lapsed jobs re-queued.

With the Redis transport, a message whose worker died comes back only after the visibility
timeout (an hour by default), and that timeout cannot simply be shortened: a call or a retry
countdown longer than it would then be delivered twice. tierq settles the tension by design:

- Each running job's claim carries a lease (`TIERQ_LEASE_SECONDS`, 30 s). A live worker renews
  the leases of the jobs it runs every third of that, however long a call takes.
- Each job that has not finished sits on a watch list with the time by which it must move on:
  its lease end while running, its retry time (plus a lease) while waiting to retry.
- Every worker runs a reaper (`REAP_INTERVAL_SECONDS`): jobs past their time are put back on
  their tier's queue from the message kept with the job. One script picks them and moves their
  time on, so two reapers never re-queue the same job.

A killed worker's jobs thus run again elsewhere within a lease and a reaper interval. When the
original message does come back after the visibility timeout, the job's claim finds it
finished (or running elsewhere) and nothing is called twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog

from worker.jobstore import JobStore
from worker.results import JobResult

log = structlog.get_logger("tierq.worker")

# How often a worker looks for jobs whose worker stopped renewing their leases.
REAP_INTERVAL_SECONDS = 5.0
# Jobs re-queued per reaper pass at most (the rest wait for the next pass).
REAP_BATCH = 100

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# KEYS: watch. ARGV: lease seconds, then (job key, token, job id) per job held by this worker.
# Extends each lease still held by its token; returns how many were.
_RENEW = (
    _NOW
    + """
local until_ = now + tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV, 3 do
  if redis.call('HGET', ARGV[i], 'owner') == ARGV[i + 1] then
    redis.call('HSET', ARGV[i], 'lease_until', tostring(until_))
    redis.call('ZADD', KEYS[1], until_, ARGV[i + 2])
    renewed = renewed + 1
  end
end
return renewed
"""
)

# KEYS: watch. ARGV: job key prefix, seconds before the same job may be re-queued again,
# batch size. Returns {job id, message, record} for each job to re-queue.
_REAP = (
    _NOW
    + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(due) do
  local key = ARGV[1] .. id
  local s = redis.call('HMGET', key, 'status', 'lease_until', 'message', 'record')
  local lease = tonumber(s[2]) or 0
  if not s[1] or s[1] == 'succeeded' or s[1] == 'failed' or s[1] == 'cancelled' or not s[3] then
    redis.call('ZREM', KEYS[1], id)
  elseif s[1] == 'running' and lease > now then
    redis.call('ZADD', KEYS[1], lease, id)
  else
    redis.call('HDEL', key, 'owner', 'lease_until')
    redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id)
    table.insert(out, id)
    table.insert(out, s[3])
    table.insert(out, s[4])
  end
end
return out
"""
)

Requeue = Callable[[str, dict[str, Any], int], None]


class Leases:
    """The jobs this worker process holds, their renewal, and the reaper; thread-safe."""

    def __init__(self, store: JobStore, lease_seconds: float, requeue: Requeue) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self._requeue = requeue
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        client = store.redis
        self._renew = client.register_script(_RENEW)
        self._reap = client.register_script(_REAP)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self, job_id: str, token: str) -> None:
        with self._lock:
            self._held[job_id] = token

    def release(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def renew(self) -> int:
        """Extend the leases of every job this process runs; how many were still ours."""
        with self._lock:
            held = list(self._held.items())
        if not held:
            return 0
        args: list[Any] = [self.lease_seconds]
        for job_id, token in held:
            args += [self.store.key(job_id), token, job_id]
        return int(self._renew(keys=[self.store.keys.watch], args=args))

    def reap(self) -> int:
        """Put jobs whose worker stopped renewing (or whose retry never came) back on queue."""
        found = self._reap(
            keys=[self.store.keys.watch],
            args=[self.store.keys.job(""), self.lease_seconds, REAP_BATCH],
        )
        for job_id, message, record in zip(found[::3], found[1::3], found[2::3], strict=True):
            attempts = JobResult.from_json(record).attempts if record else 0
            self._requeue(job_id.decode(), json.loads(message), attempts)
            log.warning("job.requeued", job_id=job_id.decode(), reason="lease lapsed")
        return len(found) // 3

    def start(self) -> None:
        """Renew and reap in a background thread until `stop()`."""
        self._thread = threading.Thread(target=self._loop, name="tierq-leases", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        renew_every = self.lease_seconds / 3
        next_renew = next_reap = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                if now >= next_renew:
                    self.renew()
                    next_renew = now + renew_every
                if now >= next_reap:
                    self.reap()
                    next_reap = now + REAP_INTERVAL_SECONDS
            except redis.RedisError as error:
                # Redis is away: nothing to renew against; try again shortly.
                log.warning("leases.redis_unavailable", error=str(error))
            self._stop.wait(min(1.0, renew_every))
