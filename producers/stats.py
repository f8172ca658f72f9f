"""`tierq stats`: each tier at a glance, live: queue, workers, throughput, tokens, failures.

Everything comes from Redis in a few pipelined reads, so any machine that reaches Redis can
watch the fleet: the queues (tierq/core/queues.py), the workers' heartbeats
(worker/monitoring.py), the per-minute counters the settle script keeps
(tierq/core/accounting.py) and the shared limiter's use of each RPM/TPM budget
(tierq/core/ratelimit.py). Rates are over the last `WINDOW_MINUTES` minutes.
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
from tierq.core.keys import Keys, as_text
from tierq.core.queues import queue_snapshots
from tierq.core.ratelimit import GroupUsage, SharedRateLimiter
from tierq.core.settings import Settings, get_settings

WINDOW_MINUTES = 5


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


def _window_counts(client: redis.Redis, keys: Keys, now: float) -> tuple[dict[str, float], float]:
    """Counters summed over the window (whole minutes plus the current one), and its length."""
    minute = int(now // 60)
    pipe = client.pipeline(transaction=False)
    for m in range(minute - WINDOW_MINUTES + 1, minute + 1):
        pipe.hgetall(keys.stats(m))
    summed: dict[str, float] = defaultdict(float)
    for counters in pipe.execute():
        for raw_field, amount in counters.items():
            summed[as_text(raw_field)] += float(amount)
    seconds = (WINDOW_MINUTES - 1) * 60 + (now - minute * 60)
    return summed, max(seconds, 1.0)


def collect_stats(settings: Settings, client: redis.Redis) -> dict[str, Any]:
    """The fleet per tier, as `tierq stats --json` prints it."""
    keys = Keys(settings.key_prefix)
    now = time.time()
    queues = {snap.tier: snap for snap in queue_snapshots(client, settings)}
    workers = live_workers(client, settings, now)
    counts, seconds = _window_counts(client, keys, now)
    limiter = SharedRateLimiter(client, settings)
    backlogs = Backlogs(client, settings)
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
        tiers.append({
            "tier": tier,
            "queue": queue.queue,
            "queue_depth": queue.depth,
            "backlog": sum(sum(tenants.values()) for tenants in waiting.values()),
            "backlog_by_priority": waiting,
            "oldest_job_age_seconds": queue.oldest_age_seconds,
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


def render(stats: dict[str, Any]) -> Any:
    from rich.table import Table

    window = f"last {stats['window_seconds'] / 60:.1f} min"
    table = Table(title=f"tierq fleet ({window})", expand=False)
    for column in ("tier", "queued", "backlog", "oldest", "workers", "in flight", "jobs/s",
                   "tokens/min", "limit (TPM, last min)", "failed", "retried"):  # fmt: skip
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
            t["tier"], f"{t['queue_depth']:,}", _backlog(t),
            f"{oldest:.0f}s" if oldest is not None else "-",
            str(t["workers"]), f"{t['in_flight']}/{t['concurrency']}",
            f"{t['jobs_per_second']:.1f}", f"{t['tokens_per_minute']:,}", limits or "-",
            f"[red]{t['failed']}[/]" if t["failed"] else "0", str(t["retried"]),
        )  # fmt: skip
    return table


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
    """Each tier live: queue depth, oldest job, workers and in flight, jobs/s, tokens/min
    against the limits, failures. Ctrl-C to leave."""
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
