"""What is waiting in each tier's queue: depth and the age of the oldest job.

kombu's Redis transport keeps a queue as a Redis list named after it (LPUSH to publish, BRPOP
to consume), so the oldest message is the list's last element. Its body carries the job's
envelope, whose `submitted_at` gives the age. Jobs waiting out a retry countdown are held by a
worker (Celery's ETA), not in the list, and are not counted here.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import redis

from tierq.core.dispatch import Backlogs
from tierq.core.settings import Settings


@dataclass(frozen=True, slots=True)
class QueueSnapshot:
    tier: str
    queue: str
    depth: int
    oldest_age_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def queue_snapshots(client: redis.Redis, settings: Settings) -> list[QueueSnapshot]:
    """Every tier's queue in one pipelined round trip."""
    tiers = list(settings.tiers)
    pipe = client.pipeline(transaction=False)
    for tier in tiers:
        pipe.llen(settings.queue_for(tier))
        pipe.lindex(settings.queue_for(tier), -1)
    replies = pipe.execute()
    now = datetime.now(UTC)
    snapshots = []
    for i, tier in enumerate(tiers):
        depth, oldest = int(replies[2 * i]), replies[2 * i + 1]
        submitted = submitted_at(oldest) if oldest else None
        age = max(0.0, (now - submitted).total_seconds()) if submitted else None
        snapshots.append(QueueSnapshot(tier, settings.queue_for(tier), depth, age))
    return snapshots


def submitted_at(raw: bytes | str) -> datetime | None:
    """The submission time in a raw kombu message of a tierq job; None if it is not one."""
    try:
        payload = json.loads(raw)
        body = payload["body"]
        if payload.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        moment = datetime.fromisoformat(args[0]["submitted_at"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def waiting_per_tier(client: redis.Redis, settings: Settings) -> dict[str, dict[str, int]]:
    """Each tier's jobs waiting for a worker: on its Celery queue (`queued`), in its fair
    dispatch backlogs (`backlog`), and both (`waiting`), what an autoscaler should read, since
    fair dispatch keeps the queue itself short."""
    backlogs = Backlogs(client, settings)
    found = {}
    for snapshot in queue_snapshots(client, settings):
        by_priority = backlogs.waiting(snapshot.tier)
        backlog = sum(sum(tenants.values()) for tenants in by_priority.values())
        found[snapshot.tier] = {
            "queued": snapshot.depth,
            "backlog": backlog,
            "waiting": snapshot.depth + backlog,
        }
    return found
