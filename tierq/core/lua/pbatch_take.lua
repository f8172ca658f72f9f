-- Take up to n jobs of one queue's batch pool into a new provider batch
-- (tierq/core/provider_batches.py).
-- KEYS: the pool (zset: job id -> deadline), the queue's open batches (zset), the new batch's
-- hash, the watch list. ARGV: n, job key prefix, the batch id, seconds of the forming lease,
-- the margin (seconds) before the earliest deadline at which the batch is given up, the
-- records' TTL after that, the taker's token.
-- Returns the ids taken (earliest deadlines first); none when the pool holds no queued job.
--
-- The taken jobs go on the watch list, due when the batch is given up: whatever becomes of the
-- batch or of the worker that formed it, the reaper runs each job still without an answer on
-- the queue then, in time for its deadline; their records are kept until then and for the
-- results' TTL after. A job no longer queued (cancelled), or already handed to the queue by a
-- reaper (a later generation), is dropped.
-- include: now

local pool, open, batch, watch = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local picked = redis.call('ZRANGE', pool, 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local taken, earliest = {}, nil
for i = 1, #picked, 2 do
  local id, deadline = picked[i], tonumber(picked[i + 1])
  redis.call('ZREM', pool, id)
  local s = redis.call('HMGET', ARGV[2] .. id, 'status', 'gen')
  if s[1] == 'queued' and (tonumber(s[2]) or 0) == 0 then
    table.insert(taken, id)
    if earliest == nil or deadline < earliest then earliest = deadline end
  end
end
if #taken == 0 then return taken end
local give_up = earliest - tonumber(ARGV[5])
redis.call('HSET', batch, 'state', 'forming', 'jobs', cjson.encode(taken),
           'formed_at', tostring(now), 'lease_until', tostring(now + tonumber(ARGV[4])),
           'give_up_at', tostring(give_up), 'holder', ARGV[7])
redis.call('ZADD', open, give_up, ARGV[3])
local keep = math.max(1, math.floor(give_up - now + tonumber(ARGV[6])))
for _, id in ipairs(taken) do
  redis.call('ZADD', watch, give_up, id)
  -- The batch owns the job until the reaper hands it to the queue (which clears this): its
  -- answer, or its refusal, settles under the batch's token; a late one after that does not.
  redis.call('HSET', ARGV[2] .. id, 'owner', 'pbatch:' .. ARGV[3])
  redis.call('EXPIRE', ARGV[2] .. id, keep)
end
return taken
