"""The other reference: a bare Celery task making the same SDK call, on the threads pool.

No tiers, limiter, job records, claims or retries: Celery's Redis broker and result backend,
JSON, and a task that calls `chat.completions.create` with one pooled client per process and
returns the completion. Started by benchmarks/throughput.py as

    celery -A benchmarks.bare_celery worker -P threads -c N -Q QUEUE

with BARE_REDIS_URL and BARE_BASE_URL in the environment.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import httpx2
import openai
from celery import Celery

app = Celery(
    "bare",
    broker=os.environ.get("BARE_REDIS_URL", "redis://127.0.0.1:6379/13"),
    backend=os.environ.get("BARE_REDIS_URL", "redis://127.0.0.1:6379/13"),
)
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
    result_expires=3600,
)


@functools.cache
def client() -> openai.OpenAI:
    size = int(os.environ.get("BARE_CONCURRENCY", "100"))
    return openai.OpenAI(
        base_url=os.environ["BARE_BASE_URL"],
        api_key="sk-benchmark",
        max_retries=0,
        http_client=openai.DefaultHttpxClient(
            limits=httpx2.Limits(max_connections=size, max_keepalive_connections=size)
        ),
    )


@app.task(name="bare.complete")
def complete(messages: list[dict[str, Any]]) -> dict[str, Any]:
    completion = client().chat.completions.create(model="gpt-4o-mini", messages=messages)
    return completion.model_dump(mode="json")
