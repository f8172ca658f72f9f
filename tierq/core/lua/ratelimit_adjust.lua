-- Spend (or give back) tokens after the fact: the real usage differs from the estimate.
-- KEYS: state hash, usage key prefix (the minute by Redis's clock is appended).
-- ARGV: tpm, token delta, headroom, usage ttl.
-- include: now
-- include: limits
-- include: usage

local s = redis.call('HMGET', KEYS[1], 'tat_t', 'learned_tpm')
local tpm = limit_of(ARGV[1], s[2])
local delta = tonumber(ARGV[2])
local step = interval_of(tpm, tonumber(ARGV[3]))
local tat = tonumber(s[1]) or 0
if step > 0 then
  if delta > 0 then
    redis.call('HSET', KEYS[1], 'tat_t', tostring(math.max(tat, now) + delta * step))
  elseif tat > now then
    redis.call('HSET', KEYS[1], 'tat_t', tostring(math.max(now, tat + delta * step)))
  end
end
count_use(KEYS[2], 0, delta, ARGV[4])
return 1
