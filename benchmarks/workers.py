"""Workers as docker-compose.yml runs them: metrics served, Celery task events on.

Every benchmark starts tierq's workers from `worker_env`, so what they measure is the
deployed set-up, not a stripped one: `TIERQ_METRICS_PORT` set (each worker serves /metrics and
/healthz on a port of its own here, as compose's 9808 in each container) and
`TIERQ_CELERY_EVENTS=true` (three publishes per job, for Flower). The shared limiter is on
unless a scenario says otherwise; which limits it has comes from the scenario.
"""

from __future__ import annotations

import functools
import os
import uuid
from pathlib import Path

import redis

from tierq.core.keys import Keys
from tierq.core.settings import Settings
from tierq.devkit.processes import ManagedProcess, free_port, start_worker, worker_ready

# What every tierq row of a table ran with, besides the scenario's limits.
AS_COMPOSE = "metrics served, Celery events on"


def worker_env(redis_url: str, base_url: str, **settings: str) -> dict[str, str]:
    """The environment of a fleet of workers isolated from any other run on the same Redis.

    `settings` are extra `TIERQ_*` variables, named without the prefix (`LIMITER__ENABLED`).
    """
    isolation = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERQ_", "OPENAI_"))}
    env.update(
        TIERQ_REDIS_URL=redis_url,
        OPENAI_BASE_URL=base_url,
        OPENAI_API_KEY="sk-benchmark",
        TIERQ_QUEUE_PREFIX=f"bench-{isolation}.",
        TIERQ_KEY_PREFIX=f"bench-{isolation}:",
        TIERQ_LOG_FORMAT="json",
        TIERQ_LOG_LEVEL="INFO",
        TIERQ_CELERY_EVENTS="true",
        TIERQ_METRICS_HOST="127.0.0.1",
    )
    env.update({f"TIERQ_{name}": value for name, value in settings.items()})
    return env


def start_fleet(
    env: dict[str, str], workers: int, concurrency: int, logs: Path, tier: str = "fast"
) -> list[ManagedProcess]:
    """`workers` processes of `tier`, each serving metrics on its own port; all ready."""
    fleet = [
        start_worker(
            tier,
            logs / f"worker-{uuid.uuid4().hex[:6]}.log",
            {**env, "TIERQ_METRICS_PORT": str(free_port())},
            concurrency=concurrency,
            wait=False,
        )
        for _ in range(workers)
    ]
    try:
        for worker in fleet:
            worker.wait_until(functools.partial(worker_ready, worker))
    except BaseException:
        for worker in fleet:
            worker.stop()
        raise
    return fleet


def learned_limits(settings: Settings, model: str) -> dict[str, str]:
    """The limits the fleet learned from the API's headers for `model`'s group ({}: none)."""
    client = redis.Redis.from_url(settings.redis_url.get_secret_value(), decode_responses=True)
    with client:
        state = client.hgetall(Keys(settings.key_prefix).ratelimit(settings.limit_group_for(model)))
    return {str(key): str(value) for key, value in state.items() if str(key).startswith("learned")}
