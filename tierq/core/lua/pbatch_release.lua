-- Release a provider batch's claim, if the caller still holds it (tierq/core/provider_batches.py).
-- KEYS: the batch's hash. ARGV: the claimant's token. Returns 1 if released.

if redis.call('HGET', KEYS[1], 'holder') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'lease_until', '0')
redis.call('HDEL', KEYS[1], 'holder')
return 1
