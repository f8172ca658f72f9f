"""The framework reference: a bare Celery task making the same SDK call as tierq, the same way.

Same as tierq's worker: Celery's Redis broker, JSON, the threads pool at the same concurrency,
`task_acks_late` with a prefetch of 1, task events on (worker and producer, as compose runs
tierq), jobs published in kombu batches of 500 (`publish_many`, as `TierqClient.submit_many`
does), and the call made with the SDK's `post` on one client per process whose connection pool
is as large as the concurrency, with retries off (worker/completions.py). What it does not do:
no limiter, job records, claims, leases, retries, metrics or log line; its answer comes back as
a Celery result (the answer's JSON) in Celery's Redis result backend, where tierq keeps its own
record and announces the end. Started by benchmarks/throughput.py as

    celery -A benchmarks.bare_celery worker -P threads -c N -Q QUEUE -E

with BARE_REDIS_URL and BARE_BASE_URL in the environment.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from typing import Any

import httpx2
import openai
from celery import Celery
from celery.result import AsyncResult

TASK = "bare.complete"
PUBLISH_BATCH = 500  # as producers/client.py

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
    worker_send_task_events=True,
    task_send_sent_event=True,
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


@app.task(name=TASK)
def complete(request: dict[str, Any]) -> Any:
    response = client().post("/chat/completions", cast_to=httpx2.Response, body=request)
    return json.loads(response.content)


def publish_many(requests: Iterable[dict[str, Any]], queue: str) -> list[AsyncResult[Any]]:
    """Send one task per request in pipelined batches, as tierq's producer does."""
    pending = list(requests)
    results: list[AsyncResult[Any]] = []
    with app.producer_or_acquire() as producer:
        for start in range(0, len(pending), PUBLISH_BATCH):
            with producer.batch(max_size=PUBLISH_BATCH + 1):
                for request in pending[start : start + PUBLISH_BATCH]:
                    results.append(
                        app.send_task(TASK, args=[request], queue=queue, producer=producer,
                                      argsrepr="(job)", kwargsrepr="{}")
                    )  # fmt: skip
    return results
