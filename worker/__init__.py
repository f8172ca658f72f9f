"""tierq's worker side (`tierq.worker`): the Celery worker that runs Chat Completions calls, and
what only it does: admission under the shared limits, the API call, streaming deltas, leases and
recovery, worker metrics and health. It imports the shared core (`tierq.core`), never the
producer side (`tierq.producers`).
"""
