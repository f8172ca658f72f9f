-- Cancel a job. KEYS: job, watch, and for a gateway tenant's job that tenant's jobs in flight
-- (its quota, which a cancelled job leaves). ARGV: cancelled record, done channel, job id, and
-- 'spare_running' or ''.
-- A job not yet finished becomes cancelled: a queued one will not reach the API (its claim
-- finds it final), a running one's result is discarded (its settle never overwrites it).
-- With 'spare_running' (a batch being cancelled: in-flight requests finish, as in the OpenAI
-- Batch API), a job a worker is running under a live lease is left to finish -> running; one
-- whose lease lapsed (its worker died) is cancelled like a queued one.
-- Returns {'cancelled' | 'final' | 'running' | 'missing', the final record or ''}.
-- include: now
local s = redis.call('HMGET', KEYS[1], 'status', 'lease_until')
local status = s[1]
if not status then return {'missing', ''} end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then
  return {'final', redis.call('HGET', KEYS[1], 'record')}
end
if ARGV[4] == 'spare_running' and status == 'running' and (tonumber(s[2]) or 0) > now then
  return {'running', ''}
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'record', ARGV[1])
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
redis.call('ZREM', KEYS[2], ARGV[3])
if KEYS[3] then redis.call('ZREM', KEYS[3], ARGV[3]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {'cancelled', ''}
