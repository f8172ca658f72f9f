-- Claim a job for one attempt (a delivery of its message), identified by a token.
-- KEYS: job, watch. ARGV: token, running record, lease seconds, ttl, queue message, job id,
-- the message's generation.
-- - A job that already ended (succeeded, failed, cancelled) is not reopened: its call is never
--   paid for again. -> final
-- - A message older than the job's current generation was superseded (by a retry, a re-queue
--   by the reaper, a retried dead letter): it is not run. -> stale
-- - A job another attempt is running, with its lease still valid, is left to it: Redis hands
--   unacked messages out again when a worker's connection drops, while the first attempt is
--   still running. -> busy, with the seconds left on that lease
-- - Otherwise (queued, retrying, or a running attempt whose lease lapsed: its worker died)
--   the record becomes this attempt's for `lease` seconds (renewed while it runs), and the job
--   goes on the watch list until then. -> claimed
-- include: now

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
