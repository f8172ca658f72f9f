"""benchmarks/rate_limits.py's outcomes as table rows and targets (pure; no run needed)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from benchmarks.record import Target

if TYPE_CHECKING:
    from benchmarks.rate_limits import Outcome

COLUMNS = (
    "scenario",
    "tierq ran with",
    "share of the limit, whole burst",
    "429s after the first 10 s (in all)",
    "retries",
    "failed",
    "p50 / p99 latency",
    "worker CPU per job",
    "target",
)
# Fewer answers than this make no rate worth printing (two answers a moment apart would read
# as thousands of percent).
MIN_ANSWERS_FOR_A_SHARE = 10
# The targets for the 150 RPM burst: (share of the limit at least, by mode).
RPM_TARGETS = {"configured": 0.97, "learned": 0.95, "too high": 0.95}


def ran_with(o: Outcome) -> str:
    unit = o.limit_kind.upper()
    if o.mode == "celery":
        return (
            "the reference: limiter off, Celery `rate_limit` at the account's limit on each "
            "worker; metrics, events"
        )
    if o.mode == "learned":
        told = "no limit configured: learned from the headers"
    elif o.mode == "re-queue":
        told = f"limit configured ({o.configured_limit:,} {unit}), every wait re-queued"
    elif o.mode == "too high":
        told = f"limit configured 10% too high ({o.configured_limit:,} {unit})"
    else:
        told = f"limit configured ({o.configured_limit:,} {unit})"
    return f"shared limiter, {told}; metrics, events"


def rows_and_targets(
    outcomes: list[Outcome],
) -> tuple[tuple[str, ...], list[list[str]], list[Target]]:
    rows: list[list[str]] = []
    targets: list[Target] = []
    for o in outcomes:
        verdict = "reported"
        bound = RPM_TARGETS.get(o.mode) if o.limit_kind == "rpm" else None
        if bound is not None:
            percent = round(o.fraction_of_limit * 100, 1)
            share = Target(
                f"{o.scenario}: share of the limit over the whole burst",
                f"≥ {bound:.0%}",
                percent,
                percent >= bound * 100,
                "%",
            )
            late = o.responses_429_after_learning
            quiet = Target(f"{o.scenario}: 429s after the first 10 s", "none", late, late == 0)
            targets += [share, quiet]
            verdict = (
                f"≥ {bound:.0%}, no 429 after 10 s: met"
                if share.met and quiet.met
                else f"≥ {bound:.0%}, no 429 after 10 s: **not met** "
                f"({o.fraction_of_limit:.1%}, {o.responses_429_after_learning} 429s)"
            )
        rows.append(
            [
                f"{o.limit:,} {o.limit_kind.upper()}, {o.jobs} jobs at once",
                ran_with(o),
                (
                    f"{o.fraction_of_limit:.1%} over {o.burst_seconds:.0f} s"
                    if o.succeeded >= MIN_ANSWERS_FOR_A_SHARE
                    else f"n/a: {o.succeeded} of {o.jobs} answered"
                ),
                f"{o.responses_429_after_learning} ({o.responses_429})",
                str(o.retries),
                f"{o.failed} ({o.unfinished} unfinished)" if o.unfinished else str(o.failed),
                f"{o.latency_p50_s:.1f} s / {o.latency_p99_s:.1f} s",
                f"{o.worker_cpu_ms_per_job:.1f} ms",
                verdict,
            ]
        )
    return COLUMNS, rows, targets
