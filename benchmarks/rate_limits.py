"""Fleet-wide rate limits: Celery's per-worker `rate_limit` against tierq's shared limiter.

    .venv/bin/python -m benchmarks.rate_limits            # the full run (about 5 minutes)
    .venv/bin/python -m benchmarks.rate_limits --quick    # a smoke run (under a minute)

The same workload, side by side in one run: a burst of jobs on 3 worker processes of one tier,
against the simulator enforcing an RPM limit, then a TPM limit, through

  (a) Celery's `rate_limit` alone, set on each worker to the account's limit (what an operator
      would write), the shared limiter off;
  (b) tierq's shared limiter with the limit configured, Celery's `rate_limit` unset;
  (c) as (b), but a job that cannot start at once always goes back to the queue with a
      countdown (`max_wait_in_slot_seconds=0`) instead of waiting in its slot: the other
      waiting strategy, measured to choose between them.

For each: achieved requests and tokens per minute as a fraction of the limit, measured in
steady state (from the 10th to the 90th percentile of answered calls' arrival at the
simulator), 429s received (in all and in steady state), retries made, jobs failed, p50/p99 job
latency (submission to result; a burst's latency is mostly its wait in line), and worker CPU
per job. Figures go to a table and to benchmarks/results/rate_limits.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx2
from rich.console import Console
from rich.table import Table

from tierq.core.tokens import count_prompt_tokens
from tierq.devkit.local_redis import ensure_redis
from tierq.devkit.processes import (
    ManagedProcess,
    cpu_seconds,
    settings_for,
    start_simulator,
    start_worker,
)
from tierq.producers.client import TierqClient

WORKERS = 3
CONCURRENCY = 20
LATENCY_MS = 100
MODEL = "gpt-4o-mini"
PROMPT = "Summarise the benefits of queueing API calls in two sentences."


@dataclass(frozen=True)
class Scenario:
    name: str
    limit_kind: str  # "rpm" or "tpm"
    limit: int
    mode: str  # "celery", "shared", "shared-requeue"
    jobs: int
    max_tokens: int


@dataclass
class Outcome:
    scenario: str
    mode: str
    limit_kind: str
    limit: int
    jobs: int
    succeeded: int
    failed: int
    requests_per_minute: float
    tokens_per_minute: float
    fraction_of_limit: float
    responses_429: int
    responses_429_steady: int
    retries: int
    latency_p50_s: float
    latency_p99_s: float
    worker_cpu_ms_per_job: float
    wall_seconds: float


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def worker_env(scenario: Scenario, redis_url: str, base_url: str, isolation: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERQ_", "OPENAI_"))}
    env.update(
        TIERQ_REDIS_URL=redis_url,
        OPENAI_BASE_URL=base_url,
        OPENAI_API_KEY="sk-benchmark",
        TIERQ_QUEUE_PREFIX=f"bench-{isolation}.",
        TIERQ_KEY_PREFIX=f"bench-{isolation}:",
        TIERQ_LOG_FORMAT="json",
        TIERQ_LOG_LEVEL="INFO",
    )
    if scenario.mode == "celery":
        # What an operator writes without a shared limiter: the account's limit on each worker.
        per_job = job_cost_tokens(scenario)
        per_minute = scenario.limit if scenario.limit_kind == "rpm" else scenario.limit // per_job
        env["TIERQ_LIMITER__ENABLED"] = "false"
        env["TIERQ_TIERS__FAST__RATE_LIMIT"] = f"{per_minute}/m"
    else:
        env["TIERQ_RATE_LIMITS"] = json.dumps({MODEL: {scenario.limit_kind: scenario.limit}})
        if scenario.mode == "shared-requeue":
            env["TIERQ_LIMITER__MAX_WAIT_IN_SLOT_SECONDS"] = "0"
    return env


def request_for(i: int, scenario: Scenario) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"{PROMPT} #{i}"}],
        "max_tokens": scenario.max_tokens,
    }


def job_cost_tokens(scenario: Scenario) -> int:
    messages = request_for(0, scenario)["messages"]
    return count_prompt_tokens(messages, None, MODEL) + scenario.max_tokens


def run(scenario: Scenario, redis_url: str, logs: Path, console: Console) -> Outcome:
    flag = "--rpm" if scenario.limit_kind == "rpm" else "--tpm"
    simulator, base_url = start_simulator(
        logs / f"simulator-{scenario.name}.log",
        args=[flag, str(scenario.limit), "--latency-ms", str(LATENCY_MS), "--seed", "1"],
    )
    isolation = uuid.uuid4().hex[:8]
    env = worker_env(scenario, redis_url, base_url, isolation)
    workers: list[ManagedProcess] = []
    try:
        workers = [
            start_worker(
                "fast",
                logs / f"worker-{scenario.name}-{n}.log",
                env,
                concurrency=CONCURRENCY,
                wait=False,
            )
            for n in range(WORKERS)
        ]
        for worker in workers:
            worker.wait_until(lambda w=worker: "worker.ready" in w.log_text())
        settings = settings_for(env)
        cpu_before = sum(cpu_seconds(w.pid) for w in workers)
        started = time.monotonic()
        with TierqClient(settings) as client:
            ids = client.submit_many(request_for(i, scenario) for i in range(scenario.jobs))
            results = client.wait_many(ids, timeout=max(120.0, scenario.jobs * 2.0))
        wall = time.monotonic() - started
        cpu = sum(cpu_seconds(w.pid) for w in workers) - cpu_before
        with httpx2.Client(base_url=base_url.removesuffix("/v1"), timeout=30) as sim:
            records = sim.get("/sim/requests").json()["data"]
    finally:
        for worker in workers:
            worker.stop()
        simulator.stop()

    answered = sorted(r["received_at"] for r in records if r["status"] == 200)
    low, high = percentile(answered, 0.1), percentile(answered, 0.9)
    window = max(high - low, 1e-6)
    steady = [r for r in records if low <= r["received_at"] <= high]
    # n answered calls span n - 1 intervals: the first one's weight is not part of the rate.
    steady_ok = sorted((r for r in steady if r["status"] == 200), key=lambda r: r["received_at"])[
        1:
    ]
    tokens = sum(
        count_prompt_tokens(r["body"]["messages"], None, MODEL) + r["body"]["max_tokens"]
        for r in steady_ok
    )
    rpm = len(steady_ok) / window * 60
    tpm = tokens / window * 60
    latencies = [(r.finished_at - r.submitted_at).total_seconds() for r in results if r.finished_at]
    outcome = Outcome(
        scenario=scenario.name,
        mode=scenario.mode,
        limit_kind=scenario.limit_kind,
        limit=scenario.limit,
        jobs=scenario.jobs,
        succeeded=sum(r.status.value == "succeeded" for r in results),
        failed=sum(r.status.value == "failed" for r in results),
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        fraction_of_limit=(rpm if scenario.limit_kind == "rpm" else tpm) / scenario.limit,
        responses_429=sum(r["status"] == 429 for r in records),
        responses_429_steady=sum(r["status"] == 429 for r in steady),
        retries=sum(max(0, r.attempts - 1) for r in results),
        latency_p50_s=statistics.median(latencies) if latencies else float("nan"),
        latency_p99_s=percentile(latencies, 0.99),
        worker_cpu_ms_per_job=cpu / scenario.jobs * 1000,
        wall_seconds=wall,
    )
    console.print(f"[dim]{scenario.name}: done in {wall:.1f}s[/]")
    return outcome


def scenarios(quick: bool) -> list[Scenario]:
    rpm, rpm_jobs = (1200, 120) if quick else (600, 300)
    tpm, tpm_jobs = (120_000, 100) if quick else (60_000, 150)
    out = []
    for mode in ("celery", "shared", "shared-requeue"):
        out.append(Scenario(f"rpm/{mode}", "rpm", rpm, mode, rpm_jobs, max_tokens=20))
        out.append(Scenario(f"tpm/{mode}", "tpm", tpm, mode, tpm_jobs, max_tokens=180))
    return out


def render(outcomes: list[Outcome], console: Console) -> None:
    table = Table(title="Fleet rate limits: 3 workers, burst workload, simulator limits")
    columns = (
        "scenario", "limit", "achieved", "of limit", "429s (steady)", "retries",
        "failed", "p50 s", "p99 s", "CPU ms/job",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="right" if column != "scenario" else "left")
    for o in outcomes:
        achieved = o.requests_per_minute if o.limit_kind == "rpm" else o.tokens_per_minute
        table.add_row(
            o.scenario,
            f"{o.limit:,} {o.limit_kind.upper()}",
            f"{achieved:,.0f}",
            f"{o.fraction_of_limit:.1%}",
            f"{o.responses_429} ({o.responses_429_steady})",
            str(o.retries),
            str(o.failed),
            f"{o.latency_p50_s:.1f}",
            f"{o.latency_p99_s:.1f}",
            f"{o.worker_cpu_ms_per_job:.1f}",
        )
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument(
        "--out", default="benchmarks/results/rate_limits.json", help="where the JSON goes"
    )
    args = parser.parse_args()
    console = Console(width=max(Console().width, 130))
    redis_url, embedded = ensure_redis(
        os.environ.get("TIERQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    )
    logs = Path(tempfile.mkdtemp(prefix="tierq-bench-"))
    try:
        outcomes = [run(s, redis_url, logs, console) for s in scenarios(args.quick)]
    finally:
        if embedded is not None:
            embedded.stop()
    render(outcomes, console)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps([asdict(o) for o in outcomes], indent=2))
    console.print(f"[dim]Figures: {out}; logs: {logs}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
