-- Reserve the earliest start of one call within a group's RPM and TPM (GCRA), and count it.
-- KEYS: state hash, usage key prefix (the minute by Redis's clock is appended).
-- ARGV: rpm, tpm, cost tokens, burst s, headroom, max wait s, usage ttl.
-- Returns {status, wait seconds, tpm}: status 1 reserved (start after wait), 0 not reserved
-- (the wait is longer than max wait), -1 the call alone exceeds the TPM limit, 2 the group has
-- no limit and no pause (nothing reserved, the call counted: the worker then admits the group's
-- calls without this script for a moment, and counts them with ratelimit_count.lua).
-- include: now
-- include: limits
-- include: usage

local s = redis.call('HMGET', KEYS[1], 'tat_r', 'tat_t', 'pause_until', 'learned_rpm',
                     'learned_tpm')
local rpm = limit_of(ARGV[1], s[4])
local tpm = limit_of(ARGV[2], s[5])
local cost = tonumber(ARGV[3])
local burst = tonumber(ARGV[4])
local headroom = tonumber(ARGV[5])
local max_wait = tonumber(ARGV[6])
if tpm > 0 and cost > tpm then return {-1, '0', tostring(tpm)} end

local tat_r = tonumber(s[1]) or 0
local tat_t = tonumber(s[2]) or 0
local paused = (tonumber(s[3]) or 0) > now
if rpm <= 0 and tpm <= 0 and not paused then
  count_use(KEYS[2], 1, cost, ARGV[7])
  return {2, '0', '0'}
end
local start = math.max(now, tonumber(s[3]) or 0)
local step_r = interval_of(rpm, headroom)
local step_t = interval_of(tpm, headroom) * cost
if step_r > 0 then start = math.max(start, tat_r + step_r - math.max(burst, step_r)) end
if step_t > 0 then start = math.max(start, tat_t + step_t - math.max(burst, step_t)) end
local wait = start - now
if wait > max_wait then return {0, tostring(wait), tostring(tpm)} end

if step_r > 0 then
  redis.call('HSET', KEYS[1], 'tat_r', tostring(math.max(tat_r, start) + step_r))
end
if step_t > 0 then
  redis.call('HSET', KEYS[1], 'tat_t', tostring(math.max(tat_t, start) + step_t))
end
count_use(KEYS[2], 1, cost, ARGV[7])
return {1, tostring(wait), tostring(tpm)}
