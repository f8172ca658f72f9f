-- Count calls a worker admitted without the acquire script, because their group had no limit
-- and no pause: the worker holds their counts for a moment and adds them in one write.
-- KEYS: usage key prefix (the minute by Redis's clock is appended).
-- ARGV: requests, tokens, usage ttl.
-- include: now
-- include: usage

count_use(KEYS[1], ARGV[1], ARGV[2], ARGV[3])
return 1
