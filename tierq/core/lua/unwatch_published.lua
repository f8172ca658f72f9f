-- Take published jobs off the watch list, unless a worker has moved them on since.
-- KEYS: watch. ARGV: the due time the producer set, job ids. Removes each job still due at
-- exactly that time (one a worker has claimed or rescheduled since has another).
local due = tonumber(ARGV[1])
for i = 2, #ARGV do
  if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[i])) == due then
    redis.call('ZREM', KEYS[1], ARGV[i])
  end
end
return 0
