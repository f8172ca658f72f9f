"""No part of a request reaches a Celery message header or task event, on any publish path.

Celery writes `argsrepr`/`kwargsrepr` into each message's headers and copies them into the
`task-sent` and `task-received` events (Flower shows them to whoever reaches its port). Left to
itself it fills them with a repr of the job envelope, which holds the request. tierq names the
job instead on every publish: the first, Celery's `retry()`, the rate-limit deferral, the
reaper's re-queue, the dead-letter retry and a batch's submission by the gateway. The test
watches Redis itself: every message pushed onto a queue (read with MONITOR: the headers are
plain JSON, the body base64) and every task event (read by Celery's own event receiver, as
Flower reads them).
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
import redis

from tests.support import (
    Fleet,
    GatewayFactory,
    create_api_key,
    env_of,
    eventually,
    logged,
    nonce,
    unique_tenant,
    user,
)
from tierq.core.celery_app import TASK_NAME, create_app
from tierq.core.results import JobStatus
from tierq.core.settings import Settings
from tierq.producers.client import TierqClient

pytestmark = pytest.mark.slow

# kombu's Redis transport keeps a message delivered but not yet acknowledged in this hash.
UNACKED_HASH = "unacked"


def is_celery_message(command: str, queue_prefix: str) -> bool:
    """A command that puts a Celery message (headers, base64 body) on a queue or in the
    unacknowledged hash; the job store's own writes (which hold the request) are not."""
    name, _, rest = command.partition(" ")
    key = rest.partition(" ")[0]
    if name.upper() in ("LPUSH", "RPUSH"):
        return key.startswith(queue_prefix) or key.startswith("tierq-control-")
    return name.upper() == "HSET" and key == UNACKED_HASH


@dataclass
class CeleryTraffic:
    """What went over Redis while the watch ran: messages as Redis saw them, events decoded."""

    messages: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def containing(self, fragment: str) -> list[str]:
        found = [m for m in self.messages if fragment in m]
        return found + [json.dumps(e) for e in self.events if fragment in json.dumps(e)]


@pytest.fixture
def watch() -> Iterator[Any]:
    """Factory: start watching the Celery traffic of `settings`' Redis database."""
    stops: list[Any] = []

    def start(settings: Settings) -> CeleryTraffic:
        traffic = CeleryTraffic()
        url = settings.redis_url.get_secret_value()
        prefix = settings.queue_prefix
        db = redis.Redis.from_url(url).connection_pool.connection_kwargs.get("db", 0)
        monitor_client = redis.Redis.from_url(url)
        monitor = monitor_client.monitor()
        monitor.__enter__()

        def read_commands() -> None:
            try:
                for command in monitor.listen():
                    text = str(command.get("command", ""))
                    if command.get("db") == db and is_celery_message(text, prefix):
                        traffic.messages.append(text)
            except (redis.ConnectionError, OSError, ValueError, AttributeError):
                return  # the watch was closed

        app = create_app(settings)
        connection = app.connection()
        receiver = app.events.Receiver(connection, handlers={"*": traffic.events.append})
        for target in (read_commands, lambda: receiver.capture(limit=None, wakeup=False)):
            threading.Thread(target=target, daemon=True).start()

        # Both readers must be listening before anything is published: probe each until it
        # hears its probe.
        probe = f"{prefix}probe-{nonce()}"
        writer = redis.Redis.from_url(url)
        dispatcher = app.events.Dispatcher(app.connection(), enabled=True)

        def heard_probes() -> bool:
            writer.rpush(probe, probe)
            dispatcher.send("tierq-probe", probe=probe)
            return len(traffic.containing(probe)) >= 2

        eventually(heard_probes, what="the watch listening", timeout=15, interval=0.2)
        writer.delete(probe)
        writer.close()
        dispatcher.close()

        def stop() -> None:
            receiver.should_stop = True
            monitor.connection.disconnect()
            monitor_client.close()
            connection.release()

        stops.append(stop)
        return traffic

    yield start
    for stop in stops:
        stop()


def test_a_message_published_the_celery_default_way_shows_the_request(
    start_fleet: Fleet, watch: Any
) -> None:
    # The control: the watch does see a request that Celery's own repr puts in a header and an
    # event, so its silence below means something.
    _, settings = start_fleet(TIERQ_CELERY_EVENTS="true")
    traffic = watch(settings)
    secret = f"enduser-{nonce()}"
    app = create_app(settings)
    unserved = f"tierq-control-{nonce()}"

    app.send_task(TASK_NAME, args=[{"user": secret}], queue=unserved)

    found = eventually(
        lambda: traffic.containing(secret),
        until=lambda hits: len(hits) >= 2,
        what="the control's header and task-sent event",
        timeout=15,
    )
    assert any(hit.startswith("LPUSH") for hit in found)
    assert any('"task-sent"' in hit for hit in found)
    redis.Redis.from_url(settings.redis_url.get_secret_value()).delete(unserved)


def test_no_prompt_or_end_user_reaches_a_header_or_event_on_any_publish_path(
    start_fleet: Fleet, start_gateway_with: GatewayFactory, watch: Any
) -> None:
    # Given a worker with task events on (as compose runs it), a 6 s lease, a 600 RPM limit
    # that sends a job unable to start at once back to the queue, two attempts per job, and the
    # watch running
    events_on = {
        "TIERQ_CELERY_EVENTS": "true",
        "TIERQ_LEASE_SECONDS": "6",
        "TIERQ_REQUEST_TIMEOUT_SECONDS": "60",
        "TIERQ_RATE_LIMITS": json.dumps({"gpt-4o-mini": {"rpm": 600}}),
        "TIERQ_LIMITER__MAX_WAIT_IN_SLOT_SECONDS": "0",
        "TIERQ_RETRY__MAX_ATTEMPTS": "2",
        "TIERQ_RETRY__BACKOFF_MAX_SECONDS": "1",
    }
    (first,), settings = start_fleet(concurrency=20, **events_on)
    traffic = watch(settings)
    prompt, end_user = f"prompt-{nonce()}", f"enduser-{nonce()}"

    def request(text: str) -> dict[str, Any]:
        return {"model": "gpt-4o-mini", "messages": user(f"{prompt} {text}"), "user": end_user}

    with TierqClient(settings) as client:
        # When jobs go through a 429 and Celery's retry, rate-limit deferrals, and two 500s
        # that make a dead letter, which is then run again
        throttled = client.submit(**request("[sim fail=429 times=1 retry_after=1]"))
        burst = client.submit_many([request(f"burst {i}") for i in range(15)])
        rejected = client.submit(**request("[sim fail=500 times=2]"))
        assert client.wait(rejected, timeout=60).status is JobStatus.FAILED
        client.retry(rejected)
        done = client.wait_many([throttled, *burst, rejected], timeout=120)
        assert {r.status for r in done} == {JobStatus.SUCCEEDED}
        assert done[0].attempts == 2  # the 429 was retried
        assert logged(first, "job.deferred")  # the limiter put jobs back

        # ... and a job whose worker dies mid-call is re-queued by another worker's reaper
        slow = client.submit(**request("[sim latency_ms=15000]"))
        eventually(
            lambda: client.get(slow),
            until=lambda r: r is not None and r.status is JobStatus.RUNNING,
            what="the slow job running",
            timeout=30,
        )
        (second,), _ = start_fleet(concurrency=20, **events_on, **env_of(settings))
        first.signal(signal.SIGKILL)
        result = client.wait(slow, timeout=90)
        assert result.status is JobStatus.SUCCEEDED
        assert logged(second, "job.requeued", job_id=slow)

    # ... and a batch, submitted by the gateway's finalizer, runs its requests
    root, _ = start_gateway_with(TIERQ_CELERY_EVENTS="true", **env_of(settings))
    lines = [
        {"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
         "body": request(f"batch line {i}")}
        for i in range(2)
    ]  # fmt: skip
    api = openai.OpenAI(
        base_url=f"{root}/v1", api_key=create_api_key(settings, unique_tenant()), max_retries=0
    )
    with api:
        upload = api.files.create(
            file=("input.jsonl", "".join(json.dumps(line) + "\n" for line in lines).encode()),
            purpose="batch",
        )
        batch = api.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        finished = eventually(
            lambda: api.batches.retrieve(batch.id),
            until=lambda b: b.status in ("completed", "failed", "expired", "cancelled"),
            what="the batch finishing",
            timeout=60,
            interval=0.2,
        )
        assert finished.status == "completed"
        assert finished.request_counts is not None
        assert finished.request_counts.completed == 2

    # Then the watch saw every publish, each naming the job and nothing of the request
    job_ids = [throttled, *burst, rejected, slow]
    sent = [e for e in traffic.events if e.get("type") == "task-sent"]
    # the retries, deferrals, re-queue and the batch's two jobs published too
    assert len(sent) > len(job_ids) + 2
    assert {e["uuid"] for e in sent} >= set(job_ids)
    assert all(e["args"].startswith("(job ") for e in sent)
    assert len(traffic.messages) > len(job_ids)
    assert traffic.containing(prompt) == []
    assert traffic.containing(end_user) == []
    # Nor do the workers' logs hold either.
    for worker in (first, second):
        assert prompt not in worker.log_text()
        assert end_user not in worker.log_text()
