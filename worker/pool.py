"""Celery's threads pool, stopping without waiting for calls it has given up on.

On shutdown Celery first waits `worker_soft_shutdown_timeout` (the grace period) for running
jobs, then hands the unfinished ones back to the queue. Its threads pool then joins every
thread, so a call still in flight would hold the process for as long as it runs, past any
grace an orchestrator allows. This pool stops without that join; `tierq worker` then exits
at once (`os._exit`, skipping the interpreter's own join of pool threads). A job whose call
was cut runs again elsewhere: its message is back on the queue, and its claim's lease lapses.
"""

from __future__ import annotations

from celery.concurrency.thread import TaskPool as ThreadsTaskPool


class TaskPool(ThreadsTaskPool):
    def on_stop(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)  # type: ignore[attr-defined]
