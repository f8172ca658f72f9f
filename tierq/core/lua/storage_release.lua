-- Stop counting a file in its tenant's storage quota (deleted, or an upload that failed).
-- KEYS: [1] the tenant's uploads (sorted set), [2] their bytes (hash), as storage_reserve.lua.
-- ARGV: [1] file id. Reply: the bytes released (0 for a file not counted).
local size = redis.call('HGET', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[1], ARGV[1])
if not size then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
local bytes = tonumber(size)
-- (never an increment of -0: Lua writes it "-0", which HINCRBY refuses)
if bytes ~= 0 then redis.call('HINCRBY', KEYS[2], 'total', -bytes) end
return bytes
