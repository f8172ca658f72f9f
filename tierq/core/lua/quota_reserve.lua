-- Reserve room in a tenant's quota of jobs in flight before its jobs are submitted
-- (producers/gateway/quota.py). KEYS: the tenant's jobs in flight, its reservations, its
-- reserved slots. ARGV: reservation id, slots wanted, fewest slots worth taking (the slots
-- wanted for all or none, 1 for as many as there is room for), the quota, seconds the
-- reservation lives, the job key prefix, oldest jobs to look at when the quota looks full.
-- Expired reservations (their submitter died) are dropped first, at most EXPIRED_AT_ONCE a
-- call (each is dropped once). Jobs in flight plus reserved slots are counted in O(1); when
-- the fewest slots do not fit, the oldest jobs in flight whose record is gone (expired without
-- finishing) or final (finished without leaving the set) are dropped, a bounded number, and
-- the count taken again. Returns {slots taken (0: refused), jobs in flight + slots reserved
-- before this reservation}.
-- include: now

local EXPIRED_AT_ONCE = 100
local function slots_of(member) return tonumber(string.match(member, '^(%d+):')) end

local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, EXPIRED_AT_ONCE)
if #expired > 0 then
  local freed = 0
  for _, member in ipairs(expired) do freed = freed + slots_of(member) end
  redis.call('ZREM', KEYS[2], unpack(expired))
  redis.call('DECRBY', KEYS[3], freed)
end
local reserved = 0
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[3])  -- nothing held: the counter cannot drift past this point
else
  reserved = math.max(0, tonumber(redis.call('GET', KEYS[3])) or 0)
end

local wanted, fewest, limit = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local count = redis.call('ZCARD', KEYS[1]) + reserved
if count + fewest > limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, tonumber(ARGV[7]) - 1)
  local gone = {}
  for _, id in ipairs(oldest) do
    local status = redis.call('HGET', ARGV[6] .. id, 'status')
    if not status or status == 'succeeded' or status == 'failed' or status == 'cancelled' then
      table.insert(gone, id)
    end
  end
  if #gone > 0 then
    redis.call('ZREM', KEYS[1], unpack(gone))
    count = count - #gone
  end
  if count + fewest > limit then return {0, count} end
end

local taken = math.min(wanted, limit - count)
local lives = tonumber(ARGV[5])
redis.call('ZADD', KEYS[2], now + lives, taken .. ':' .. ARGV[1])
redis.call('INCRBY', KEYS[3], taken)
-- Both keys outlive every reservation they hold, and no more (all reservations live as long).
local lives_ms = math.ceil(lives * 1000) + 1000
redis.call('PEXPIRE', KEYS[2], lives_ms)
redis.call('PEXPIRE', KEYS[3], lives_ms)
return {taken, count}
