"""Prometheus metrics of workers (prometheus-client).

Counters and histograms are updated where things happen (worker/execution.py,
worker/admission.py); a worker serves them with the queue gauges through
`tierq.core.exposition`.

Labels stay bounded: tier, model (from the tier table, plus the API's snapshot names),
status, reason. Never a job id, a tenant's free text or a prompt.
"""

from __future__ import annotations

from prometheus_client import (
    Counter,
    Gauge,
    Histogram,
)

from tierq.core.accounting import served_tier
from tierq.core.results import JobResult

# Seconds: from well under a second (the fast tier) to the reasoning tier's minutes.
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320, 640)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60)

JOBS = Counter("tierq_jobs_finished", "Jobs that reached an outcome", ["tier", "model", "status"])
JOB_LATENCY = Histogram(
    "tierq_job_duration_seconds",
    "Submission to outcome (queueing, retries and the call), per finished job",
    ["tier", "model"],
    buckets=LATENCY_BUCKETS,
)
API_LATENCY = Histogram(
    "tierq_api_call_duration_seconds",
    "One Chat Completions call, answered or not",
    ["tier", "model", "outcome"],
    buckets=LATENCY_BUCKETS,
)
ATTEMPTS = Counter("tierq_attempts", "Attempts started (calls about to be made)", ["tier", "model"])
RETRIES = Counter(
    "tierq_retries", "Attempts that will be retried, by reason", ["tier", "model", "reason"]
)
RATE_LIMITED = Counter("tierq_rate_limited", "429 answers from the API", ["tier", "model"])
TOKENS = Counter(
    "tierq_tokens",
    "Tokens billed: prompt (cached ones also counted apart), completion (reasoning apart)",
    ["tier", "model", "kind"],
)
COST = Counter(
    "tierq_cost_usd",
    "Estimated cost of answers, from the price table, by the service tier that served them",
    ["tier", "model", "service_tier"],
)
SAVED = Counter(
    "tierq_saved_usd",
    "What answers served at flex or through the provider's Batch API saved against the "
    "default tier's price",
    ["tier", "model", "service_tier"],
)
FLEX_FALLBACKS = Counter(
    "tierq_flex_fallbacks",
    "Flex calls turned away for want of capacity and made again at the default tier",
    ["tier", "model"],
)
LIMITER_WAIT = Histogram(
    "tierq_limiter_wait_seconds",
    "Time a job waited in its slot for the shared RPM/TPM budget",
    ["tier", "group"],
    buckets=WAIT_BUCKETS,
)
IN_FLIGHT = Gauge(
    "tierq_jobs_in_flight", "Jobs this process is running", ["tier"], multiprocess_mode="livesum"
)


def observe_outcome(record: JobResult) -> None:
    """A job's recorded outcome: its count, latency, tokens and cost."""
    JOBS.labels(record.tier, record.model, record.status.value).inc()
    if record.latency_seconds is not None:
        JOB_LATENCY.labels(record.tier, record.model).observe(record.latency_seconds)


def observe_bill(record: JobResult) -> None:
    """A paid answer's tokens and cost (counted even when the answer was discarded)."""
    usage = record.usage
    if usage is None:
        return
    for kind, amount in (
        ("prompt", usage.prompt_tokens),
        ("cached_prompt", usage.cached_tokens),
        ("completion", usage.completion_tokens),
        ("reasoning", usage.reasoning_tokens),
    ):
        if amount:
            TOKENS.labels(record.tier, record.model, kind).inc(amount)
    served = served_tier(record)
    if record.cost_usd:
        COST.labels(record.tier, record.model, served).inc(record.cost_usd)
    if record.cost_usd is not None and record.cost_at_default_usd is not None:
        saved = record.cost_at_default_usd - record.cost_usd
        if saved > 0:
            SAVED.labels(record.tier, record.model, served).inc(saved)
