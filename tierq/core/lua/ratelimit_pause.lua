-- Pause a group. KEYS: state hash. ARGV: seconds, rpm, tpm, burst s, headroom (as for
-- ratelimit_acquire.lua). Nobody starts a call in this group before now + seconds, and the
-- pause spends the group's burst: when it ends, calls resume one at a time at the steady rate
-- instead of a burst at once. (A 429's retry-after promises room for about one call: the
-- API's own bucket is empty, and every call it refuses counts against the limit.)
-- Returns the seconds the group is paused for.
-- include: now
-- include: limits

local s = redis.call('HMGET', KEYS[1], 'pause_until', 'tat_r', 'tat_t', 'learned_rpm',
                     'learned_tpm')
local current = tonumber(s[1]) or 0
local until_ = math.max(now + tonumber(ARGV[1]), current)
redis.call('HSET', KEYS[1], 'pause_until', tostring(until_))

local burst = tonumber(ARGV[4])
local step_r = interval_of(limit_of(ARGV[2], s[4]), tonumber(ARGV[5]))
local tpm = limit_of(ARGV[3], s[5])
-- The first call may start when the pause ends, the next one step later (see acquire: a call
-- starts no earlier than tat + step - max(burst, step)).
if step_r > 0 then
  local tat_r = math.max(tonumber(s[2]) or 0, until_ + math.max(burst, step_r) - step_r)
  redis.call('HSET', KEYS[1], 'tat_r', tostring(tat_r))
end
if tpm > 0 then
  -- Tokens for one call's share of the request interval are left; the rest of the burst
  -- is spent.
  local tat_t = math.max(tonumber(s[3]) or 0, until_ + burst - math.min(burst, step_r))
  redis.call('HSET', KEYS[1], 'tat_t', tostring(tat_t))
end
return tostring(until_ - now)
