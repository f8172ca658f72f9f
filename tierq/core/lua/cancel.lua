-- Cancel a job. KEYS: job, watch. ARGV: cancelled record, done channel, job id.
-- A job not yet finished becomes cancelled: a queued one will not reach the API (its claim
-- finds it final), a running one's result is discarded (its settle never overwrites it).
-- Returns {'cancelled' | 'final' | 'missing', the final record or ''}.
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then
  return {'final', redis.call('HGET', KEYS[1], 'record')}
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'record', ARGV[1])
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return {'cancelled', ''}
