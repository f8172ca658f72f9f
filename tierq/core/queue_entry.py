"""A job's Celery message rendered in advance, exactly as kombu's Redis transport puts it on
a tier's queue.

Why tierq renders it rather than publishing: on a tier with fair dispatch a submitted job
waits in a backlog, and a worker's dispatch script (lua/backlog_dispatch.lua) chooses which
jobs go onto the queue. With the message rendered when the job is submitted (work the
producer does anyway when it publishes), that script pushes it in the same step that
chooses it: one Redis call per step, no publish in the worker process (whose one core runs
the jobs), and no moment when a job is neither in a backlog nor on the queue.

The rendering is Celery's own task message (`app.amqp.as_task_v2`, what `send_task` builds)
and kombu's own body serializer; what is written here is only the envelope kombu's virtual
channel adds on publish (`Producer.publish`, `prepare_message`, `basic_publish`) for a direct
route to a queue. tests/test_queue_entry.py compares it with a message Celery itself
published, so a change in either library fails a test rather than a worker.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery
from kombu.serialization import dumps as serialize
from kombu.transport.virtual.base import Base64
from kombu.utils.json import dumps as to_json

from tierq.core.celery_app import TASK_NAME, job_reprs

# kombu's persistent delivery mode, and the priority a message without one gets (its Redis
# transport then puts it on the queue's own list, not a priority sub-list).
PERSISTENT = 2
DEFAULT_PRIORITY = 0
_BODY_ENCODING = "base64"
_base64 = Base64()


@dataclass(frozen=True, slots=True)
class QueueEntry:
    """A job's queue message, and the `task-sent` event Celery would have sent with it (None
    unless `task_send_sent_event` is on): the producer sends that when the job enters its
    backlog, so Flower and other event readers see every job sent, as without fair dispatch."""

    message: str
    sent_event: dict[str, Any] | None


def render(app: Celery, job_id: str, message: dict[str, Any], queue: str) -> QueueEntry:
    """What `send_task(TASK_NAME, args=[message], task_id=job_id)` with tierq's reprs would
    LPUSH onto `queue` (a fresh delivery tag, as every publish has), and its sent event."""
    reprs = job_reprs(job_id)
    task = app.amqp.as_task_v2(
        job_id,
        TASK_NAME,
        args=(message,),
        kwargs={},
        reply_to=app.thread_oid,
        create_sent_event=bool(app.conf.task_send_sent_event),
        ignore_result=None,  # type: ignore[arg-type]  # what send_task passes
        **reprs,
    )
    content_type, content_encoding, body = serialize(task.body, serializer=app.conf.task_serializer)
    properties: dict[str, Any] = {
        **task.properties,
        **reprs,  # send_task passes its options on as message properties
        "delivery_mode": PERSISTENT,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "priority": DEFAULT_PRIORITY,
        "body_encoding": _BODY_ENCODING,
        "delivery_tag": str(uuid.uuid4()),
    }
    entry: str = to_json(
        {
            "body": _base64.encode(body),
            "content-encoding": content_encoding,
            "content-type": content_type,
            "headers": task.headers,
            "properties": properties,
        }
    )
    sent = task.sent_event
    if sent is not None:  # as send_task_message completes it for a direct route
        sent = {**sent, "queue": queue, "exchange": "", "routing_key": queue}
    return QueueEntry(entry, sent)
