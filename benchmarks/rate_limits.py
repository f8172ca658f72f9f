"""Fleet-wide rate limits: one-minute bursts on 3 workers, the budget used and the 429s met.

    .venv/bin/python -m benchmarks.rate_limits             # the full run (about 10 minutes)
    .venv/bin/python -m benchmarks.rate_limits --quick     # a smoke run (under a minute)

Each scenario starts its own simulator, enforcing a limit the way the API does and sending
`x-ratelimit-*` headers, and 3 worker processes of one tier (20 in flight each, metrics served
and Celery events on, as docker-compose.yml runs them), then submits at once one minute's worth
of jobs at the limit (150 jobs at 150 RPM; 150 jobs of about 200 tokens at 30,000 TPM) and waits
for all of them. The limiter is told, in turn:

  configured   the limit exactly (`TIERQ_RATE_LIMITS`);
  learned      nothing: it learns the limit from the simulator's headers, after the first
               answers or 429s;
  too high     a limit 10% above the simulator's: the headers lower it;
  re-queue     the limit exactly, but a job that cannot start at once always goes back to the
               queue with a countdown (`TIERQ_LIMITER__MAX_WAIT_IN_SLOT_SECONDS=0`) instead of
               waiting in its slot: the other waiting strategy, measured to choose the default;
  celery       (the reference) the limiter off and Celery's per-worker `rate_limit` set to the
               account's limit, what an operator writes without a shared limiter.

Measured over the whole burst, never a trimmed window: the share of the limit used from the
first answer to the last (n answers span n - 1 intervals: the first answer's own weight is not
part of the rate), 429s in all and after the first 10 s of the burst, retries, failed jobs,
p50/p99 job latency (submission to result; a burst's latency is mostly its wait in line) and
worker CPU per job. Figures go to a table and to benchmarks/results/rate_limits.json (`--out`),
with the set-up and each target met or not; `python -m benchmarks.render` copies the table into
the docs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx2
from rich.console import Console

from benchmarks.rate_limits_table import rows_and_targets
from benchmarks.record import Run, print_table, setup_record, write_results
from benchmarks.workers import AS_COMPOSE, learned_limits, start_fleet, worker_env
from tierq.core.errors import JobWaitTimeout
from tierq.core.tokens import count_prompt_tokens
from tierq.devkit.local_redis import ensure_redis
from tierq.devkit.processes import ManagedProcess, cpu_seconds, settings_for, start_simulator
from tierq.producers.client import TierqClient

WORKERS = 3
IN_FLIGHT = 20
LATENCY_MS = 100
MODEL = "gpt-4o-mini"
PROMPT = "Summarise the benefits of queueing API calls in two sentences."
# 429s in the first seconds of a burst are how a fleet that knows no limit yet learns it.
LEARNING_SECONDS = 10.0
TOO_HIGH = 1.10


@dataclass(frozen=True)
class Scenario:
    name: str
    limit_kind: str  # "rpm" or "tpm"
    limit: int  # what the simulator enforces
    mode: str  # "configured", "learned", "too high", "re-queue", "celery"
    jobs: int
    max_tokens: int

    def configured_limit(self) -> int | None:
        """What tierq is told (None: nothing, it learns from the headers)."""
        if self.mode in ("configured", "re-queue"):
            return self.limit
        if self.mode == "too high":
            return round(self.limit * TOO_HIGH)
        return None


@dataclass
class Outcome:
    scenario: str
    mode: str
    limit_kind: str
    limit: int
    configured_limit: int | None
    jobs: int
    succeeded: int
    failed: int
    burst_seconds: float  # first answer to last
    achieved_per_minute: float
    fraction_of_limit: float
    responses_429: int
    responses_429_after_learning: int
    retries: int
    latency_p50_s: float
    latency_p99_s: float
    worker_cpu_ms_per_job: float
    limits_learned: dict[str, str]
    # Jobs still queued or retrying when the wait ended (the reference can retry into the
    # API's wall for longer than a benchmark waits).
    unfinished: int = 0


def wait_seconds(scenario: Scenario) -> float:
    """How long the results are waited for: 3 s a job for tierq's modes (far more than their
    minute), 3 minutes for Celery's `rate_limit`, whose refused calls count against the limit
    and are retried with back-off into it."""
    return 180.0 if scenario.mode == "celery" else max(180.0, scenario.jobs * 3.0)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def request_for(i: int, scenario: Scenario) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{PROMPT} #{i}"}],
        "max_tokens": scenario.max_tokens,
    }


def job_cost_tokens(scenario: Scenario) -> int:
    messages = request_for(0, scenario)["messages"]
    return count_prompt_tokens(messages, None, MODEL) + scenario.max_tokens


def scenario_settings(scenario: Scenario) -> dict[str, str]:
    """The TIERQ_* settings (without the prefix) that make the scenario's mode."""
    if scenario.mode == "celery":
        per_job = job_cost_tokens(scenario)
        per_minute = scenario.limit if scenario.limit_kind == "rpm" else scenario.limit // per_job
        return {"LIMITER__ENABLED": "false", "TIERS__FAST__RATE_LIMIT": f"{per_minute}/m"}
    configured = scenario.configured_limit()
    if configured is None:
        return {}
    limits = {"RATE_LIMITS": json.dumps({MODEL: {scenario.limit_kind: configured}})}
    if scenario.mode == "re-queue":
        limits["LIMITER__MAX_WAIT_IN_SLOT_SECONDS"] = "0"
    return limits


def run(scenario: Scenario, redis_url: str, logs: Path, console: Console) -> Outcome:
    flag = "--rpm" if scenario.limit_kind == "rpm" else "--tpm"
    simulator, base_url = start_simulator(
        logs / f"simulator-{scenario.name.replace(' ', '-').replace('/', '-')}.log",
        args=[flag, str(scenario.limit), "--latency-ms", str(LATENCY_MS), "--seed", "1"],
    )
    env = worker_env(redis_url, base_url, **scenario_settings(scenario))
    settings = settings_for(env)
    workers: list[ManagedProcess] = []
    try:
        workers = start_fleet(env, WORKERS, IN_FLIGHT, logs)
        cpu_before = sum(cpu_seconds(w.pid) for w in workers)
        started = time.monotonic()
        with TierqClient(settings) as client:
            ids = client.submit_many(request_for(i, scenario) for i in range(scenario.jobs))
            try:
                results = client.wait_many(ids, timeout=wait_seconds(scenario))
            except JobWaitTimeout:
                # What had not finished by then is reported as unfinished, not waited for.
                results = [r for r in client.get_many(ids) if r is not None]
        wall = time.monotonic() - started
        cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
        with httpx2.Client(base_url=base_url.removesuffix("/v1"), timeout=30) as sim:
            records = sim.get("/sim/requests").json()["data"]
        learned = learned_limits(settings, MODEL)
    finally:
        for worker in workers:
            worker.stop()
        simulator.stop()

    answered = sorted((r for r in records if r["status"] == 200), key=lambda r: r["received_at"])
    first_call = min(r["received_at"] for r in records)
    span = max(answered[-1]["received_at"] - answered[0]["received_at"], 1e-6)
    # n answers span n - 1 intervals: the first answer's weight is not part of the rate.
    counted = answered[1:]
    if scenario.limit_kind == "rpm":
        achieved = len(counted) / span * 60
    else:
        # What the API finally charges an answered call is its real usage (its admission
        # estimate is settled by it), so that is what the share counts: the answered jobs'
        # mean usage for each answer after the first.
        used = [r.usage.total_tokens for r in results if r.usage is not None]
        per_answer = statistics.mean(used) if used else 0.0
        achieved = len(counted) * per_answer / span * 60
    refused = [r for r in records if r["status"] == 429]
    latencies = [(r.finished_at - r.submitted_at).total_seconds() for r in results if r.finished_at]
    console.print(f"[dim]{scenario.name}: done in {wall:.1f}s[/]")
    return Outcome(
        scenario=scenario.name,
        mode=scenario.mode,
        limit_kind=scenario.limit_kind,
        limit=scenario.limit,
        configured_limit=scenario.configured_limit(),
        jobs=scenario.jobs,
        succeeded=sum(r.status.value == "succeeded" for r in results),
        failed=sum(r.status.value == "failed" for r in results),
        unfinished=scenario.jobs - sum(r.status.is_final for r in results),
        burst_seconds=span,
        achieved_per_minute=achieved,
        fraction_of_limit=achieved / scenario.limit,
        responses_429=len(refused),
        responses_429_after_learning=sum(
            r["received_at"] > first_call + LEARNING_SECONDS for r in refused
        ),
        retries=sum(max(0, r.attempts - 1) for r in results),
        latency_p50_s=statistics.median(latencies) if latencies else float("nan"),
        latency_p99_s=percentile(latencies, 0.99),
        worker_cpu_ms_per_job=cpu / scenario.jobs * 1000,
        limits_learned=learned,
    )


def scenarios(run: Run) -> list[Scenario]:
    if run == "quick":
        # Five-second bursts: that every mode and kind runs, not their figures.
        return [
            Scenario("rpm/configured", "rpm", 600, "configured", 50, 20),
            Scenario("rpm/learned", "rpm", 600, "learned", 50, 20),
            Scenario("tpm/celery", "tpm", 120_000, "celery", 50, 180),
        ]
    rpm_modes = ("configured", "learned", "too high", "re-queue", "celery")
    tpm_modes = ("configured", "learned", "celery")
    return [
        *(Scenario(f"rpm/{mode}", "rpm", 150, mode, 150, 20) for mode in rpm_modes),
        *(Scenario(f"tpm/{mode}", "tpm", 30_000, mode, 150, 180) for mode in tpm_modes),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument(
        "--out", default="benchmarks/results/rate_limits.json", help="where the JSON goes"
    )
    args = parser.parse_args()
    run_kind: Run = "quick" if args.quick else "full"
    chosen = scenarios(run_kind)
    console = Console(width=max(Console().width, 150))
    setup = setup_record(
        workers=WORKERS,
        in_flight_per_worker=IN_FLIGHT,
        latency_ms=LATENCY_MS,
        model=MODEL,
        tierq_ran_with=f"{AS_COMPOSE}, the limiter as each row says",
        learning_seconds=LEARNING_SECONDS,
        scenarios=[
            {**asdict(s), "configured_limit": s.configured_limit(),
             "job_cost_tokens": job_cost_tokens(s), "settings": scenario_settings(s)}
            for s in chosen
        ],
    )  # fmt: skip
    redis_url, embedded = ensure_redis(
        os.environ.get("TIERQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    )
    logs = Path(tempfile.mkdtemp(prefix="tierq-bench-"))
    try:
        outcomes = [run(s, redis_url, logs, console) for s in chosen]
    finally:
        if embedded is not None:
            embedded.stop()
    columns, rows, targets = rows_and_targets(outcomes)
    print_table(columns, rows, console, f"Fleet rate limits: 3 workers ({run_kind} run)")
    out = Path(args.out)
    figures = {"outcomes": [asdict(o) for o in outcomes]}
    write_results(out, "rate_limits", run_kind, setup, (columns, rows), targets, figures)
    console.print(f"[dim]Figures: {out}; logs: {logs}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
