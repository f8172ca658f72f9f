"""The Celery app: Redis transport, one queue per tier, settings chosen for long I/O-bound calls.

Producers build the same app to publish (by task name; they never import the task bodies), so
both sides agree on serializer, routing and transport options. Each setting has its reason
beside it.
"""

from __future__ import annotations

from typing import Any, TypedDict

from celery import Celery

from tierq.core.redis_clients import broker_connection
from tierq.core.settings import Settings

TASK_NAME = "tierq.complete"


class JobReprs(TypedDict):
    argsrepr: str
    kwargsrepr: str


def job_reprs(job_id: str | None) -> JobReprs:
    """The `argsrepr`/`kwargsrepr` of every tierq message: the job's name, not its content.

    Celery copies these into the message headers and the `task-sent`/`task-received` events
    (Flower shows them); left unset, it fills them with a repr of the job envelope, which holds
    the request. Every publish path passes these, so no part of a request reaches a header or
    an event whatever the repr would elide.
    """
    return JobReprs(argsrepr=f"(job {job_id})", kwargsrepr="{}")


# Seconds between Redis pings on the broker connection, so a dead socket is noticed early.
BROKER_HEALTH_CHECK_SECONDS = 25


def celery_config(settings: Settings) -> dict[str, Any]:
    broker = broker_connection(settings)
    return {
        "broker_url": broker.url,
        # kombu's Redis transport (or its Sentinel variant) with a fix that keeps a worker
        # alive through a Redis restart or failover.
        "broker_transport": broker.transport,
        # Job records and results are tierq's own (tierq.core.jobstore): Celery stores nothing.
        # The job store's client retries on connection errors and expires records after
        # result_ttl_seconds, the two things result_backend_always_retry/result_expires give.
        "result_backend": None,
        "task_ignore_result": True,
        # JSON only: a pickle payload on a shared broker would run code in every worker.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        # Ack after the call: a worker that dies mid-call leaves the job to be delivered again.
        "task_acks_late": True,
        # A child process lost mid-task (prefork) requeues its job instead of failing it.
        "task_reject_on_worker_lost": True,
        # A job that failed for good is recorded as failed; redelivering it would call again.
        "task_acks_on_failure_or_timeout": True,
        # Reserve no more jobs than the pool runs at once: no hoarding while other workers idle.
        "worker_prefetch_multiplier": 1,
        # Keep trying to reach the broker at start-up and after a loss, rather than exiting.
        "broker_connection_retry_on_startup": True,
        "broker_connection_retry": True,
        "broker_connection_max_retries": None,
        "broker_transport_options": {
            # Redelivery delay for an unacked job; validated against timeouts and retry waits.
            "visibility_timeout": settings.visibility_timeout_seconds,
            # Ping idle connections so a half-open socket is found before a publish needs it.
            "health_check_interval": BROKER_HEALTH_CHECK_SECONDS,
            # TCP keepalive: NATs and load balancers drop silent connections.
            "socket_keepalive": True,
            "socket_connect_timeout": 5,
            # No command-level retry on a timeout: a retried LPUSH could enqueue a job twice,
            # and kombu batches publishes (one round trip for many) only without it. Lost
            # connections are retried by Celery (below, and broker_connection_retry).
            "retry_on_timeout": False,
            # With Sentinels: the primary's name, and the Sentinels' own password if any.
            **broker.transport_options,
        },
        # A publish (a submission, or a retry re-queued with its countdown) that meets a broker
        # blip is retried for about 30 s before it fails loudly; it is never dropped silently.
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 30,
            "interval_start": 0,
            "interval_step": 0.25,
            "interval_max": 1.0,
        },
        # Jobs are routed by their tier (set by the producer) to that tier's queue.
        "task_routes": (_router(settings),),
        "task_default_queue": settings.queue_for(next(iter(settings.tiers))),
        "task_create_missing_queues": True,
        # tierq configures logging itself (structlog); Celery must not replace the root logger.
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        # On SIGTERM (remapped to Celery's cold shutdown by `tierq worker`), running jobs get
        # this long to finish before the rest are handed back to the queue.
        "worker_soft_shutdown_timeout": settings.shutdown_grace_seconds,
        # Status is recorded by tierq (running, retrying, ...); Celery's STARTED state is unused.
        "task_track_started": False,
        # Task events feed Flower; each costs a publish, so an operator turns them on.
        "worker_send_task_events": settings.celery_events,
        "task_send_sent_event": settings.celery_events,
        "enable_utc": True,
        "timezone": "UTC",
    }


def _router(settings: Settings) -> Any:
    """Celery router: a job goes to the queue of the tier its producer chose."""

    def route_job(
        name: str, args: Any, kwargs: Any, options: Any, task: Any = None, **extra: Any
    ) -> dict[str, str] | None:
        if name != TASK_NAME or not args or not isinstance(args[0], dict):
            return None
        tier = args[0].get("tier")
        return {"queue": settings.queue_for(tier)} if isinstance(tier, str) else None

    return route_job


def create_app(settings: Settings) -> Celery:
    """A Celery app for these settings; neither side uses a module-level global app."""
    app = Celery("tierq", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
