"""A fair tier's queue messages are rendered by the producer (tierq/core/queue_entry.py) and
pushed by a Redis script, not published by Celery; they must be the messages Celery and
kombu would have put on the queue, or a worker would read them wrong after an upgrade."""

from __future__ import annotations

import json
from typing import Any

import redis

from tests.support import nonce
from tierq.core.celery_app import TASK_NAME, create_app, job_reprs
from tierq.core.queue_entry import render
from tierq.devkit.processes import settings_for


def without_tag(entry: bytes | str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(entry)
    tag = message["properties"].pop("delivery_tag")
    assert tag  # every publish has its own
    return message


def test_a_rendered_entry_is_the_message_celery_publishes_but_for_its_delivery_tag(
    worker_env: dict[str, str], redis_client: redis.Redis
) -> None:
    settings = settings_for({**worker_env, "TIERQ_QUEUE_PREFIX": f"entry-{nonce()}."})
    app = create_app(settings)
    queue = settings.queue_for("fast")
    job_id = f"job-{nonce()}"
    message = {"tier": "fast", "job_id": job_id, "nested": {"list": [1, 2.5, None, "é"]}}

    # Celery's own publish, read back off the real queue
    app.send_task(TASK_NAME, args=[message], task_id=job_id, **job_reprs(job_id))
    published = redis_client.rpop(queue)
    assert published is not None

    rendered = render(app, job_id, message, queue).message
    assert without_tag(rendered) == without_tag(published)
    # ... and each rendering is a publish of its own
    assert (
        json.loads(rendered)["properties"]["delivery_tag"]
        != json.loads(render(app, job_id, message, queue).message)["properties"]["delivery_tag"]
    )


def test_a_rendered_entry_carries_the_sent_event_celery_would_send(
    worker_env: dict[str, str],
) -> None:
    settings = settings_for({**worker_env, "TIERQ_CELERY_EVENTS": "true"})
    queue = settings.queue_for("fast")
    entry = render(create_app(settings), "job-1", {"tier": "fast"}, queue)
    assert entry.sent_event is not None
    assert entry.sent_event["uuid"] == "job-1"
    assert entry.sent_event["args"] == "(job job-1)"  # the job's name, never its request
    assert entry.sent_event["routing_key"] == queue
    assert render(create_app(settings_for(worker_env)), "job-1", {}, queue).sent_event is None
