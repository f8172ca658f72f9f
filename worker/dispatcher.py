"""The dispatcher thread of a worker on a tier with fair dispatch (tierq/core/dispatch.py).

It keeps the tier's Celery queue about `queue_target_per_slot` jobs per slot of this worker
deep, topping it up from the backlogs in fair order every `IDLE_SECONDS` (at once again after
a move, so a burst drains quickly). Every worker of the tier runs one; each step is one
atomic script that reads the queue's depth, chooses jobs and pushes their messages, so
dispatchers never move the same job, and a queue topped up by several is at most one target
deeper. It runs in the worker, so there is no service of its own to deploy, and it costs the
worker one Redis call per step and no publish: a worker that dies mid-step loses and
duplicates nothing, because there is no mid-step.
"""

from __future__ import annotations

import math
import threading

import structlog

from tierq.core.dispatch import Backlogs
from tierq.core.jobstore import JobStore
from tierq.core.settings import Settings

log = structlog.get_logger("tierq.worker")

# How often an idle dispatcher looks for room on the queue and jobs in the backlogs.
IDLE_SECONDS = 0.05
# Jobs one step may move: a burst moves in steps, each one script.
STEP_MAX_JOBS = 500


class Dispatcher:
    """Moves one tier's jobs from its backlogs to its Celery queue, fairly."""

    def __init__(
        self,
        settings: Settings,
        tier: str,
        concurrency: int,
        store: JobStore,
    ) -> None:
        self._settings = settings
        self._tier = tier
        self._backlogs = Backlogs(store.redis, settings)
        self.target = max(1, math.ceil(concurrency * settings.fair_share.queue_target_per_slot))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> int:
        """Top the queue up to its target from the backlogs; how many jobs moved."""
        return len(self._backlogs.dispatch(self._tier, self.target, STEP_MAX_JOBS))

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
                # Redis away: the jobs stay in their backlogs until it is back.
                log.warning("dispatch.step_failed", error=str(error))
                moved = 0
                self._stop.wait(1.0)
            if moved:
                log.debug("dispatch.moved", jobs=moved)
