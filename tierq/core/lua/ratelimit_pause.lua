-- Pause a group. KEYS: state hash. ARGV: seconds. Nobody starts a call in this group before
-- now + seconds. Returns the seconds the group is paused for.
-- include: now

local until_ = now + tonumber(ARGV[1])
local current = tonumber(redis.call('HGET', KEYS[1], 'pause_until')) or 0
if until_ > current then redis.call('HSET', KEYS[1], 'pause_until', tostring(until_)) end
return tostring(math.max(until_, current) - now)
