-- Retry a dead letter. KEYS: job, dead, watch, and for a gateway tenant's job that tenant's
-- jobs in flight. ARGV: queued record, job id, seconds until the reaper re-queues it if the
-- publish that follows never arrives. A dead letter goes back to queued, with its message and
-- a new generation (any older message of the job that turns up late is not run), and back
-- among its tenant's jobs in flight: the quota counts a tenant's jobs queued or running, and
-- this one is again (an operator's retry is not refused for it; it leaves when it ends).
-- Returns {'queued', message, generation} or {'not_dead', ''}.
-- include: now

if not redis.call('ZSCORE', KEYS[2], ARGV[2]) then return {'not_dead', ''} end
local s = redis.call('HMGET', KEYS[1], 'status', 'message')
if s[1] ~= 'failed' or not s[2] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return {'not_dead', ''}
end
redis.call('HSET', KEYS[1], 'status', 'queued', 'record', ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[3]), ARGV[2])
if KEYS[4] then
  redis.call('ZADD', KEYS[4], 'NX', now, ARGV[2])
  -- Kept at least as long as the job's record, as a submission keeps it.
  local ttl = redis.call('TTL', KEYS[1])
  if ttl > 0 and redis.call('TTL', KEYS[4]) < ttl then redis.call('EXPIRE', KEYS[4], ttl) end
end
local generation = redis.call('HINCRBY', KEYS[1], 'gen', 1)
return {'queued', s[2], tostring(generation)}
