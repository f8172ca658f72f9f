-- Take up to n jobs of one tier out of their backlogs, by weighted fair share in tokens.
-- KEYS: the tier's clock (hash), its job costs (hash), the watch list (zset).
-- ARGV: backlog key prefix, tenants key prefix, job key prefix, n, seconds the taken jobs
-- stay on the watch list, priority weights (JSON), tenant weights (JSON), the priorities
-- highest first (comma-separated).
-- Returns {the watch list's due time, job id...}.
--
-- Start-time fair queueing, twice: each class, and each tenant within a class, has a virtual
-- time that grows by a job's tokens over its weight when one of its jobs is taken; the next
-- job comes from the class with the earliest time (ties: the higher class), then from that
-- class's tenant with the earliest time (a sorted set: O(log tenants)). A taken job goes on
-- the watch list in the same step, so a dispatcher that dies before publishing it loses
-- nothing: the reaper re-queues it. A job no longer queued (cancelled) is dropped unpaid.
-- include: now

local clock, costs, watch = KEYS[1], KEYS[2], KEYS[3]
local n = tonumber(ARGV[4])
local due = now + tonumber(ARGV[5])
local class_weights = cjson.decode(ARGV[6])
local tenant_weights = cjson.decode(ARGV[7])
local classes = {}
for priority in string.gmatch(ARGV[8], '[^,]+') do table.insert(classes, priority) end

local out = {tostring(due)}
local taken = 0
local steps = n * 4 + 16 -- dropped (cancelled) jobs cost a step each: bounded work per call
while taken < n and steps > 0 do
  steps = steps - 1
  local class, class_vt
  for _, priority in ipairs(classes) do
    if redis.call('ZCARD', ARGV[2] .. priority) > 0 then
      local vt = tonumber(redis.call('HGET', clock, 'class:' .. priority)) or 0
      if class == nil or vt < class_vt then class, class_vt = priority, vt end
    end
  end
  if class == nil then break end
  local tenants = ARGV[2] .. class
  local first = redis.call('ZRANGE', tenants, 0, 0, 'WITHSCORES')
  local tenant, tenant_vt = first[1], tonumber(first[2])
  local backlog = ARGV[1] .. class .. ':' .. tenant
  local id = redis.call('ZRANGE', backlog, 0, 0)[1]
  if id then
    redis.call('ZREM', backlog, id)
    local cost = tonumber(redis.call('HGET', costs, id)) or 1
    redis.call('HDEL', costs, id)
    if redis.call('HGET', ARGV[3] .. id, 'status') == 'queued' then
      local weight = tonumber(tenant_weights[tenant]) or 1
      redis.call('ZADD', tenants, tenant_vt + cost / weight, tenant)
      redis.call('HSET', clock, 'tenants:' .. class, tenant_vt)
      local class_weight = tonumber(class_weights[class]) or 1
      redis.call('HSET', clock, 'class:' .. class, class_vt + cost / class_weight)
      redis.call('HSET', clock, 'classes', class_vt)
      redis.call('ZADD', watch, due, id)
      table.insert(out, id)
      taken = taken + 1
    end
  end
  if redis.call('ZCARD', backlog) == 0 then redis.call('ZREM', tenants, tenant) end
end
return out
