"""What a process serves at /metrics: its own prometheus-client metrics, plus queue gauges read
from Redis at scrape time.

Workers and the gateway both serve /metrics; each defines its own counters
(`tierq.worker.metrics`, `tierq.producers.gateway.observability`) and shares this registry.
Queue depth and the oldest job's age are read from Redis at each scrape by `QueueCollector`,
so every scrape is current and a process that does not consume (the gateway) reports them too.
With PROMETHEUS_MULTIPROC_DIR set (several processes behind one port: `tierq gateway
--workers N`), prometheus-client's multiprocess mode sums the processes' metrics.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import redis
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tierq.core.dispatch import Backlogs
from tierq.core.keys import Keys
from tierq.core.provider_batches import ProviderBatches
from tierq.core.queues import queue_snapshots
from tierq.core.settings import Settings
from tierq.core.stats_window import tenant_rows, window_counts


class QueueCollector(Collector):
    """Queue depth and oldest job age per tier; fair-dispatch backlogs by priority and
    tenant; each tenant's jobs in flight and share of the tier's tokens: read from Redis at
    each scrape."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "tierq_queue_depth", "Jobs waiting in the tier's queue", labels=["tier"]
        )
        age = GaugeMetricFamily(
            "tierq_queue_oldest_age_seconds",
            "Age (since submission) of the oldest job waiting for the tier, on its queue or in "
            "a fair-dispatch backlog; 0 when none waits",
            labels=["tier"],
        )
        waiting = GaugeMetricFamily(
            "tierq_waiting",
            "Jobs waiting for the tier: on its queue, in its backlogs and in its batch pool "
            "(what to scale on: fair dispatch keeps the queue itself short)",
            labels=["tier"],
        )
        try:
            snapshots = queue_snapshots(self._client, self._settings)
        except redis.RedisError:
            return  # a scrape during an outage shows the gap rather than stale numbers
        backlogs = Backlogs(self._client, self._settings)
        pools = ProviderBatches(self._client, self._settings)
        now = time.time()
        try:
            # Each tier's backlogs, read once for the gauges here and the tenants' below.
            by_tier = {snap.tier: backlogs.waiting(snap.tier) for snap in snapshots}
            for snap in snapshots:
                held = sum(sum(t.values()) for t in by_tier[snap.tier].values())
                oldest = backlogs.oldest(snap.tier) if held else None
                ages = [snap.oldest_age_seconds or 0.0, 0.0 if oldest is None else now - oldest]
                depth.add_metric([snap.tier], snap.depth)
                age.add_metric([snap.tier], max(ages))
                waiting.add_metric([snap.tier], snap.depth + held + pools.pooled(snap.tier))
        except redis.RedisError:
            return
        yield depth
        yield age
        yield waiting
        backlog = GaugeMetricFamily(
            "tierq_backlog",
            "Jobs waiting in a fair-dispatch tier's backlogs, by priority and tenant",
            labels=["tier", "priority", "tenant"],
        )
        in_flight = GaugeMetricFamily(
            "tierq_tenant_in_flight",
            "A gateway tenant's jobs submitted and not yet final, less those in a backlog "
            "(every tier's; tenants with a backlog or tokens on the tier label it)",
            labels=["tier", "tenant"],
        )
        share = GaugeMetricFamily(
            "tierq_tenant_token_share",
            "A tenant's share of the tier's tokens over the last few minutes (0 to 1)",
            labels=["tier", "tenant"],
        )
        keys = Keys(self._settings.key_prefix)
        try:
            counts, _ = window_counts(self._client, keys, time.time())
            for tier, by_priority in by_tier.items():
                for priority, tenants in by_priority.items():
                    for tenant, count in tenants.items():
                        backlog.add_metric([tier, priority, tenant], count)
                for row in tenant_rows(self._client, keys, tier, by_priority, counts):
                    if row["in_flight"] is not None:
                        in_flight.add_metric([tier, row["tenant"]], row["in_flight"])
                    share.add_metric([tier, row["tenant"]], row["token_share"])
        except redis.RedisError:
            return
        yield backlog
        yield in_flight
        yield share


_exposed: CollectorRegistry | None = None


def exposed_registry(client: redis.Redis, settings: Settings) -> CollectorRegistry:
    """The registry a process serves at /metrics: its own metrics (in multiprocess mode, every
    process's), plus the queue gauges. Built once per process."""
    global _exposed
    if _exposed is None:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        else:
            registry = REGISTRY
        registry.register(QueueCollector(client, settings))
        _exposed = registry
    return _exposed


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
