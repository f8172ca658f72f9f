-- Keep a counted file counted for at least this long (a batch extending its input's life).
-- KEYS: [1] the tenant's uploads (sorted set), [2] their bytes (hash), as storage_reserve.lua.
-- ARGV: [1] file id, [2] seconds from now, [3] seconds both keys live unused.
-- Reply: 1 if the file is counted (its expiry now at least that far), 0 if it is not.
-- include: now
local until_ = now + tonumber(ARGV[2])
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score then return 0 end
if tonumber(score) < until_ then redis.call('ZADD', KEYS[1], until_, ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
