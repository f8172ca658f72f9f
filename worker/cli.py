"""`tierq worker`: start a Celery worker that consumes one tier's queue.

The pool is Celery's `threads` pool: an API call is almost all waiting, and threads let one
process keep a tier's full concurrency in flight over one shared HTTP connection pool (prefork
would need a process per call in flight; gevent measured 3x slower here because Celery's
Redis connections are per greenlet). Concurrency comes from the tier's settings unless given.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from typing import Any

import click
import redis
import structlog
from celery import signals

from tierq.core.celery_app import TASK_NAME, create_app, job_reprs
from tierq.core.exit_codes import ExitCodeCommand
from tierq.core.jobstore import JobStore, connect
from tierq.core.logging import configure_logging
from tierq.core.ratelimit import SharedRateLimiter
from tierq.core.settings import Settings, get_settings
from tierq.worker.admission import AdmissionGate
from tierq.worker.batcher import Batcher
from tierq.worker.completions import CallOutcome, build_client, call_chat_completions
from tierq.worker.dispatcher import Dispatcher
from tierq.worker.execution import JobRunner
from tierq.worker.monitoring import WorkerMonitor
from tierq.worker.recovery import Leases
from tierq.worker.tasks import register_tasks

# The timeout of a Batch API call (an upload, a download): longer than a job's.
BATCH_CALL_TIMEOUT_SECONDS = 300.0


def _bind_job_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    structlog.contextvars.clear_contextvars()
    attempt = task.request.retries + 1 if task is not None else None
    structlog.contextvars.bind_contextvars(job_id=task_id, attempt=attempt)


def _clear_job_context(**_: Any) -> None:
    structlog.contextvars.clear_contextvars()


def _announce_ready(sender: Any = None, **_: Any) -> None:
    # Scripts and tests wait for this line before they count on the worker.
    structlog.get_logger("tierq.worker").info(
        "worker.ready", node=getattr(sender, "hostname", None)
    )


def _keep_our_logging(**_: Any) -> None:
    """Connected to `setup_logging`: its mere presence stops Celery configuring logging."""


def worker_argv(settings: Settings, tier: str, concurrency: int, loglevel: str) -> list[str]:
    return [
        "worker",
        f"--concurrency={concurrency}",
        f"--queues={settings.queue_for(tier)}",
        # Unique per process, so several workers of a tier can share a host.
        f"--hostname={tier}-{os.getpid()}@%h",
        # Mingle and gossip sync state between workers at start-up and on every heartbeat;
        # tier workers share nothing that needs it, and it costs start-up time and CPU.
        "--without-mingle",
        "--without-gossip",
        f"--loglevel={loglevel}",
    ]


# The monitor's Redis calls (probe, heartbeat, scrape) give up this fast, without retries.
MONITOR_REDIS_TIMEOUT_SECONDS = 2.0


def run_worker(tier: str, concurrency: int | None, loglevel: str | None) -> None:
    settings = get_settings()
    if tier not in settings.tiers:
        raise click.BadParameter(
            f"unknown tier {tier!r}; tiers: {', '.join(settings.tiers)}", param_hint="--tier"
        )
    tier_settings = settings.tiers[tier]
    concurrency = concurrency or tier_settings.concurrency
    configure_logging(settings)

    app = create_app(settings)
    store = JobStore.from_settings(settings)
    limiter = SharedRateLimiter(store.redis, settings) if settings.limiter.enabled else None
    client = build_client(
        settings, max_connections=concurrency, timeout_seconds=settings.call_timeout_for(tier)
    )
    call: Callable[[dict[str, Any]], CallOutcome] = functools.partial(
        call_chat_completions, client, time_limit_seconds=tier_settings.time_limit_seconds
    )

    def requeue(job_id: str, message: dict[str, Any], attempts: int) -> None:
        # The reaper's re-queue: the kept message, on the job's tier queue; the attempts made
        # so far stay spent, so the next one is attempt `attempts + 1`.
        app.send_task(
            TASK_NAME,
            args=[message],
            task_id=job_id,
            retries=attempts,
            **job_reprs(job_id),
        )

    leases = Leases(store, settings.lease_seconds, requeue)

    dispatcher = (
        Dispatcher(settings, tier, concurrency, store) if tier_settings.fair_dispatch else None
    )
    # Far deadlines through the provider's Batch API; its own client: a batch's files are
    # bigger, and its calls slower, than a job's.
    batcher = (
        Batcher(
            settings,
            tier,
            store,
            build_client(settings, max_connections=2, timeout_seconds=BATCH_CALL_TIMEOUT_SECONDS),
        )
        if settings.spend.batch
        else None
    )
    runner = JobRunner(
        settings,
        tier=tier,
        call=call,
        store=store,
        gate=AdmissionGate(settings, limiter),
        leases=leases,
    )
    register_tasks(app, runner)
    # Celery's threads pool, minus the final join of calls given up on (worker/pool.py).
    app.conf.worker_pool = "tierq.worker.pool:TaskPool"
    if tier_settings.rate_limit:
        # Celery's rate limit is per worker process: a per-process cap, not a fleet-wide one.
        app.conf.task_annotations = {"tierq.complete": {"rate_limit": tier_settings.rate_limit}}

    consumer: dict[str, Any] = {}
    signals.worker_ready.connect(lambda sender, **_: consumer.update(it=sender), weak=False)
    monitor = WorkerMonitor(
        settings,
        connect(settings, socket_timeout_seconds=MONITOR_REDIS_TIMEOUT_SECONDS, retries=0),
        tier=tier,
        concurrency=concurrency,
        in_flight=leases.in_flight,
        broker_connected=lambda: _consumer_connected(consumer.get("it")),
    )
    signals.setup_logging.connect(_keep_our_logging, weak=False)
    signals.task_prerun.connect(_bind_job_context, weak=False)
    signals.task_postrun.connect(_clear_job_context, weak=False)
    signals.worker_ready.connect(_announce_ready, weak=False)
    structlog.get_logger("tierq.worker").info(
        "worker.starting",
        tier=tier,
        queue=settings.queue_for(tier),
        models=tier_settings.models,
        concurrency=concurrency,
        rate_limit=tier_settings.rate_limit,
        shared_limiter=settings.limiter.enabled,
    )
    # SIGTERM takes Celery's cold shutdown with a soft wait (worker_soft_shutdown_timeout):
    # running jobs finish within the grace period, the rest go back to the queue. Celery's
    # default (a warm shutdown) would wait for every running job however long it takes.
    os.environ["REMAP_SIGTERM"] = "SIGQUIT"
    monitor.start()
    leases.start()
    if dispatcher is not None:
        dispatcher.start()
    if batcher is not None:
        batcher.start()
    code: int | str | None = 0
    try:
        app.worker_main(worker_argv(settings, tier, concurrency, loglevel or settings.log_level))
    except SystemExit as exit_:
        code = exit_.code
    finally:
        if dispatcher is not None:
            dispatcher.stop()
        if batcher is not None:
            batcher.stop()
        leases.stop()
        monitor.stop()
        if limiter is not None:
            # The last second's use of groups with no known limit, before os._exit drops it.
            with contextlib.suppress(redis.RedisError):
                limiter.flush()
    # Exit now: the interpreter would otherwise join pool threads still in a call that the
    # shutdown gave up on (their jobs are back on the queue).
    logging.shutdown()
    os._exit(code if isinstance(code, int) else 1)


def _consumer_connected(consumer: Any) -> bool:
    """Celery's consumer has a live broker connection (True before it has started: the
    liveness grace covers start-up)."""
    if consumer is None:
        return True
    connection = getattr(consumer, "connection", None)
    return bool(connection is not None and connection.connected)


@click.command("worker", cls=ExitCodeCommand)
@click.option("--tier", required=True, help="The tier whose queue this worker consumes.")
@click.option(
    "--concurrency",
    type=click.IntRange(1, 1000),
    default=None,
    help="Calls in flight in this process (threads); default: the tier's `concurrency`.",
)
@click.option(
    "--loglevel",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default=None,
    help="Log level; default: TIERQ_LOG_LEVEL.",
)
def worker_command(tier: str, concurrency: int | None, loglevel: str | None) -> None:
    """Run a worker for one tier: it takes jobs from that tier's queue only."""
    # A wrong setting (or a metrics port in use) ends it as in every command: `error: ...`
    # and exit 2 (ExitCodeCommand); once running, Celery's own exit status is passed through.
    run_worker(tier, concurrency, loglevel.upper() if loglevel else None)
