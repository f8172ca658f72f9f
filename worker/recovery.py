"""Recovery in seconds, whatever Redis's visibility timeout: leases renewed, lapsed jobs re-queued.

With the Redis transport, a message whose worker died comes back only after the visibility
timeout (an hour by default), and that timeout cannot simply be shortened: a call or a retry
countdown longer than it would then be delivered twice. tierq settles the tension by design:

- Each running job's claim carries a lease (`TIERQ_LEASE_SECONDS`, 30 s). A live worker renews
  the leases of the jobs it runs every third of that, however long a call takes.
- Each job that has not finished sits on a watch list with the time by which it must move on:
  its lease end while running, its retry time (plus a lease) while waiting to retry.
- Every worker runs a reaper (`REAP_INTERVAL_SECONDS`): jobs past their time are put back on
  their tier's queue from the message kept with the job. One script (lua/lease_reap.lua) picks
  them and moves their time on, so two reapers never re-queue the same job.

A killed worker's jobs thus run again elsewhere within a lease and a reaper interval. When the
original message does come back after the visibility timeout, the job's claim finds it
finished (or running elsewhere) and nothing is called twice.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
import structlog

from tierq.core import scripts
from tierq.core.jobstore import JobStore
from tierq.core.results import JobResult

log = structlog.get_logger("tierq.worker")

# How often a worker looks for jobs whose worker stopped renewing their leases.
REAP_INTERVAL_SECONDS = 5.0
# Jobs re-queued per reaper pass at most (the rest wait for the next pass).
REAP_BATCH = 100

Requeue = Callable[[str, dict[str, Any], int], None]


class Leases:
    """The jobs this worker process holds, their renewal, and the reaper; thread-safe."""

    def __init__(self, store: JobStore, lease_seconds: float, requeue: Requeue) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self._requeue = requeue
        self._held: dict[str, str] = {}
        self._lock = threading.Lock()
        client = store.redis
        self._renew = scripts.register(client, "lease_renew")
        self._reap = scripts.register(client, "lease_reap")
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # When this process last failed to reach Redis (renewing or reaping), and the failure
        # its reaper last logged resuming after.
        self._redis_failed_at = float("-inf")
        self._resumed_after = float("-inf")

    def hold(self, job_id: str, token: str) -> None:
        with self._lock:
            self._held[job_id] = token

    def release(self, job_id: str) -> None:
        with self._lock:
            self._held.pop(job_id, None)

    def in_flight(self) -> int:
        """Jobs this process holds claims on: the ones it is running."""
        with self._lock:
            return len(self._held)

    def renew(self) -> int:
        """Extend the leases of every job this process runs; how many were still ours."""
        with self._lock:
            held = list(self._held.items())
        if not held:
            return 0
        args: list[Any] = [self.lease_seconds]
        for job_id, token in held:
            args += [self.store.key(job_id), token, job_id]
        return int(self._renew(keys=[self.store.keys.watch], args=args))

    def reap(self) -> int:
        """Put jobs whose worker stopped renewing (or whose retry never came) back on queue."""
        found = self._reap(
            keys=[self.store.keys.watch],
            args=[self.store.keys.job_prefix, self.lease_seconds, REAP_BATCH],
        )
        picked = zip(found[::4], found[1::4], found[2::4], found[3::4], strict=True)
        for job_id, message, record, generation in picked:
            # The attempt that was running (or the retry that never came) counts as spent.
            attempts = JobResult.from_json(record).attempts if record else 0
            superseding = {**json.loads(message), "generation": int(generation)}
            self._requeue(job_id.decode(), superseding, attempts)
            log.warning("job.requeued", job_id=job_id.decode(), reason="lease lapsed")
        return len(found) // 4

    def start(self) -> None:
        """Renew, and reap, in two background threads until `stop()`.

        Two threads, so a re-queue that waits on the broker never delays a renewal.
        """
        self._threads = [
            threading.Thread(target=self._renew_loop, name="tierq-renew", daemon=True),
            threading.Thread(target=self._reap_loop, name="tierq-reap", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease_seconds / 3):
            try:
                self.renew()
            except redis.RedisError as error:
                self._redis_failed_at = time.monotonic()
                log.warning("leases.redis_unavailable", error=str(error))

    def _reap_loop(self) -> None:
        while not self._stop.wait(REAP_INTERVAL_SECONDS):
            # After Redis was away, leases lapsed that live workers are about to renew: give
            # them a whole lease to do so before treating any job as abandoned.
            if time.monotonic() - self._redis_failed_at < self.lease_seconds:
                continue
            failed_at = self._redis_failed_at
            try:
                requeued = self.reap()
            except redis.RedisError as error:
                self._redis_failed_at = time.monotonic()
                log.warning("leases.redis_unavailable", error=str(error))
            except Exception as error:  # a re-queue that could not be published
                log.error("leases.requeue_failed", error=repr(error))
            else:
                if failed_at > self._resumed_after:
                    # The first pass since Redis came back: operators (and tests) see when
                    # lapsed leases were judged again, and what that re-queued.
                    self._resumed_after = failed_at
                    log.info("leases.reaping_resumed", requeued=requeued)
