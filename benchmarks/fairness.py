"""Fair dispatch: priorities and tenants sharing one tier, and what the dispatcher costs.

    .venv/bin/python -m benchmarks.fairness             # the full run (about 10 minutes)
    .venv/bin/python -m benchmarks.fairness --reduced   # each case scaled down (6 minutes)
    .venv/bin/python -m benchmarks.fairness --quick     # a smoke run (about a minute)

Issue 18's measures of a tier with fair dispatch (`TIERQ_TIERS__FAST__FAIR_DISPATCH=true`,
docs/jobs.md, "Priority and fair share"), in one run, on this machine, on loopback, against
the simulator. Each case starts its own simulator and workers (as docker-compose.yml runs
them: metrics served, Celery events on, the shared limiter on) and ends them all:

1. Starvation: tenant A submits 20,000 `bulk` jobs; 30 s later tenant B submits one
   `interactive` job a second for two minutes, on a tier paced at 3,000 RPM (the limit
   configured and enforced by the simulator). B's queue wait (its record's `started_at` less
   its `submitted_at`) p50 / p99, against 2 s plus the limiter's pacing interval (60 / RPM);
   and A's progress: A's jobs finished while B was submitting.
2. Fair share: tenants `a` and `b` of weights 1 and 3 (`TIERQ_FAIR_SHARE__TENANT_WEIGHTS`)
   both keep a TPM-limited tier saturated for two minutes. Their shares of the tokens the API
   charged (each call's real usage, from its job's record, the call matched to its job by the
   marker in its prompt, counted by when the simulator received it), and the tier's use of
   its TPM limit over the same window.
3. Work-conserving: tenant `a` alone on the same tier for a minute; its use of the limit.
4. Cost: jobs/s through one worker at 0 ms latency (100 in flight) with fair dispatch, and
   the same build without it (`TIERQ_TIERS__FAST__FAIR_DISPATCH=false`), in alternating
   rounds, each round a fresh worker.
5. Crash: the worker is SIGKILLed mid-run, with jobs still in the backlog, while its
   dispatcher moves them; a new worker is started. Every job must end in one result (all
   succeeded) and the simulator must have seen each job's marker once; a call the killed
   worker had in flight may be made again (docs/reliability.md), so markers seen twice are
   told apart by whether their first call came before the kill.

`--reduced` and `--quick` scale every case down (their sizes are in SIZES and in the results'
set-up). The tenants' jobs are benchmarks/fairness_tenants.py, the table's
benchmarks/fairness_table.py. Figures go to a table and to benchmarks/results/fairness.json
(`--out`), with the set-up and each target met or not; `python -m benchmarks.render` copies
the table into the docs. Every case uses key and queue prefixes of its own, on Redis database
11 unless `TIERQ_BENCH_REDIS_URL` says otherwise, and deletes its own keys when it ends (a
backlog left unfinished would otherwise stay); nothing else is flushed.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from rich.console import Console

from benchmarks.fairness_table import rows_and_targets
from benchmarks.fairness_tenants import (
    ANSWER_TOKENS,
    MAX_TOKENS,
    MODEL,
    SUBMIT_CHUNK,
    percentile,
    simulator_calls,
    sleep_until,
    submit,
    tenant_of,
    times_seen,
)
from benchmarks.machine import own_cpu_seconds
from benchmarks.record import Run, measure_and_record, setup_record
from benchmarks.workers import AS_COMPOSE, start_fleet, worker_env
from tierq.core.dispatch import Backlogs
from tierq.core.errors import JobWaitTimeout
from tierq.core.results import JobResult
from tierq.devkit.processes import (
    ManagedProcess,
    cpu_seconds,
    log_events,
    settings_for,
    start_simulator,
)
from tierq.producers.client import TierqClient

LATENCY_MS = 100
FAIR = {"TIERS__FAST__FAIR_DISPATCH": "true"}
# The cost case's reference: the same build with fair dispatch off (it is on by default).
UNFAIR = {"TIERS__FAST__FAIR_DISPATCH": "false"}
# A case ends with jobs in hand (a backlog is left unfinished on purpose), and Celery's soft
# shutdown then sleeps its whole timeout (compose's 25 s): a short one ends each case sooner.
# Nothing measured runs during a shutdown.
SHUTDOWN_GRACE_SECONDS = 1.0
# Case 1: the tier's pace, and a worker sized to it (10 threads at 100 ms carry 100 calls/s,
# twice the limit): B's job waits behind about four jobs per thread (in the threads, prefetched
# and the dispatcher's queue target of two per slot).
STARVATION_RPM, STARVATION_IN_FLIGHT = 3_000, 10
# Cases 2 and 3: about 65 tokens a job (prompt and 40-token cap), about 30 jobs a second.
SHARE_TPM, SHARE_IN_FLIGHT = 120_000, 20
TENANT_WEIGHTS = {"a": 1.0, "b": 3.0}
# Case 4: limits far above the load, sent in the simulator's headers, so the worker learns
# them and runs the limiter on every job (as benchmarks.throughput does).
UNBINDING_RPM, UNBINDING_TPM = 60_000, 150_000_000
COST_IN_FLIGHT = 100
# Case 5: a paced tier (threads wait for the limiter, not in calls, at 0 ms latency), and a
# short lease, so the killed worker's jobs come back in seconds.
CRASH_RPM, CRASH_IN_FLIGHT, CRASH_LEASE_SECONDS = 3_000, 20, 5


@dataclass(frozen=True)
class Sizes:
    bulk_jobs: int  # case 1: tenant A's bulk jobs
    interactive_after_seconds: float  # case 1: when B starts, after A's first submission
    interactive_jobs: int  # case 1: B's jobs, one a second
    share_skip_seconds: float  # cases 2 and 3: from the last submission to the window
    share_seconds: float  # case 2: the window counted
    share_jobs_per_tenant: int  # case 2: enough for each to saturate the tier alone
    alone_seconds: float  # case 3
    alone_jobs: int
    cost_jobs: int  # case 4: jobs per round
    cost_rounds: int  # case 4: rounds of (without, with)
    crash_jobs: int  # case 5
    kill_after_seconds: float  # case 5: after the submission


SIZES: dict[Run, Sizes] = {
    # About 10 minutes.
    "full": Sizes(20_000, 30.0, 120, 10.0, 120.0, 5_000, 60.0, 3_000, 3_000, 2, 3_000, 20.0),
    # About 6 minutes: every case a half or less.
    "reduced": Sizes(5_000, 10.0, 60, 10.0, 60.0, 2_500, 30.0, 1_500, 1_500, 2, 1_500, 10.0),
    "quick": Sizes(600, 2.0, 5, 2.0, 5.0, 300, 4.0, 300, 100, 1, 200, 1.5),
}


def purge(redis_url: str, env: dict[str, str]) -> int:
    """Delete a case's own keys, queues and queue bindings (its prefixes are its own); how
    many."""
    client = redis.Redis.from_url(redis_url)
    deleted = 0
    with client:
        queues = env["TIERQ_QUEUE_PREFIX"]
        # Celery's queues, and kombu's records of their bindings.
        prefixes = (env["TIERQ_KEY_PREFIX"], queues, f"_kombu.binding.{queues}",
                    f"_kombu.binding_permanent.{queues}")  # fmt: skip
        for prefix in prefixes:
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{prefix}*", count=1_000):
                batch.append(key)
                if len(batch) == 1_000:
                    deleted += int(client.delete(*batch))
                    batch.clear()
            if batch:
                deleted += int(client.delete(*batch))
        # Messages a stopped or killed worker held unacknowledged, which kombu would put back
        # on the case's queue after the visibility timeout: [message, exchange, routing key].
        held = [
            tag
            for tag, entry in client.hscan_iter("unacked")
            if json.loads(entry)[2].startswith(queues)
        ]
        if held:
            deleted += int(client.hdel("unacked", *held))
            client.zrem("unacked_index", *held)
    return deleted


def local_redis_pid(client: redis.Redis) -> int | None:
    """The Redis server's pid when it runs on this machine (its CPU is then measurable)."""
    pid = int(client.info("server")["process_id"])
    return pid if Path(f"/proc/{pid}/stat").exists() else None


def finished(records: list[JobResult | None]) -> list[JobResult]:
    return [r for r in records if r is not None]


def wait_or_read(client: TierqClient, ids: list[str], timeout: float) -> list[JobResult]:
    """The jobs' records once all have finished, or as they stand after `timeout`."""
    try:
        return client.wait_many(ids, timeout=timeout)
    except JobWaitTimeout:
        return finished(client.get_many(ids))


class Bench:
    def __init__(self, redis_url: str, sizes: Sizes, logs: Path, console: Console) -> None:
        self.redis_url = redis_url
        self.sizes = sizes
        self.logs = logs
        self.console = console
        self.began = time.perf_counter()

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.began:6.1f}s  {text}[/]")

    def simulator(self, name: str, latency_ms: int, *args: str) -> tuple[ManagedProcess, str]:
        return start_simulator(
            self.logs / f"simulator-{name}-{uuid.uuid4().hex[:4]}.log",
            args=["--latency-ms", str(latency_ms), "--seed", "1", *args],
        )

    def env(self, base_url: str, **settings: str) -> dict[str, str]:
        """Workers' environment for a case: as compose runs them, a short shutdown grace."""
        grace = str(SHUTDOWN_GRACE_SECONDS)
        return worker_env(self.redis_url, base_url, SHUTDOWN_GRACE_SECONDS=grace, **settings)

    def end(self, env: dict[str, str], fleet: list[ManagedProcess], *others: Any) -> None:
        for process in [*fleet, *others]:
            if process is not None:
                process.stop()
        purge(self.redis_url, env)

    def starvation(self) -> dict[str, Any]:
        s = self.sizes
        rpm = STARVATION_RPM
        simulator, base_url = self.simulator("starvation", LATENCY_MS, "--rpm", str(rpm))
        env = self.env(base_url, **FAIR, RATE_LIMITS=json.dumps({MODEL: {"rpm": rpm}}))
        fleet: list[ManagedProcess] = []
        try:
            fleet = start_fleet(env, 1, STARVATION_IN_FLIGHT, self.logs)
            with TierqClient(settings_for(env)) as client:
                began = time.time()
                a_ids = submit(client, "a", range(s.bulk_jobs), "bulk")
                submitted_seconds = time.time() - began
                self.note(f"1. A: {s.bulk_jobs:,} bulk jobs in {submitted_seconds:.1f} s")
                sleep_until(began + s.interactive_after_seconds)
                self.note(f"1. B: one interactive job a second for {s.interactive_jobs} s")
                window_start = time.time()
                b_ids: list[str] = []
                for n in range(s.interactive_jobs):
                    sleep_until(window_start + n)
                    b_ids += submit(client, "b", [n], "interactive").values()
                window_end = window_start + s.interactive_jobs
                sleep_until(window_end)
                a_waiting = Backlogs(client.redis, client.settings).waiting("fast")
                b_records = wait_or_read(client, b_ids, 60)
                a_records = finished(client.get_many(list(a_ids.values())))
        finally:
            self.end(env, fleet, simulator)
        waits = [(r.started_at - r.submitted_at).total_seconds() for r in b_records if r.started_at]
        latencies = [
            (r.finished_at - r.submitted_at).total_seconds() for r in b_records if r.finished_at
        ]
        a_done = [r.finished_at.timestamp() for r in a_records if r.finished_at is not None]
        in_window = [at for at in a_done if window_start <= at < window_end]
        return {
            "rpm": rpm,
            "pacing_interval_seconds": 60 / rpm,
            "in_flight": STARVATION_IN_FLIGHT,
            "bulk_jobs": s.bulk_jobs,
            "bulk_submitted_in_seconds": submitted_seconds,
            "interactive_jobs": s.interactive_jobs,
            "interactive_after_seconds": s.interactive_after_seconds,
            "interactive_started": len(waits),
            "interactive_succeeded": sum(r.status.value == "succeeded" for r in b_records),
            "queue_wait_p50_seconds": percentile(waits, 0.5),
            "queue_wait_p99_seconds": percentile(waits, 0.99),
            "queue_wait_max_seconds": max(waits, default=float("nan")),
            "latency_p50_seconds": percentile(latencies, 0.5),
            "latency_p99_seconds": percentile(latencies, 0.99),
            "bulk_finished_in_window": len(in_window),
            "window_seconds": window_end - window_start,
            "bulk_finished_by_the_end": len(a_done),
            "bulk_waiting_at_the_end": sum(a_waiting.get("bulk", {}).values()),
        }

    def token_share(
        self, name: str, tenants: list[str], jobs: int, seconds: float
    ) -> dict[str, Any]:
        """`tenants` keep a TPM-limited tier busy; the tokens each was charged over `seconds`."""
        tpm = SHARE_TPM
        simulator, base_url = self.simulator(
            name, LATENCY_MS, "--tpm", str(tpm), "--record-limit", str(jobs * len(tenants) + 1_000)
        )
        env = self.env(
            base_url,
            **FAIR,
            RATE_LIMITS=json.dumps({MODEL: {"tpm": tpm}}),
            FAIR_SHARE__TENANT_WEIGHTS=json.dumps(TENANT_WEIGHTS),
        )
        fleet: list[ManagedProcess] = []
        try:
            fleet = start_fleet(env, 1, SHARE_IN_FLIGHT, self.logs)
            with TierqClient(settings_for(env)) as client:
                ids: dict[str, str] = {}
                # Chunk by chunk, tenant by tenant: both have jobs waiting from the start.
                for start in range(0, jobs, SUBMIT_CHUNK):
                    for tenant in tenants:
                        numbers = range(start, min(start + SUBMIT_CHUNK, jobs))
                        ids.update(submit(client, tenant, numbers, "default"))
                submitted = time.time()
                skip = self.sizes.share_skip_seconds
                window = (submitted + skip, submitted + skip + seconds)
                self.note(f"{name}: {len(ids):,} jobs in; counting {seconds:.0f} s")
                sleep_until(window[1])
                # Every tenant still had jobs waiting at the window's end: it was saturated.
                waiting = Backlogs(client.redis, client.settings).waiting("fast")
                time.sleep(2.0)  # the window's last calls answered and recorded
                calls = simulator_calls(base_url)
                counted = [
                    c
                    for c in calls
                    if c["status"] == 200
                    and c["marker"] is not None
                    and window[0] <= c["received_at"] < window[1]
                ]
                records = client.get_many([ids[c["marker"]] for c in counted])
        finally:
            self.end(env, fleet, simulator)
        tokens = dict.fromkeys(tenants, 0)
        calls_by_tenant = dict.fromkeys(tenants, 0)
        unrecorded = 0
        for call, record in zip(counted, records, strict=True):
            if record is None or record.usage is None:
                unrecorded += 1
                continue
            tenant = tenant_of(call["marker"])
            tokens[tenant] += record.usage.total_tokens
            calls_by_tenant[tenant] += 1
        total = sum(tokens.values())
        usages = [r.usage.total_tokens for r in records if r is not None and r.usage is not None]
        return {
            "tpm": tpm,
            "in_flight": SHARE_IN_FLIGHT,
            "tenants": tenants,
            "tenant_weights": {t: TENANT_WEIGHTS[t] for t in tenants},
            "jobs_per_tenant": jobs,
            "window_seconds": seconds,
            "skipped_seconds": self.sizes.share_skip_seconds,
            "calls_counted": len(counted),
            "calls_unrecorded": unrecorded,
            "calls_by_tenant": calls_by_tenant,
            "tokens_by_tenant": tokens,
            "token_share_by_tenant": {t: tokens[t] / total if total else 0.0 for t in tenants},
            "mean_tokens_per_call": statistics.fmean(usages) if usages else float("nan"),
            "fraction_of_limit": total / (tpm * seconds / 60),
            "responses_429": sum(
                c["status"] == 429 and window[0] <= c["received_at"] < window[1] for c in calls
            ),
            "waiting_at_window_end": waiting.get("default", {}),
        }

    def cost_round(self, base_url: str, fair: bool, jobs: int) -> dict[str, Any]:
        env = self.env(base_url, **(FAIR if fair else UNFAIR))
        fleet: list[ManagedProcess] = []
        try:
            fleet = start_fleet(env, 1, COST_IN_FLIGHT, self.logs)
            with TierqClient(settings_for(env)) as client:
                # One wave of as many jobs as threads opens the worker's connections.
                warm = submit(client, "w", range(COST_IN_FLIGHT), "default")
                client.wait_many(list(warm.values()), 120)
                redis_pid = local_redis_pid(client.redis)
                redis_before = cpu_seconds(redis_pid) if redis_pid else float("nan")
                worker_before = cpu_seconds(fleet[0].pid)
                producer_before = own_cpu_seconds()
                started = time.perf_counter()
                ids = submit(client, "a", range(jobs), "default")
                results = client.wait_many(list(ids.values()), 600)
                elapsed = time.perf_counter() - started
                worker_cpu = cpu_seconds(fleet[0].pid) - worker_before
                producer_cpu = own_cpu_seconds() - producer_before
                redis_cpu = cpu_seconds(redis_pid) - redis_before if redis_pid else float("nan")
        finally:
            self.end(env, fleet)
        return {
            "fair_dispatch": fair,
            "jobs": jobs,
            "seconds": elapsed,
            "jobs_per_second": jobs / elapsed,
            # Where the publish is paid: with fair dispatch, the worker's dispatcher publishes
            # what the producer (this process, submitting and waiting) publishes without it.
            "worker_cpu_ms_per_job": worker_cpu / jobs * 1000,
            "producer_cpu_ms_per_job": producer_cpu / jobs * 1000,
            "redis_cpu_ms_per_job": redis_cpu / jobs * 1000,
            "failed": sum(r.status.value != "succeeded" for r in results),
        }

    def cost(self) -> dict[str, Any]:
        s = self.sizes
        simulator, base_url = self.simulator(
            "cost", 0, "--rpm", str(UNBINDING_RPM), "--tpm", str(UNBINDING_TPM),
            "--record-limit", "0",
        )  # fmt: skip
        rounds: dict[str, list[dict[str, Any]]] = {"without": [], "with": []}
        try:
            for n in range(s.cost_rounds):
                for fair in (False, True):
                    self.note(f"4. round {n + 1}: {'with' if fair else 'without'} fair dispatch")
                    rounds["with" if fair else "without"].append(
                        self.cost_round(base_url, fair, s.cost_jobs)
                    )
        finally:
            simulator.stop()

        def mean(mode: str, figure: str) -> float:
            return statistics.fmean(r[figure] for r in rounds[mode])

        with_ = mean("with", "jobs_per_second")
        without = mean("without", "jobs_per_second")
        return {
            "latency_ms": 0,
            "in_flight": COST_IN_FLIGHT,
            "jobs_per_round": s.cost_jobs,
            "rounds": rounds,
            "jobs_per_second_with": with_,
            "jobs_per_second_without": without,
            "ratio": with_ / without,
            "worker_cpu_ms_per_job_with": mean("with", "worker_cpu_ms_per_job"),
            "worker_cpu_ms_per_job_without": mean("without", "worker_cpu_ms_per_job"),
            "producer_cpu_ms_per_job_with": mean("with", "producer_cpu_ms_per_job"),
            "producer_cpu_ms_per_job_without": mean("without", "producer_cpu_ms_per_job"),
            "redis_cpu_ms_per_job_with": mean("with", "redis_cpu_ms_per_job"),
            "redis_cpu_ms_per_job_without": mean("without", "redis_cpu_ms_per_job"),
            "failed": sum(r["failed"] for runs in rounds.values() for r in runs),
        }

    def crash(self) -> dict[str, Any]:
        s = self.sizes
        rpm = CRASH_RPM
        simulator, base_url = self.simulator(
            "crash", 0, "--rpm", str(rpm), "--record-limit", str(s.crash_jobs * 2 + 1_000)
        )
        env = self.env(
            base_url,
            **FAIR,
            RATE_LIMITS=json.dumps({MODEL: {"rpm": rpm}}),
            LEASE_SECONDS=str(CRASH_LEASE_SECONDS),
        )
        fleet: list[ManagedProcess] = []
        try:
            fleet = start_fleet(env, 1, CRASH_IN_FLIGHT, self.logs)
            with TierqClient(settings_for(env)) as client:
                ids = submit(client, "a", range(s.crash_jobs), "default")
                sleep_until(time.time() + s.kill_after_seconds)
                backlogs = Backlogs(client.redis, client.settings)
                waiting = sum(sum(t.values()) for t in backlogs.waiting("fast").values())
                queued = int(client.redis.llen(client.settings.queue_for("fast")))
                killed_at = time.time()
                fleet[0].signal(signal.SIGKILL)
                fleet[0].stop()  # reaps the killed process, closes its log
                self.note(f"5. worker killed: {waiting:,} in the backlog, {queued} queued")
                fleet += start_fleet(env, 1, CRASH_IN_FLIGHT, self.logs)
                results = wait_or_read(client, list(ids.values()), s.crash_jobs / rpm * 60 + 120)
                recovered_seconds = time.time() - killed_at
            calls = simulator_calls(base_url)
        finally:
            self.end(env, fleet, simulator)
        seen = times_seen(calls)
        first_call: dict[str, float] = {}
        for call in sorted(calls, key=lambda c: c["received_at"]):
            if call["marker"] is not None:
                first_call.setdefault(call["marker"], call["received_at"])
        twice = {m: n for m, n in seen.items() if n > 1}
        cut_off = [m for m in twice if first_call[m] <= killed_at]
        requeued = sum(
            event.get("event") == "job.requeued" for event in log_events(fleet[-1].log_path)
        )
        return {
            "rpm": rpm,
            "in_flight": CRASH_IN_FLIGHT,
            "lease_seconds": CRASH_LEASE_SECONDS,
            "jobs": s.crash_jobs,
            "killed_after_seconds": s.kill_after_seconds,
            "backlog_at_kill": waiting,
            "queued_at_kill": queued,
            "called_before_kill": sum(1 for t in first_call.values() if t <= killed_at),
            "recovered_in_seconds": recovered_seconds,
            "records": len(results),
            "succeeded": sum(r.status.value == "succeeded" for r in results),
            "not_succeeded": {
                r.job_id: r.status.value for r in results if r.status.value != "succeeded"
            },
            "markers_seen_once": sum(1 for n in seen.values() if n == 1),
            "markers_never_seen": s.crash_jobs - len(seen),
            "markers_seen_more_than_once": twice,
            "cut_off_by_the_kill": len(cut_off),
            "seen_twice_otherwise": len(twice) - len(cut_off),
            "requeued_by_the_reaper": requeued,
        }

    def run(self) -> dict[str, Any]:
        s = self.sizes
        figures: dict[str, Any] = {}
        self.note("1. starvation")
        figures["starvation"] = self.starvation()
        self.note("2. fair share, weights 1:3")
        figures["fair_share"] = self.token_share(
            "2. fair share", ["a", "b"], s.share_jobs_per_tenant, s.share_seconds
        )
        self.note("3. work-conserving: one tenant alone")
        figures["alone"] = self.token_share("3. alone", ["a"], s.alone_jobs, s.alone_seconds)
        self.note("4. cost: with and without fair dispatch")
        figures["cost"] = self.cost()
        self.note("5. crash")
        figures["crash"] = self.crash()
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run, about a minute")
    size.add_argument("--reduced", action="store_true", help="every case scaled down")
    parser.add_argument("--out", default="benchmarks/results/fairness.json")
    args = parser.parse_args()
    run: Run = "quick" if args.quick else "reduced" if args.reduced else "full"
    sizes = SIZES[run]
    console = Console(width=max(Console().width, 150))
    setup = setup_record(
        sizes=asdict(sizes),
        scaled_from_full=run != "full",
        shutdown_grace_seconds=SHUTDOWN_GRACE_SECONDS,
        model=MODEL,
        job={"max_tokens": MAX_TOKENS, "answer_tokens_asked": ANSWER_TOKENS,
             "usage": "prompt + max_tokens: every answer is cut at its cap"},
        cases={
            "starvation": {"latency_ms": LATENCY_MS, "rpm": STARVATION_RPM,
                           "limit": "configured and enforced by the simulator",
                           "workers": 1, "in_flight_per_worker": STARVATION_IN_FLIGHT},
            "fair_share": {"latency_ms": LATENCY_MS, "tpm": SHARE_TPM,
                           "limit": "configured and enforced by the simulator",
                           "tenant_weights": TENANT_WEIGHTS, "priority": "default",
                           "workers": 1, "in_flight_per_worker": SHARE_IN_FLIGHT},
            "cost": {"latency_ms": 0, "workers": 1, "in_flight_per_worker": COST_IN_FLIGHT,
                     "simulator_limits": {"rpm": UNBINDING_RPM, "tpm": UNBINDING_TPM},
                     "tierq_limits": "learned from the simulator's headers"},
            "crash": {"latency_ms": 0, "rpm": CRASH_RPM, "workers": "1, then 1 more",
                      "in_flight_per_worker": CRASH_IN_FLIGHT,
                      "lease_seconds": CRASH_LEASE_SECONDS},
        },
        tierq_ran_with=(
            "fair dispatch on the tier (off in the cost case's reference rounds), the shared "
            f"limiter on every job (limits as each row says), {AS_COMPOSE}"
        ),
    )  # fmt: skip

    return measure_and_record(
        name="fairness",
        run=run,
        setup=setup,
        default_redis_db=11,
        measure=lambda redis_url, logs: Bench(redis_url, sizes, logs, console).run(),
        rows_and_targets=rows_and_targets,
        title="tierq fair dispatch",
        out=Path(args.out),
        console=console,
    )


if __name__ == "__main__":
    sys.exit(main())
