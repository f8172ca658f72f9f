-- Pick the jobs whose worker stopped renewing their leases (or whose retry never came).
-- KEYS: watch. ARGV: job key prefix, seconds before the same job may be re-queued again,
-- batch size. Returns {job id, message, record, generation} for each job to re-queue; the
-- job's generation is bumped, so the message it replaces is stale if it turns up after all.
-- include: now

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
    local generation = redis.call('HINCRBY', key, 'gen', 1)
    table.insert(out, id)
    table.insert(out, s[3])
    table.insert(out, s[4])
    table.insert(out, tostring(generation))
  end
end
return out
