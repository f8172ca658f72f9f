"""Job records in Redis: one hash per job, written by producers and workers, read by pollers.

Why not Celery's result backend: a job must be known from the moment it is accepted (Celery
answers PENDING for any id, known or not), a failure must carry the API's error rather than a
Python exception, and status, attempts and timestamps belong in one record that later features
(idempotency, cancellation, tenants) extend. The record is a hash of two fields: `status`, so a
script can act on it atomically, and `record`, the `JobResult` as JSON; while an attempt runs,
`owner` (the attempt's token) and `lease_until` say who holds the job and until when.

Every write refreshes the TTL (`result_ttl_seconds`), so a result stays readable that long after
the job's last change. The client retries on connection errors and timeouts (what Celery's
`result_backend_always_retry` would do for its own backend).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from tierq.core import accounting
from tierq.core.keys import Keys
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings

# Seconds between pings on an idle pooled connection, so a dead one is noticed before use.
HEALTH_CHECK_INTERVAL_SECONDS = 25
# Attempts of one Redis command across a brief outage (with exponential back-off, ~10 s in all).
REDIS_COMMAND_RETRIES = 8

# Lua prelude: `now` in seconds by Redis's clock, the one clock every worker shares.
LUA_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
"""

# Claim a job for one attempt (a delivery of its message), identified by a token.
# KEYS: job, watch. ARGV: token, running record, lease seconds, ttl, queue message, job id,
# the message's generation.
# - A job that already ended (succeeded, failed, cancelled) is not reopened: its call is never
#   paid for again. -> final
# - A message older than the job's current generation was superseded (by a retry, a re-queue
#   by the reaper, a retried dead letter): it is not run. -> stale
# - A job another attempt is running, with its lease still valid, is left to it: Redis hands
#   unacked messages out again when a worker's connection drops, while the first attempt is
#   still running. -> busy, with the seconds left on that lease
# - Otherwise (queued, retrying, or a running attempt whose lease lapsed: its worker died)
#   the record becomes this attempt's for `lease` seconds (renewed while it runs), and the job
#   goes on the watch list until then. -> claimed
_CLAIM = (
    LUA_NOW
    + """
local s = redis.call('HMGET', KEYS[1], 'status', 'owner', 'lease_until', 'gen')
if s[1] == 'succeeded' or s[1] == 'failed' or s[1] == 'cancelled' then
  return {'final', redis.call('HGET', KEYS[1], 'record')}
end
local generation = tonumber(ARGV[7])
if generation < (tonumber(s[4]) or 0) then return {'stale', ''} end
if s[1] == 'running' and s[2] and s[2] ~= ARGV[1] then
  local left = (tonumber(s[3]) or 0) - now
  if left > 0 then return {'busy', tostring(left)} end
end
local lease_until = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'status', 'running', 'record', ARGV[2], 'owner', ARGV[1],
           'lease_until', tostring(lease_until), 'gen', generation)
redis.call('HSETNX', KEYS[1], 'message', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('ZADD', KEYS[2], lease_until, ARGV[6])
return {'claimed', ''}
"""
)

# Record an attempt's outcome: retrying, succeeded, failed, or (released for a rate-limit wait)
# queued. KEYS: job, watch, dead, usage ledger (the hour's), stats (the minute's). ARGV: token,
# status, record, ttl, done channel, job id, seconds until the job must have moved on (non-final
# outcomes), dead-letter it (1 or 0), the generation of the message that carries the job on
# ('' to leave it), the bill and the counts (JSON, worker/accounting.py), the ledger's and the
# stats' TTLs.
# Only the attempt holding the claim writes (or, with no claim held: a delivery that never
# claimed, or a success from an attempt whose claim a reaper took back); a success or a
# cancellation is never overwritten, so a late duplicate cannot turn a paid answer into a
# failure. A final outcome leaves the watch list and is announced on the job's channel, for
# waiters (producers/waiting.py); an exhausted one joins the dead letters. A paid answer's bill
# is added once per attempt even when its record is not written (the API billed it); the counts
# only with the record, and a job's outcome once in the ledger. A settle sent again after its
# reply was lost answers as the first did. Returns 1 if written.
_SETTLE = (
    LUA_NOW
    + """
local function add(spec)
  if spec == '' then return end
  local touched = {}
  for field, amount in pairs(cjson.decode(spec)) do
    local key, ttl = KEYS[4], ARGV[12]
    if string.sub(field, 1, 2) == 's:' then key, ttl = KEYS[5], ARGV[13] end
    redis.call('HINCRBYFLOAT', key, string.sub(field, 3), amount)
    touched[key] = ttl
  end
  for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
end
local function add_bill()
  if ARGV[10] == '' or ARGV[1] == '' then return end
  if redis.call('HSETNX', KEYS[1], 'billed:' .. ARGV[1], 1) == 1 then add(ARGV[10]) end
end
-- A job's outcome is counted in the ledger once: a later outcome (a dead letter retried, a
-- paid answer arriving after a lost worker's job was failed) takes the earlier one's place.
local function count(spec)
  if spec == '' then return end
  local ledger, has = {}, false
  for field, amount in pairs(cjson.decode(spec)) do
    if string.sub(field, 1, 2) == 'u:' then ledger[field] = amount; has = true end
  end
  if has then
    local prev = redis.call('HGET', KEYS[1], 'counted')
    if prev then
      local p = cjson.decode(prev)
      for field, amount in pairs(p.spec) do
        redis.call('HINCRBYFLOAT', p.key, string.sub(field, 3), -amount)
      end
    end
    redis.call('HSET', KEYS[1], 'counted', cjson.encode({key = KEYS[4], spec = ledger}))
  end
  add(spec)
end
local s = redis.call('HMGET', KEYS[1], 'status', 'owner', 'settled_by')
-- This very settle, sent again because its reply was lost: it was written.
if ARGV[1] ~= '' and s[3] == ARGV[1] .. ':' .. ARGV[2] then return 1 end
if s[1] == 'succeeded' or s[1] == 'cancelled' then add_bill() return 0 end
if s[2] then
  if s[2] ~= ARGV[1] then add_bill() return 0 end
elseif ARGV[1] ~= '' and ARGV[2] ~= 'succeeded' then
  -- This attempt's claim was taken back by a reaper: only a paid answer is still worth keeping.
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'record', ARGV[3],
           'settled_by', ARGV[1] .. ':' .. ARGV[2])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'gen', ARGV[9]) end
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[2] == 'succeeded' or ARGV[2] == 'failed' then
  redis.call('ZREM', KEYS[2], ARGV[6])
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  if ARGV[2] == 'succeeded' then redis.call('ZREM', KEYS[3], ARGV[6]) end
else
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), ARGV[6])
end
if ARGV[8] == '1' then redis.call('ZADD', KEYS[3], now, ARGV[6]) end
-- Accounting last: the outcome above stands even if a ledger write fails.
add_bill()
count(ARGV[11])
return 1
"""
)


# KEYS: watch. ARGV: the due time the producer set, job ids. Removes each job still due at
# exactly that time (one a worker has claimed or rescheduled since has another).
_UNWATCH_PUBLISHED = """
local due = tonumber(ARGV[1])
for i = 2, #ARGV do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) == due then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return 0
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """The outcome of `JobStore.claim`: claimed, or why not."""

    claimed: bool
    finished: JobResult | None = None
    busy_for_seconds: float = 0.0
    # The message was superseded by a newer one of the same job.
    stale: bool = False


def connect(
    settings: Settings,
    *,
    socket_timeout_seconds: float = 10.0,
    retries: int = REDIS_COMMAND_RETRIES,
) -> redis.Redis:
    """A pooled client for job records, resilient to brief Redis outages.

    Workers ride out an outage of several seconds; producers pass shorter timeouts, so a
    caller with a deadline (`wait(timeout=...)`) hears of a hung Redis in seconds.
    """
    return redis.Redis.from_url(
        settings.redis_url.get_secret_value(),
        socket_keepalive=True,
        socket_connect_timeout=min(5.0, socket_timeout_seconds),
        socket_timeout=socket_timeout_seconds,
        health_check_interval=HEALTH_CHECK_INTERVAL_SECONDS,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        decode_responses=False,
    )


class JobStore:
    """Reads and writes `JobResult` records; safe to share between threads."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str,
        ttl_seconds: int,
        usage_ttl_seconds: int = 90 * 86_400,
    ) -> None:
        self._redis = client
        self._key_prefix = key_prefix
        self.keys = Keys(key_prefix)
        self._ttl_seconds = ttl_seconds
        self._usage_ttl_seconds = usage_ttl_seconds
        self._claim_script = client.register_script(_CLAIM)
        self._settle_script = client.register_script(_SETTLE)
        self._unwatch_script = client.register_script(_UNWATCH_PUBLISHED)

    @classmethod
    def from_settings(cls, settings: Settings, client: redis.Redis | None = None) -> JobStore:
        return cls(
            client or connect(settings),
            key_prefix=settings.key_prefix,
            ttl_seconds=settings.result_ttl_seconds,
            usage_ttl_seconds=settings.usage_ttl_seconds,
        )

    @property
    def redis(self) -> redis.Redis:
        return self._redis

    @property
    def key_prefix(self) -> str:
        return self._key_prefix

    def key(self, job_id: str) -> str:
        return self.keys.job(job_id)

    def save(self, result: JobResult) -> None:
        """Write the record as it stands and restart its TTL."""
        key = self.key(result.job_id)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(key, mapping={"status": result.status.value, "record": result.to_json()})
        pipe.expire(key, self._ttl_seconds)
        pipe.execute()

    def save_many(
        self,
        results: Sequence[JobResult],
        messages: Sequence[str],
        *,
        watch_until: float | None = None,
    ) -> None:
        """Write new jobs' records, with their queue messages (kept for a re-queue), in one
        round trip (bulk submission); with `watch_until` (epoch seconds), on the watch list
        until then, so a producer that dies before publishing them loses none: a reaper
        enqueues them from their kept messages (`unwatch_published` takes them off)."""
        pipe = self._redis.pipeline(transaction=False)
        if watch_until is not None and results:
            pipe.zadd(self.keys.watch, {result.job_id: watch_until for result in results})
        for result, message in zip(results, messages, strict=True):
            key = self.key(result.job_id)
            pipe.hset(
                key,
                mapping={
                    "status": result.status.value,
                    "record": result.to_json(),
                    "message": message,
                    "gen": 0,
                },
            )
            pipe.expire(key, self._ttl_seconds)
        pipe.execute()

    def unwatch_published(self, job_ids: Sequence[str], watch_until: float) -> None:
        """Take published jobs off the watch list, unless a worker has put them there since
        (a claim or a retry sets another due time): a queue's backlog is not the reaper's."""
        if job_ids:
            self._unwatch_script(keys=[self.keys.watch], args=[repr(watch_until), *job_ids])

    def watch(self, job_ids: Sequence[str], due_in_seconds: float) -> None:
        """Put jobs on the watch list: a reaper re-queues them unless they move on in time."""
        if job_ids:
            due = time.time() + due_in_seconds
            self._redis.zadd(self.keys.watch, dict.fromkeys(job_ids, due))

    def claim(
        self, result: JobResult, token: str, lease_seconds: float, message: str, generation: int
    ) -> Claim:
        """Make the job this attempt's (status running), unless it ended, the message is stale,
        or another attempt holds a live lease on it. `message` (JSON) is kept for a re-queue."""
        outcome, detail = self._claim_script(
            keys=[self.key(result.job_id), self.keys.watch],
            args=[
                token,
                result.to_json(),
                lease_seconds,
                self._ttl_seconds,
                message,
                result.job_id,
                generation,
            ],
        )
        if outcome == b"stale":
            return Claim(claimed=False, stale=True)
        if outcome == b"final":
            return Claim(claimed=False, finished=JobResult.from_json(detail))
        if outcome == b"busy":
            return Claim(claimed=False, busy_for_seconds=float(detail))
        return Claim(claimed=True)

    def settle(
        self,
        result: JobResult,
        token: str | None,
        *,
        due_in_seconds: float = 0.0,
        dead_letter: bool = False,
        generation: int | None = None,
        account: bool = True,
    ) -> bool:
        """Write an attempt's outcome if this attempt (`token`) still owns the job.

        A job that is not finished (retrying, or queued again) must move on within
        `due_in_seconds`, or a reaper re-queues it; `dead_letter` adds a failed job to the
        dead letters. With `account`, the outcome's bill and counts go to the usage ledger
        and the stats counters (worker/accounting.py) in the same step.
        """
        moment = result.finished_at or datetime.now(UTC)
        billed = accounting.bill(result) if account and result.status is JobStatus.SUCCEEDED else {}
        counted = accounting.counts(result) if account else {}
        written = self._settle_script(
            keys=[
                self.key(result.job_id),
                self.keys.watch,
                self.keys.dead,
                self.keys.usage(accounting.hour_of(moment)),
                self.keys.stats(accounting.minute_of(moment)),
            ],
            args=[
                token or "",
                result.status.value,
                result.to_json(),
                self._ttl_seconds,
                self.keys.done_channel(result.job_id),
                result.job_id,
                due_in_seconds,
                "1" if dead_letter else "0",
                "" if generation is None else generation,
                json.dumps(billed) if billed else "",
                json.dumps(counted) if counted else "",
                self._usage_ttl_seconds,
                accounting.STATS_TTL_SECONDS,
            ],
        )
        return bool(written)

    def done_channel(self, job_id: str) -> str:
        """The pub/sub channel on which the job's final outcome is announced."""
        return self.keys.done_channel(job_id)

    def statuses(self, job_ids: Sequence[str]) -> list[bytes | None]:
        """Each job's status alone (not its record), in one round trip."""
        pipe = self._redis.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.hget(self.key(job_id), "status")
        return list(pipe.execute())

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
