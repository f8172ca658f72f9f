-- Claim a provider batch for one step (submit it, poll or collect it) if no one holds it
-- (tierq/core/provider_batches.py). KEYS: the batch's hash. ARGV: the state it must be in,
-- seconds to hold it, the claimant's token. Returns 1 if claimed. A claim lapses on its own,
-- so a worker that dies holding one only delays the step by its length; only its holder may
-- release it early.
-- include: now

local s = redis.call('HMGET', KEYS[1], 'state', 'lease_until')
if s[1] ~= ARGV[1] or (tonumber(s[2]) or 0) > now then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', tostring(now + tonumber(ARGV[2])), 'holder', ARGV[3])
return 1
