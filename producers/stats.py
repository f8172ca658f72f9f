"""`tierq stats`: each tier at a glance, live: queue and backlog, workers, throughput, tokens,
failures, and each tenant's share.

Everything comes from Redis in a few pipelined reads, so any machine that reaches Redis can
watch the fleet: the queues (tierq/core/queues.py), the workers' heartbeats
(worker/monitoring.py), the per-minute counters the settle script keeps
(tierq/core/accounting.py) and the shared limiter's use of each RPM/TPM budget
(tierq/core/ratelimit.py). Rates are over the last few minutes (tierq/core/stats_window.py).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from typing import Any

import click
import redis

from tierq.core.accounting import SEP
from tierq.core.cli_output import echo_json, fit
from tierq.core.dispatch import Backlogs
from tierq.core.exit_codes import ExitCode, ExitCodeCommand, fail
from tierq.core.heartbeats import STALE_AFTER_SECONDS
from tierq.core.jobstore import connect
from tierq.core.keys import Keys
from tierq.core.provider_batches import ProviderBatches
from tierq.core.queues import queue_snapshots
from tierq.core.ratelimit import GroupUsage, SharedRateLimiter
from tierq.core.settings import Settings, get_settings
from tierq.core.stats_window import tenant_rows, window_counts


def limit_groups(settings: Settings) -> dict[str, list[str]]:
    """Rate-limit group -> its models: configured groups, then each known model's own."""
    groups: dict[str, list[str]] = {
        name: list(group.models or [name]) for name, group in settings.rate_limits.items()
    }
    for model in settings.known_models():
        members = groups.setdefault(settings.limit_group_for(model), [])
        if model not in members:
            members.append(model)
    return groups


# A heartbeat this old is a worker killed without a clean stop: its entry is removed.
FORGET_AFTER_SECONDS = 86_400


def live_workers(
    client: redis.Redis, settings: Settings, now: float | None = None
) -> list[dict[str, Any]]:
    """The heartbeats of the workers alive now (`tierq.worker.monitoring` writes them), each
    with its node, tier, concurrency and jobs in flight; entries long silent are removed."""
    keys = Keys(settings.key_prefix)
    now = time.time() if now is None else now
    alive, gone = [], []
    for node, raw in client.hgetall(keys.workers).items():
        beat = json.loads(raw)
        age = now - float(beat["seen_at"])
        if age <= STALE_AFTER_SECONDS:
            alive.append(beat)
        elif age > FORGET_AFTER_SECONDS:
            gone.append(node)
    if gone:
        client.hdel(keys.workers, *gone)
    return alive


def collect_stats(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """The fleet per tier, as `tierq stats --json` prints it."""
    keys = Keys(settings.key_prefix)
    now = time.time()
    queues = {snap.tier: snap for snap in queue_snapshots(client, settings)}
    workers = live_workers(client, settings, now)
    counts, seconds = window_counts(client, keys, now)
    limiter = SharedRateLimiter(client, settings)
    backlogs = Backlogs(client, settings)
    batches = ProviderBatches(client, settings)
    usages: list[GroupUsage] = [
        limiter.usage(group, models) for group, models in sorted(limit_groups(settings).items())
    ]
    tiers = []
    for tier, tier_settings in settings.tiers.items():
        mine = [w for w in workers if w["tier"] == tier]

        def count(metric: str, tier: str = tier) -> float:
            return counts.get(f"{tier}{SEP}{metric}", 0.0)

        finished = count("succeeded") + count("failed")
        queue = queues[tier]
        # Fair dispatch: what waits in the backlogs, by priority and tenant (else nothing).
        waiting = backlogs.waiting(tier) if tier_settings.fair_dispatch else {}
        backlog = sum(sum(tenants.values()) for tenants in waiting.values())
        oldest = backlogs.oldest(tier) if backlog else None
        tiers.append({
            "tier": tier,
            "queue": queue.queue,
            "queue_depth": queue.depth,
            "backlog": backlog,
            "waiting": queue.depth + backlog,
            "backlog_by_priority": waiting,
            "tenants": tenant_rows(client, keys, tier, waiting, counts),
            # Far deadlines: jobs waiting for a provider batch, batches in flight, and when
            # the pool is next sent (tierq/core/provider_batches.py).
            "batch_pool": batches.pooled(tier),
            "provider_batches": len(batches.open_batches(tier)),
            "next_batch_at": batches.next_submission(tier),
            "oldest_job_age_seconds": _oldest_age(queue.oldest_age_seconds, oldest, now),
            "workers": len(mine),
            "concurrency": sum(int(w["concurrency"]) for w in mine),
            "in_flight": sum(int(w["in_flight"]) for w in mine),
            "jobs_per_second": round(finished / seconds, 3),
            "tokens_per_minute": round(count("tokens") / seconds * 60),
            "succeeded": int(count("succeeded")),
            "failed": int(count("failed")),
            "retried": int(count("retrying")),
            "limits": [
                {
                    "group": u.group, "rpm": u.rpm, "tpm": u.tpm,
                    "requests_last_minute": u.requests_last_minute,
                    "tokens_last_minute": u.tokens_last_minute,
                    "paused_for_seconds": u.paused_for_seconds,
                }
                for u in usages
                if set(u.models) & set(tier_settings.models)
            ],
        })  # fmt: skip
    return {"at": now, "window_seconds": round(seconds, 1), "tiers": tiers}


def _oldest_age(on_queue: float | None, in_backlog: float | None, now: float) -> float | None:
    """The age of the tier's oldest waiting job, on its queue or in its backlogs."""
    in_backlog_age = None if in_backlog is None else max(0.0, now - in_backlog)
    ages = [age for age in (on_queue, in_backlog_age) if age is not None]
    return max(ages, default=None)


def render(stats: dict[str, Any]) -> Any:
    """The tiers' table, and below it the tenants' (when any tenant has a backlog or tokens)."""
    from rich.console import Group
    from rich.table import Table

    window = f"last {stats['window_seconds'] / 60:.1f} min"
    table = Table(title=f"tierq fleet ({window})", expand=False)
    for column in ("tier", "queued", "backlog", "batch pool", "oldest", "workers", "in flight",
                   "jobs/s", "tokens/min", "limit (TPM, last min)", "failed",
                   "retried"):  # fmt: skip
        # A name folds on a narrow terminal rather than lose characters (cli_output.py).
        table.add_column(column, justify="left" if column == "tier" else "right", overflow="fold")
    for t in stats["tiers"]:
        oldest = t["oldest_job_age_seconds"]
        limits = ", ".join(
            f"{lim['group']} {lim['tokens_last_minute']:,}/{lim['tpm']:,}" if lim["tpm"]
            else f"{lim['group']} (not known yet)"
            for lim in t["limits"]
        )  # fmt: skip
        table.add_row(
            t["tier"], f"{t['queue_depth']:,}", _backlog(t), _batch_pool(t, stats["at"]),
            f"{oldest:.0f}s" if oldest is not None else "-",
            str(t["workers"]), f"{t['in_flight']}/{t['concurrency']}",
            f"{t['jobs_per_second']:.1f}", f"{t['tokens_per_minute']:,}", limits or "-",
            f"[red]{t['failed']}[/]" if t["failed"] else "0", str(t["retried"]),
        )  # fmt: skip
    rows = [(t["tier"], tenant) for t in stats["tiers"] for tenant in t["tenants"]]
    if not rows:
        return table
    tenants = Table(title=f"tenants ({window})", expand=False)
    for column in ("tier", "tenant", "backlog", "in flight", "share of tokens"):
        tenants.add_column(column, justify="left" if column in ("tier", "tenant") else "right",
                           overflow="fold")  # fmt: skip
    for tier, tenant in rows:
        in_flight = tenant["in_flight"]
        tenants.add_row(
            tier, tenant["tenant"], f"{tenant['backlog']:,}",
            "-" if in_flight is None else f"{in_flight:,}", f"{tenant['token_share']:.0%}",
        )  # fmt: skip
    return Group(table, tenants)


def _batch_pool(tier: dict[str, Any], now: float) -> str:
    """Jobs waiting for a provider batch, when they go, and batches in flight:
    `300 (next in 42s; 2 in flight)`."""
    pooled, flying, at = tier["batch_pool"], tier["provider_batches"], tier["next_batch_at"]
    if not pooled and not flying:
        return "-"
    notes = [] if at is None else [f"next in {max(0, at - now):.0f}s"]
    if flying:
        notes.append(f"{flying} in flight")
    return f"{pooled:,}" + (f" ({'; '.join(notes)})" if notes else "")


def _backlog(tier: dict[str, Any]) -> str:
    """A fair tier's backlog, with its busiest tenants: `1,200 (acme 1,000, beta 200)`."""
    per_tenant: dict[str, int] = defaultdict(int)
    for tenants in tier["backlog_by_priority"].values():
        for tenant, count in tenants.items():
            per_tenant[tenant] += count
    if not per_tenant:
        return "-"
    top = sorted(per_tenant.items(), key=lambda item: -item[1])[:3]
    return f"{tier['backlog']:,} (" + ", ".join(f"{t} {n:,}" for t, n in top) + ")"


@click.command("stats", cls=ExitCodeCommand)
@click.option("--json", "as_json", is_flag=True, help="Print one snapshot as JSON and exit.")
@click.option("--once", is_flag=True, help="Print one table and exit (no live view).")
@click.option("--interval", type=click.FloatRange(0.5, 60), default=2.0, show_default=True,
              help="Seconds between refreshes of the live view.")  # fmt: skip
def stats_command(as_json: bool, once: bool, interval: float) -> None:
    """Each tier live: queue depth and backlog, oldest job, workers and in flight, jobs/s,
    tokens/min against the limits, failures; then each tenant's backlog, jobs in flight and
    share of the tier's tokens. Ctrl-C to leave."""
    from rich.console import Console
    from rich.live import Live

    settings = get_settings()
    client = connect(settings, socket_timeout_seconds=2.0, retries=3)
    try:
        if as_json:
            echo_json(collect_stats(settings, client))
            return
        table = render(collect_stats(settings, client))
        console = fit(Console(), table)
        if once:
            console.print(table)
            return
        # Ctrl-C leaves through ExitCodeCommand: exit status 130, as in every command.
        with Live(table, console=console) as live:
            while True:
                time.sleep(interval)
                live.update(render(collect_stats(settings, client)))
    except redis.RedisError as error:
        fail(f"cannot reach Redis: {error}", ExitCode.REDIS_UNREACHABLE)
    finally:
        client.close()
