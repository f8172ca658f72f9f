-- Reserve room in a tenant's storage quota for an uploaded file (gateway storage_quota.py).
-- KEYS: [1] the tenant's uploads (sorted set: file id -> when it expires, by Redis's clock),
--       [2] their bytes (hash: file id -> bytes, and `total`).
-- ARGV: [1] file id, [2] bytes to add (0 to only count the file), [3] seconds the file lives
--       from now, [4] most files, [5] most bytes, [6] seconds both keys live unused.
-- Reply: {1, files, bytes} with the file counted; or {0, "files"|"bytes", files, bytes}, the
-- usage without it, when it would pass a limit (nothing changes then). A file already counted
-- only grows; a new one needs a free file and at least one free byte.
-- Entries whose time has passed are dropped first: files expire by TTL without telling anyone,
-- and each entry is dropped once, so the cost is amortised over the uploads.
-- include: now
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
if #expired > 0 then
  local freed = 0
  for _, id in ipairs(expired) do
    freed = freed + tonumber(redis.call('HGET', KEYS[2], id) or '0')
    redis.call('HDEL', KEYS[2], id)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  -- (never an increment of -0: Lua writes it "-0", which HINCRBY refuses)
  if freed ~= 0 then redis.call('HINCRBY', KEYS[2], 'total', -freed) end
end
local files = redis.call('ZCARD', KEYS[1])
local total = tonumber(redis.call('HGET', KEYS[2], 'total') or '0')
local adding = tonumber(ARGV[2])
local known = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not known then
  if files + 1 > tonumber(ARGV[4]) then return {0, 'files', files, total} end
  if total >= tonumber(ARGV[5]) then return {0, 'bytes', files, total} end
  files = files + 1
end
if total + adding > tonumber(ARGV[5]) then return {0, 'bytes', files - (known and 0 or 1), total} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('HINCRBY', KEYS[2], ARGV[1], adding)
if adding ~= 0 then redis.call('HINCRBY', KEYS[2], 'total', adding) end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('EXPIRE', KEYS[2], ARGV[6])
return {1, files, total + adding}
