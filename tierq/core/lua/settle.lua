-- Record an attempt's outcome: retrying, succeeded, failed, or (released for a rate-limit wait)
-- queued. KEYS: job, watch, dead, usage ledger (the hour's), stats (the minute's), and for a
-- gateway tenant's job that tenant's jobs in flight (its quota). ARGV: token, status, record,
-- ttl, done channel, job id, seconds until the job must have moved on (non-final outcomes),
-- dead-letter it (1 or 0), the generation of the message that carries the job on ('' to leave
-- it), the bill and the counts (JSON, tierq/core/accounting.py), the ledger's and the stats'
-- TTLs.
-- Only the attempt holding the claim writes (or, with no claim held: a delivery that never
-- claimed, or a success from an attempt whose claim a reaper took back); a success or a
-- cancellation is never overwritten, so a late duplicate cannot turn a paid answer into a
-- failure. A final outcome leaves the watch list and its tenant's jobs in flight, and is
-- announced on the job's channel, for waiters (producers/waiting.py); an exhausted one joins
-- the dead letters. A paid answer's bill is added once per attempt even when its record is not
-- written (the API billed it); the counts only with the record, and a job's outcome once in
-- the ledger. A settle sent again after its reply was lost answers as the first did. Returns 1
-- if written.
-- include: now

local function add(spec)
  if spec == '' then return end
  local touched = {}
  for field, amount in pairs(cjson.decode(spec)) do
    local key, ttl = KEYS[4], ARGV[12]
    if string.sub(field, 1, 2) == 's:' then key, ttl = KEYS[5], ARGV[13] end
    redis.call('HINCRBYFLOAT', key, string.sub(field, 3), amount)
    touched[key] = ttl
  end
  for key, ttl in pairs(touched) do redis.call('EXPIRE', key, ttl) end
end
local function add_bill()
  if ARGV[10] == '' or ARGV[1] == '' then return end
  if redis.call('HSETNX', KEYS[1], 'billed:' .. ARGV[1], 1) == 1 then add(ARGV[10]) end
end
-- A job's outcome is counted in the ledger once: a later outcome (a dead letter retried, a
-- paid answer arriving after a lost worker's job was failed) takes the earlier one's place.
local function count(spec)
  if spec == '' then return end
  local ledger, has = {}, false
  for field, amount in pairs(cjson.decode(spec)) do
    if string.sub(field, 1, 2) == 'u:' then ledger[field] = amount; has = true end
  end
  if has then
    local prev = redis.call('HGET', KEYS[1], 'counted')
    if prev then
      local p = cjson.decode(prev)
      for field, amount in pairs(p.spec) do
        redis.call('HINCRBYFLOAT', p.key, string.sub(field, 3), -amount)
      end
    end
    redis.call('HSET', KEYS[1], 'counted', cjson.encode({key = KEYS[4], spec = ledger}))
  end
  add(spec)
end
local s = redis.call('HMGET', KEYS[1], 'status', 'owner', 'settled_by')
-- This very settle, sent again because its reply was lost: it was written.
if ARGV[1] ~= '' and s[3] == ARGV[1] .. ':' .. ARGV[2] then return 1 end
if s[1] == 'succeeded' or s[1] == 'cancelled' then add_bill() return 0 end
if s[2] then
  if s[2] ~= ARGV[1] then add_bill() return 0 end
elseif ARGV[1] ~= '' and ARGV[2] ~= 'succeeded' then
  -- This attempt's claim was taken back by a reaper: only a paid answer is still worth keeping.
  return 0
end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'record', ARGV[3],
           'settled_by', ARGV[1] .. ':' .. ARGV[2])
if ARGV[9] ~= '' then redis.call('HSET', KEYS[1], 'gen', ARGV[9]) end
redis.call('HDEL', KEYS[1], 'owner', 'lease_until')
redis.call('EXPIRE', KEYS[1], ARGV[4])
if ARGV[2] == 'succeeded' or ARGV[2] == 'failed' then
  redis.call('ZREM', KEYS[2], ARGV[6])
  if KEYS[6] then redis.call('ZREM', KEYS[6], ARGV[6]) end
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  if ARGV[2] == 'succeeded' then redis.call('ZREM', KEYS[3], ARGV[6]) end
else
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[7]), ARGV[6])
end
if ARGV[8] == '1' then redis.call('ZADD', KEYS[3], now, ARGV[6]) end
-- Accounting last: the outcome above stands even if a ledger write fails.
add_bill()
count(ARGV[11])
return 1
