-- Move a batch on. KEYS: batch. ARGV: expected status, new status, new object. Applied only if
-- the status is still the expected one, so a cancel and a finalizer pass never overwrite each
-- other. Returns 1 if applied.
if redis.call('HGET', KEYS[1], 'status') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'object', ARGV[3])
return 1
