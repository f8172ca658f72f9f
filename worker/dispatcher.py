"""The dispatcher thread of a worker on a tier with fair dispatch (tierq/core/dispatch.py).

It keeps the tier's Celery queue about `queue_target_per_slot` jobs per slot of this worker
deep, topping it up from the backlogs in fair order every `IDLE_SECONDS` (at once again after
a move, so a burst drains quickly). Every worker of the tier runs one; the script that takes
jobs is atomic, so they never take the same job, and a queue topped up by several is at most
one target deeper. It runs in the worker, so there is no service of its own to deploy, and
the jobs it moves were already recorded and watched: a worker that dies mid-move loses none
(the reaper re-queues them) and runs none twice (the job's claim).
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable
from typing import Any

import structlog

from tierq.core.dispatch import Backlogs
from tierq.core.jobstore import JobStore
from tierq.core.settings import Settings

log = structlog.get_logger("tierq.worker")

# How often an idle dispatcher looks for room on the queue and jobs in the backlogs.
IDLE_SECONDS = 0.05
# Jobs one step may move: a burst moves in steps, each one script and one publish batch.
STEP_MAX_JOBS = 500

Publish = Callable[[list[tuple[str, dict[str, Any]]]], None]


class Dispatcher:
    """Moves one tier's jobs from its backlogs to its Celery queue, fairly."""

    def __init__(
        self,
        settings: Settings,
        tier: str,
        concurrency: int,
        store: JobStore,
        publish: Publish,
    ) -> None:
        self._settings = settings
        self._tier = tier
        self._queue = settings.queue_for(tier)
        self._store = store
        self._backlogs = Backlogs(store.redis, settings)
        self._publish = publish
        self.target = max(1, math.ceil(concurrency * settings.fair_share.queue_target_per_slot))
        self._watch_seconds = 2 * settings.lease_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> int:
        """Top the queue up to its target from the backlogs; how many jobs moved."""
        room = self.target - int(self._store.redis.llen(self._queue))
        if room <= 0:
            return 0
        taken = self._backlogs.take(self._tier, min(room, STEP_MAX_JOBS), self._watch_seconds)
        if not taken.job_ids:
            return 0
        pipe = self._store.redis.pipeline(transaction=False)
        for job_id in taken.job_ids:
            pipe.hget(self._store.key(job_id), "message")
        kept = pipe.execute()
        jobs = [
            (job_id, json.loads(message))
            for job_id, message in zip(taken.job_ids, kept, strict=True)
            if message is not None  # expired meanwhile: nothing to run
        ]
        self._publish(jobs)
        self._store.unwatch_published(taken.job_ids, taken.watch_until)
        return len(jobs)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tierq-dispatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        moved = 0
        while not self._stop.wait(0 if moved else IDLE_SECONDS):
            try:
                moved = self.step()
            except Exception as error:
                # Redis or the broker away: the jobs stay in their backlogs, or, once taken, on
                # the watch list, whose reaper re-queues them if their publish never came.
                log.warning("dispatch.step_failed", error=str(error))
                moved = 0
                self._stop.wait(1.0)
            if moved:
                log.debug("dispatch.moved", jobs=moved)
