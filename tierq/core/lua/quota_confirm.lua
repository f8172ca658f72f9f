-- Turn a tenant's reservation into the jobs submitted under it, or give it back (no jobs)
-- (producers/gateway/quota.py). KEYS: the tenant's jobs in flight, its reservations, its
-- reserved slots, then each job's record. ARGV: the reservation ("<slots>:<id>"), seconds the
-- set of jobs in flight is kept after its last addition, then the job ids (one per job key).
-- A job joins the set only if its record is there and not final: a worker fast enough to
-- finish it before this script runs has already had it leave (settle.lua), and an earlier
-- job an idempotency key answered with may have ended long ago. Its time in the set is kept
-- if it is there already. The jobs are added even if the reservation expired meanwhile (they
-- are in flight all the same). Returns the jobs added.
-- include: now

if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  if redis.call('ZCARD', KEYS[2]) == 0 then
    redis.call('DEL', KEYS[3])
  else
    redis.call('DECRBY', KEYS[3], tonumber(string.match(ARGV[1], '^(%d+):')))
  end
end
local added = 0
for i = 3, #ARGV do
  local status = redis.call('HGET', KEYS[i + 1], 'status')
  if status and status ~= 'succeeded' and status ~= 'failed' and status ~= 'cancelled' then
    added = added + redis.call('ZADD', KEYS[1], 'NX', now, ARGV[i])
  end
end
if added > 0 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return added
