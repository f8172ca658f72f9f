"""Spend: a mixed workload at the cheapest service level that meets each job's deadline.

    .venv/bin/python -m benchmarks.spend            # the full run: 3,000 jobs (about 1 minute)
    .venv/bin/python -m benchmarks.spend --quick    # a smoke run: 150 jobs

Issue 19's measure, in one run, on loopback, against the simulator (200 ms answers, flex twice
as slow and turned away 20% of the time, provider batches done 5 s after creation). The same
workload runs twice, each time with a fresh worker (one, 100 slots) and simulator:

- **today**: every job at the default tier (`TIERQ_SPEND__FLEX=false`,
  `TIERQ_SPEND__BATCH=false`), the reference;
- **tierq**: one third without a deadline, one third due within an hour (flex), one third due
  in 24 hours (the provider's Batch API), interleaved; the first provider batch expires after
  answering half of its lines (`expire_next_batch_after_lines`), so its other lines run on the
  queue.

Figures: the cost of each run from the catalog's prices (each job's `cost_usd`, as the ledger
has it) and their ratio; jobs ended before their deadlines; paid answers per job (the
simulator's records, calls and batch lines alike, answered 200); and the latency (submitted to
finished) of the jobs without a deadline, against the same jobs today. Results go to
benchmarks/results/spend.json (`--out`); `python -m benchmarks.render` copies the table into
docs/performance.md. Redis database 10 unless `TIERQ_BENCH_REDIS_URL` says otherwise; each run
uses prefixes of its own and deletes its keys.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx2
import redis
from rich.console import Console

from benchmarks.record import Row, Run, Target, measure_and_record, setup_record
from benchmarks.workers import AS_COMPOSE, start_fleet, worker_env
from tierq.core.results import JobResult
from tierq.devkit.processes import ManagedProcess, settings_for, start_simulator
from tierq.producers.client import TierqClient

MODEL = "o4-mini"  # flex is offered for it, and the Batch API takes it
LATENCY_MS = 200
FLEX_UNAVAILABLE = 0.2
BATCH_SECONDS = 5
CONCURRENCY = 100
COST_TARGET = 0.73
LATENCY_SLACK = 1.10  # "not slower than today", allowing for a 2-core machine's noise
HOUR, DAY = 3_600, 86_400
# Scaled pacing of the batcher: a pool is sent every 2 s, a batch polled every second.
SPEND = {
    "SPEND__BATCH_COLLECT_SECONDS": "2",
    "SPEND__BATCH_POLL_SECONDS": "1",
    "SPEND__BATCH_MAX_LINES": "2000",
}
TODAY = {"SPEND__FLEX": "false", "SPEND__BATCH": "false"}


@dataclass(frozen=True)
class Sizes:
    jobs: int  # a third each: no deadline, an hour, a day


SIZES: dict[Run, Sizes] = {"full": Sizes(3_000), "reduced": Sizes(1_500), "quick": Sizes(150)}


def kind_of(n: int) -> str:
    return ("none", "hour", "day")[n % 3]


def deadline_of(kind: str) -> int | None:
    return {"none": None, "hour": HOUR, "day": DAY}[kind]


def request(run_id: str, n: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Summarise item {run_id}-{n}. [sim tokens=40]"}],
        "max_completion_tokens": 200,
    }


class Bench:
    def __init__(self, redis_url: str, sizes: Sizes, logs: Path, console: Console) -> None:
        self.redis_url, self.sizes, self.logs, self.console = redis_url, sizes, logs, console
        self.began = time.perf_counter()

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.began:6.1f}s  {text}[/]")

    def run(self) -> dict[str, Any]:
        self.note("today: every job at the default tier")
        today = self.workload(TODAY, expire_one_batch=False)
        self.note("tierq: by deadline")
        tierq = self.workload({}, expire_one_batch=True)
        return {"jobs": self.sizes.jobs, "today": today, "tierq": tierq}

    def workload(self, settings: dict[str, str], *, expire_one_batch: bool) -> dict[str, Any]:
        simulator: ManagedProcess | None = None
        fleet: list[ManagedProcess] = []
        run_id = uuid.uuid4().hex[:8]
        try:
            simulator, base_url = start_simulator(
                self.logs / f"simulator-{run_id}.log",
                args=[
                    "--latency-ms", str(LATENCY_MS), "--seed", "1",
                    "--flex-unavailable-rate", str(FLEX_UNAVAILABLE),
                    "--batch-completion-seconds", str(BATCH_SECONDS),
                    "--record-limit", str(self.sizes.jobs * 3),
                ],
            )  # fmt: skip
            sim = httpx2.Client(base_url=base_url.removesuffix("/v1"), timeout=60)
            if expire_one_batch:
                half = self.sizes.jobs // 3 // 2
                sim.patch("/sim/config", json={"expire_next_batch_after_lines": half})
            env = worker_env(self.redis_url, base_url, **SPEND, **settings)
            fleet = start_fleet_for(env, self.logs)
            kinds = [kind_of(n) for n in range(self.sizes.jobs)]
            with TierqClient(settings_for(env)) as client:
                ids = client.submit_many(
                    [request(run_id, n) for n in range(self.sizes.jobs)],
                    deadline=[deadline_of(kind) for kind in kinds],
                )
                records = client.wait_many(ids, timeout=600)
            calls = sim.get("/sim/requests").json()["data"]
            sim.close()
        finally:
            for process in [*fleet, simulator]:
                if process is not None:
                    process.stop()
            purge(self.redis_url, locals().get("env"))
        return summarize(run_id, kinds, records, calls)


def start_fleet_for(env: dict[str, str], logs: Path) -> list[ManagedProcess]:
    return start_fleet(env, 1, CONCURRENCY, logs, tier="reasoning")


def purge(redis_url: str, env: dict[str, str] | None) -> None:
    if env is None:
        return
    client = redis.Redis.from_url(redis_url)
    with client:
        for prefix in (env["TIERQ_KEY_PREFIX"], env["TIERQ_QUEUE_PREFIX"]):
            for key in client.scan_iter(match=f"{prefix}*", count=1000):
                client.delete(key)


def summarize(
    run_id: str, kinds: list[str], records: list[JobResult], calls: list[dict[str, Any]]
) -> dict[str, Any]:
    paid: Counter[int] = Counter()
    for call in calls:
        text = str(call["body"].get("messages", ""))
        marker = f"item {run_id}-"
        if call["status"] == 200 and marker in text:
            paid[int(text.split(marker, 1)[1].split(".", 1)[0])] += 1
    cost = sum(r.cost_usd or 0.0 for r in records)
    at_default = sum(
        r.cost_at_default_usd if r.cost_at_default_usd is not None else (r.cost_usd or 0.0)
        for r in records
    )
    late = [
        r for r in records if r.deadline is not None and (r.finished_at or r.deadline) > r.deadline
    ]
    none_latency = sorted(
        r.latency_seconds or 0.0 for r, kind in zip(records, kinds, strict=True) if kind == "none"
    )
    return {
        "cost_usd": cost,
        "cost_at_default_usd": at_default,
        "succeeded": sum(r.status.value == "succeeded" for r in records),
        "late": len(late),
        "paid_once": sum(paid[n] == 1 for n in range(len(records))),
        "paid_twice_or_more": sum(paid[n] > 1 for n in range(len(records))),
        "unpaid": sum(paid[n] == 0 for n in range(len(records))),
        "served": dict(Counter(r.service_tier_chosen or "as written" for r in records)),
        "no_deadline_latency_p50": percentile(none_latency, 0.5),
        "no_deadline_latency_p95": percentile(none_latency, 0.95),
    }


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def rows_and_targets(f: dict[str, Any]) -> tuple[list[Row], list[Target]]:
    today, tierq, jobs = f["today"], f["tierq"], f["jobs"]
    ratio = tierq["cost_usd"] / today["cost_usd"] if today["cost_usd"] else float("nan")
    cost = Target.at_most("spend: cost against every job at the default tier", ratio, COST_TARGET)
    on_time = Target(
        "spend: jobs ended before their deadline",
        f"all {jobs:,}",
        tierq["succeeded"] - tierq["late"],
        tierq["succeeded"] == jobs and tierq["late"] == 0,
    )
    once = Target(
        "spend: jobs with exactly one paid answer",
        f"all {jobs:,}",
        tierq["paid_once"],
        tierq["paid_once"] == jobs,
    )
    slower = tierq["no_deadline_latency_p95"] / today["no_deadline_latency_p95"]
    latency = Target.at_most(
        "spend: no-deadline jobs' latency p95 against today", slower, LATENCY_SLACK
    )
    ran_with = (
        f"1 worker x {CONCURRENCY} threads, {MODEL}; simulator {LATENCY_MS} ms, flex 2x slower "
        f"and unavailable {FLEX_UNAVAILABLE:.0%}, batches done in {BATCH_SECONDS} s, the first "
        f"expiring half-answered; {AS_COMPOSE}"
    )
    served = ", ".join(f"{k} {v:,}" for k, v in sorted(tierq["served"].items()))
    mix = f"{jobs:,} jobs, a third each without a deadline, due in 1 h, due in 24 h"
    rows = [
        Row(
            f"{mix}: cost (catalog prices)",
            ran_with,
            f"${tierq['cost_usd']:.4f} ({served})",
            f"the same jobs all at the default tier: ${today['cost_usd']:.4f}",
            ratio,
            cost.verdict(f"{ratio:.3f}"),
        ),
        Row(
            f"{mix}: jobs ended before their deadline",
            ran_with,
            f"{tierq['succeeded'] - tierq['late']:,} of {jobs:,}",
            f"succeeded {tierq['succeeded']:,}, late {tierq['late']:,}",
            None,
            on_time.verdict(f"{tierq['succeeded'] - tierq['late']:,}"),
        ),
        Row(
            f"{mix}: paid answers per job (the simulator's records)",
            ran_with,
            f"exactly one: {tierq['paid_once']:,}",
            f"none: {tierq['unpaid']:,}; two or more: {tierq['paid_twice_or_more']:,}",
            None,
            once.verdict(f"{tierq['paid_once']:,}"),
        ),
        Row(
            f"{mix}: latency of the jobs without a deadline, p50 / p95",
            ran_with,
            f"{tierq['no_deadline_latency_p50']:.2f} / {tierq['no_deadline_latency_p95']:.2f} s",
            f"today: {today['no_deadline_latency_p50']:.2f} / "
            f"{today['no_deadline_latency_p95']:.2f} s",
            slower,
            latency.verdict(f"{slower:.2f}"),
        ),
    ]
    return rows, [cost, on_time, once, latency]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run: 150 jobs")
    size.add_argument("--reduced", action="store_true", help="1,500 jobs")
    parser.add_argument("--out", default="benchmarks/results/spend.json")
    args = parser.parse_args()
    run: Run = "quick" if args.quick else "reduced" if args.reduced else "full"
    sizes = SIZES[run]
    console = Console(width=max(Console().width, 150))
    setup = setup_record(
        sizes=asdict(sizes),
        scaled_from_full=run != "full",
        model=MODEL,
        latency_ms=LATENCY_MS,
        flex_unavailable_rate=FLEX_UNAVAILABLE,
        batch_completion_seconds=BATCH_SECONDS,
        concurrency=CONCURRENCY,
        batcher={k.removeprefix("SPEND__").lower(): v for k, v in SPEND.items()},
        reference="the same workload with TIERQ_SPEND__FLEX=false and TIERQ_SPEND__BATCH=false",
        tierq_ran_with=(
            "the default spend policy (flex from 15 minutes' spare, the Batch API from 24 h), "
            f"the batcher's pace scaled down ({', '.join(f'{k}={v}' for k, v in SPEND.items())}), "
            f"fair dispatch, the shared limiter, {AS_COMPOSE}"
        ),
    )
    return measure_and_record(
        name="spend",
        run=run,
        setup=setup,
        default_redis_db=10,
        measure=lambda redis_url, logs: Bench(redis_url, sizes, logs, console).run(),
        rows_and_targets=rows_and_targets,
        title="tierq spend by deadline",
        out=Path(args.out),
        console=console,
    )


if __name__ == "__main__":
    sys.exit(main())
