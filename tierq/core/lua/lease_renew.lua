-- Renew the leases of the jobs one worker process holds.
-- KEYS: watch. ARGV: lease seconds, then (job key, token, job id) per job held by this worker.
-- Extends each lease still held by its token; returns how many were.
-- include: now

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
