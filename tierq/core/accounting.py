"""What each settled attempt adds to the usage ledger (per tenant, model and hour) and to the
per-minute counters `tierq stats` reads.

Two kinds of increment, applied by the settle script (lua/settle.lua, run by
tierq/core/jobstore.py) in the same step as the record, so no crash can count a job without
recording it or the reverse:
- the bill (tokens and cost): added for every paid answer, recorded or not, because the API
  bills an answer even when tierq discards it (a job cancelled while its call ran, a late
  duplicate); each attempt's bill is added once, however often its settle is retried;
- the counts (jobs by outcome): added only when the outcome is written.
Amounts are keyed "u:<tenant>\\t<model>\\t<metric>" for the hour's ledger and
"s:<tier>\\t<metric>" for the minute's counters.
"""

from __future__ import annotations

from datetime import datetime

from tierq.core.results import JobResult, JobStatus

NO_TENANT = "-"
# How long the per-minute counters are kept: `tierq stats` looks back minutes, not hours.
STATS_TTL_SECONDS = 2 * 3600
SEP = "\t"


def hour_of(moment: datetime) -> str:
    return moment.strftime("%Y%m%d%H")


def minute_of(moment: datetime) -> int:
    return int(moment.timestamp() // 60)


def _ledger(record: JobResult, metric: str) -> str:
    return f"u:{record.tenant or NO_TENANT}{SEP}{record.model}{SEP}{metric}"


def _stats(record: JobResult, metric: str) -> str:
    return f"s:{record.tier}{SEP}{metric}"


# The stats metric of one tenant's tokens on a tier (its share of the tier's, `tierq stats`).
TENANT_TOKENS = f"tokens{SEP}tenant{SEP}"


def _tenant_tokens(record: JobResult) -> str:
    return _stats(record, f"{TENANT_TOKENS}{record.tenant or NO_TENANT}")


# The ledger metric of spend at one service tier: `cost_usd@flex`.
COST_AT = "cost_usd@"


def served_tier(record: JobResult) -> str:
    """What served the answer, as spend is reported: `batch` for the provider's Batch API,
    else the service tier the API says served it (`default` when it does not say)."""
    if record.service_tier_chosen == "batch":
        return "batch"
    served = record.response.service_tier if record.response is not None else None
    return served or "default"


def bill(record: JobResult) -> dict[str, float]:
    """Tokens and cost of a paid answer (empty when the record carries none)."""
    usage = record.usage
    if usage is None:
        return {}
    amounts: dict[str, float] = {
        _ledger(record, "prompt_tokens"): usage.prompt_tokens,
        _ledger(record, "cached_tokens"): usage.cached_tokens,
        _ledger(record, "completion_tokens"): usage.completion_tokens,
        _ledger(record, "reasoning_tokens"): usage.reasoning_tokens,
        _stats(record, "tokens"): usage.total_tokens,
        _tenant_tokens(record): usage.total_tokens,
    }
    if record.cost_usd is not None:
        amounts[_ledger(record, "cost_usd")] = record.cost_usd
        # Spend by the service tier that served it, and what the default tier would have cost
        # (the same as paid when it was the default): `tierq usage` reports the saving.
        served = served_tier(record)
        amounts[_ledger(record, f"{COST_AT}{served}")] = record.cost_usd
        at_default = record.cost_at_default_usd
        amounts[_ledger(record, "cost_at_default_usd")] = (
            record.cost_usd if at_default is None else at_default
        )
    return {field: float(amount) for field, amount in amounts.items() if amount}


def counts(record: JobResult) -> dict[str, float]:
    """The outcome's counts: jobs by final status in the ledger, outcomes per tier in stats."""
    status = record.status
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        return {}  # handed back for a rate-limit wait: not an outcome
    amounts = {_stats(record, status.value): 1.0}
    if status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        amounts[_ledger(record, "jobs")] = 1.0
        amounts[_ledger(record, status.value)] = 1.0
    return amounts
