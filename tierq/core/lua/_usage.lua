-- Prelude (spliced into a script by its line `-- include: usage`, see tierq/core/scripts.py):
-- count calls and tokens in a rate-limit group's usage counter of this minute by Redis's clock
-- (`now`, from the `now` prelude), for `tierq limits` and `tierq stats`. Counted whether or not
-- the group has a limit: the counters are what the operator reads, never what admits a call.
local function count_use(prefix, requests, tokens, ttl)
  local usage = prefix .. math.floor(now / 60)
  redis.call('HINCRBY', usage, 'requests', requests)
  redis.call('HINCRBY', usage, 'tokens', tokens)
  redis.call('EXPIRE', usage, ttl)
end
