"""structlog set up once per process: one JSON line per event, or readable lines on a terminal.

Standard-library loggers (celery, kombu, redis, openai) go through the same formatter, so an
operator's log pipeline sees one format. Per-job context (job id, tier, model, attempt) is
bound in Celery's `task_prerun` and cleared in `task_postrun` (see `worker.cli`). The SDK's and
the HTTP client's debug loggers are held at WARNING: at DEBUG they print request bodies, which
carry prompts.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

from tierq.core.settings import Settings

# Loggers whose DEBUG output would carry prompts or headers: the SDK and HTTP clients print
# request bodies, Celery's pool prints each task's arguments (the whole job request).
QUIET_LOGGERS = ("openai", "httpx", "httpx2", "httpcore", "urllib3", "celery.pool")
# Celery's own line per task received and per task done: tierq logs one canonical line per job
# (job.finished) with more in it, so these two are held at WARNING (their errors still show).
PER_TASK_LOGGERS = ("celery.app.trace", "celery.worker.strategy")


def configure_logging(settings: Settings, *, stream: Any = None) -> None:
    """Route structlog and the standard library through one renderer on `stream` (stderr)."""
    stream = stream or sys.stderr
    use_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not stream.isatty()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    structlog.configure(
        processors=[
            # Drop events below the level before any work is done on them (job.started is
            # DEBUG and runs once per job).
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for name in (*QUIET_LOGGERS, *PER_TASK_LOGGERS):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
