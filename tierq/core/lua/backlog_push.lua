-- Put submitted jobs of one tier in their backlogs (fair dispatch, tierq/core/dispatch.py).
-- KEYS: the tier's clock (hash), its job costs (hash), its rendered queue messages (hash).
-- ARGV: backlog key prefix (priority:tenant follow), tenants key prefix (priority follows),
-- then six per job: job id, priority, tenant, cost in tokens, order (a submission time), its
-- queue message as kombu would publish it (tierq/core/queue_entry.py).
-- A tenant (or a class) with nothing waiting joins at the current virtual time, so idle time
-- banks no credit: the share it gets is of the time it waits.

local clock, costs, entries = KEYS[1], KEYS[2], KEYS[3]
for i = 3, #ARGV, 6 do
  local id, priority, tenant = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local tenants = ARGV[2] .. priority
  local class_was_idle = redis.call('ZCARD', tenants) == 0
  if not redis.call('ZSCORE', tenants, tenant) then
    local now_vt = tonumber(redis.call('HGET', clock, 'tenants:' .. priority)) or 0
    redis.call('ZADD', tenants, now_vt, tenant)
  end
  if class_was_idle then
    local now_vt = tonumber(redis.call('HGET', clock, 'classes')) or 0
    local class_vt = tonumber(redis.call('HGET', clock, 'class:' .. priority)) or 0
    if class_vt < now_vt then redis.call('HSET', clock, 'class:' .. priority, now_vt) end
  end
  redis.call('ZADD', ARGV[1] .. priority .. ':' .. tenant, tonumber(ARGV[i + 4]), id)
  redis.call('HSET', costs, id, ARGV[i + 3])
  redis.call('HSET', entries, id, ARGV[i + 5])
end
return 1
