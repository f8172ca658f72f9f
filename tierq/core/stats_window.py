"""The per-minute counters the settle script keeps (tierq/core/accounting.py), summed over
the last few minutes, and what they say of each tenant on a tier: read by `tierq stats` and by
the metrics' tenant gauges (tierq/core/exposition.py), so both show the same figures.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import redis

from tierq.core.accounting import NO_TENANT, SEP, TENANT_TOKENS
from tierq.core.keys import Keys, as_text

# The window, in whole minutes (the current one included).
WINDOW_MINUTES = 5


def window_counts(client: redis.Redis, keys: Keys, now: float) -> tuple[dict[str, float], float]:
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


def tenant_rows(
    client: redis.Redis,
    keys: Keys,
    tier: str,
    waiting: dict[str, dict[str, int]],
    counts: dict[str, float],
) -> list[dict[str, Any]]:
    """The tier's tenants with jobs in its backlogs or tokens in the window: each one's
    backlog, its jobs in flight (a gateway tenant's, on every tier: submitted and not yet
    final, less those still in a backlog; None for jobs without a tenant, which no quota
    counts), and its share of the tier's tokens over the window."""
    backlog: dict[str, int] = defaultdict(int)
    for tenants in waiting.values():
        for tenant, count in tenants.items():
            backlog[tenant] += count
    prefix = f"{tier}{SEP}{TENANT_TOKENS}"
    tokens = {
        field[len(prefix) :]: amount for field, amount in counts.items() if field.startswith(prefix)
    }
    names = sorted(set(backlog) | set(tokens))
    total = sum(tokens.values())
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.zcard(keys.tenant_in_flight(name))
    submitted = dict(zip(names, pipe.execute(), strict=True)) if names else {}
    return [
        {
            "tenant": name,
            "backlog": backlog.get(name, 0),
            "in_flight": (
                None if name == NO_TENANT else max(0, int(submitted[name]) - backlog.get(name, 0))
            ),
            "token_share": round(tokens.get(name, 0.0) / total, 4) if total else 0.0,
        }
        for name in names
    ]
