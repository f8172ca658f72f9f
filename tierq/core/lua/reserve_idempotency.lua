-- Reserve an idempotency key. KEYS: idempotency key. ARGV: "job id|fingerprint", ttl.
-- Returns the key's first job, or nil after taking it for this one.
local taken = redis.call('GET', KEYS[1])
if taken then return taken end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return false
