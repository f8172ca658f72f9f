-- Move jobs of one tier from their backlogs onto its Celery queue, by weighted fair share in
-- tokens, until the queue holds `depth` messages or `n` jobs have moved.
-- KEYS: the tier's clock (hash), its job costs (hash), its rendered queue messages (hash),
-- the tier's Celery queue (list), the watch list (zset).
-- ARGV: backlog key prefix, tenants key prefix, job key prefix, n, depth, priority weights
-- (JSON), tenant weights (JSON), the priorities highest first (comma-separated), seconds a
-- moved job may wait on the queue before the reaper puts it there again.
-- Returns the ids of the jobs moved.
--
-- Start-time fair queueing, twice: each class, and each tenant within a class, has a virtual
-- time that grows by a job's tokens over its weight when one of its jobs is taken; the next
-- job comes from the class with the earliest time (ties: the higher class), then from that
-- class's tenant with the earliest time (a sorted set: O(log tenants)). A taken job's message,
-- rendered by its producer as kombu would publish it (tierq/core/queue_entry.py), is pushed
-- onto the queue in this same script: a job is always in a backlog or on the queue, never
-- between, whoever dies when. A job no longer queued (cancelled, expired) is dropped unpaid; a
-- queued one without a rendered message (pushed by an older producer) is handed to the reaper,
-- which re-queues it from its record's kept message. A moved job goes on the watch list, due
-- when it should long have been claimed: a worker killed with it reserved but not started
-- (kombu returns such a message only after Redis's visibility timeout) costs it that wait, not
-- the visibility timeout; a copy put back while the first still waits is stale when it runs.

-- include: now

local clock, costs, entries, queue, watch = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local n = math.min(tonumber(ARGV[4]), tonumber(ARGV[5]) - redis.call('LLEN', queue))
local class_weights = cjson.decode(ARGV[6])
local tenant_weights = cjson.decode(ARGV[7])
local classes = {}
for priority in string.gmatch(ARGV[8], '[^,]+') do table.insert(classes, priority) end

local out = {}
local steps = n * 4 + 16 -- dropped (cancelled) jobs cost a step each: bounded work per call
while #out < n and steps > 0 do
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
    local entry = redis.call('HGET', entries, id)
    redis.call('HDEL', costs, id)
    redis.call('HDEL', entries, id)
    local queued = redis.call('HGET', ARGV[3] .. id, 'status') == 'queued'
    if queued and not entry then redis.call('ZADD', watch, now, id) end
    if entry and queued then
      local weight = tonumber(tenant_weights[tenant]) or 1
      redis.call('ZADD', tenants, tenant_vt + cost / weight, tenant)
      redis.call('HSET', clock, 'tenants:' .. class, tenant_vt)
      local class_weight = tonumber(class_weights[class]) or 1
      redis.call('HSET', clock, 'class:' .. class, class_vt + cost / class_weight)
      redis.call('HSET', clock, 'classes', class_vt)
      redis.call('LPUSH', queue, entry)
      redis.call('ZADD', watch, now + tonumber(ARGV[9]), id)
      table.insert(out, id)
    end
  end
  if redis.call('ZCARD', backlog) == 0 then redis.call('ZREM', tenants, tenant) end
end
return out
