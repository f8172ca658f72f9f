"""The service level a job's call asks for: the cheapest one that still meets its deadline.

The provider sells the same model at several service levels (`service_tier`): `flex` at half
the price with slower answers and, at times, a 429 "resource unavailable"; `default`; and
`priority` above it. A job without a deadline is sent as its caller wrote it, as before. A job
with one (tierq/core/deadline.py) is sent at `flex` while its deadline is at least
`TIERQ_SPEND__FLEX_MIN_SECONDS` away when its call starts and the catalog prices flex for its
model; at `priority` when its deadline is nearer than `TIERQ_SPEND__PRIORITY_WITHIN_SECONDS`
(unset by default: never); at the default tier otherwise. The choice is made at each call, so
a job whose deadline came close while it waited runs at the default tier. A flex call the
provider turns away for want of capacity is made again at once at the default tier
(worker/execution.py). A caller's own `service_tier` always wins, and the price charged is
always that of the tier the answer reports it was served at.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tierq.core.catalog import ModelInfo
from tierq.core.settings import SpendSettings

FLEX = "flex"
PRIORITY = "priority"
DEFAULT = "default"
# The code of a 429 that is a rate limit; a flex call's 429 with another code (the provider's
# "resource unavailable") means flex had no capacity, and is not a limit to wait for.
RATE_LIMIT_CODE = "rate_limit_exceeded"


def service_tier_for(
    params: dict[str, Any],
    info: ModelInfo,
    deadline: datetime | None,
    now: datetime,
    spend: SpendSettings,
    *,
    tenant: str | None = None,
    tier_allows_flex: bool = True,
) -> str | None:
    """The `service_tier` tierq adds to a call's `params`, or None to send them as they are.
    `tenant` is the job's gateway tenant (`TIERQ_SPEND__TENANT_FLEX`), `tier_allows_flex` its
    tier's `flex` setting."""
    if deadline is None or "service_tier" in params:
        return None
    left = (deadline - now).total_seconds()
    within = spend.priority_within_seconds
    if within is not None and left < within and PRIORITY in info.service_tier_prices:
        return PRIORITY
    flex_allowed = (
        spend.flex
        and tier_allows_flex
        and spend.tenant_flex.get(tenant or "", True)
        and FLEX in info.service_tier_prices
    )
    if flex_allowed and left >= spend.flex_min_seconds:
        return FLEX
    return None
