"""How often a worker announces itself in Redis (`Keys.workers`), and when its silence means
it is gone: the worker writes at this pace (tierq.worker.monitoring) and `tierq stats` reads
with the same figures, so both sides take them from here.
"""

# Seconds between a worker's heartbeats.
HEARTBEAT_SECONDS = 5.0
# Seconds without a heartbeat after which a worker counts as gone (three missed beats).
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
