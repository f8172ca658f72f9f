-- Prelude (spliced into a script by its line `-- include: now`, see tierq/core/scripts.py):
-- `now` in seconds by Redis's clock, the one clock every worker and gateway shares.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
