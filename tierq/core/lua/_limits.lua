-- Prelude (spliced into a script by its line `-- include: limits`, see tierq/core/scripts.py):
-- a rate-limit group's effective limit, and the GCRA interval between calls it allows.
local function limit_of(configured, learned)
  -- The lower of what the operator configured and what the API's headers say it allows.
  configured = tonumber(configured)
  learned = tonumber(learned)
  if configured >= 0 and learned then return math.min(configured, learned) end
  if configured >= 0 then return configured end
  return learned or 0
end
local function interval_of(limit, headroom)
  if limit <= 0 then return 0 end
  return 60 / (limit * (1 - headroom))
end
