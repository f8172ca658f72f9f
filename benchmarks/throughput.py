"""Throughput, CPU, memory and latency of tierq beside the references, in one run.

    .venv/bin/python -m benchmarks.throughput             # the full run (about 8 minutes)
    .venv/bin/python -m benchmarks.throughput --reduced   # fewer jobs, for a shared machine
    .venv/bin/python -m benchmarks.throughput --quick     # a smoke run (under a minute)

Everything runs on this machine, on loopback, against the simulator. tierq's workers run as
docker-compose.yml runs them (metrics served, Celery task events on) with the shared limiter on
every job: the simulator enforces limits well above the offered load and says so in its
`x-ratelimit-*` headers, the workers learn them from the warm-up's answers, and from then on
every job goes through the limiter's admission and token-correction scripts. Figures are
relative to references measured in the same run, so they compare like with like:

1. Overhead limit (latency 0 ms, 100 in flight, 1 worker): jobs/s end to end (submission to the
   result seen by the producer) and worker CPU per job, beside the bare Celery task making the
   same call, published the same way (benchmarks/bare_celery.py), in alternating rounds.
2. 200 ms latency, 100 in flight per process: tierq with one worker and with two, the bare
   Celery task, and the direct `AsyncOpenAI` + semaphore client at the same total in flight
   (benchmarks/direct_client.py); worker CPU per job against the client's CPU per call, peak
   RSS, Redis's and the whole path's CPU per job, how busy the cores were.
3. Realistic latency (5 s, 1,000 in flight, 1 worker): jobs/s, worker CPU per job and peak RSS
   against the direct client with 1,000 in flight.
4. Latency overhead at 200 ms: jobs submitted at an even rate of half the capacity measured in
   2; p50/p95/p99 of (submission to the producer being told the job ended) - 200 ms.

Figures go to a table and to benchmarks/results/throughput.json (`--out`), with the set-up and
each target met or not; `python -m benchmarks.render` copies the table into the docs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rich.console import Console

from benchmarks import bare_celery
from benchmarks.machine import busy_share, machine_jiffies, own_cpu_seconds, peak_rss_mb
from benchmarks.record import Row, Run, print_table, setup_record, write_results
from benchmarks.throughput_table import rows_and_targets
from benchmarks.workers import AS_COMPOSE, learned_limits, start_fleet, worker_env
from tierq.core.keys import Keys
from tierq.devkit.local_redis import ensure_redis
from tierq.devkit.processes import ManagedProcess, cpu_seconds, settings_for, start_simulator
from tierq.producers.client import TierqClient

MODEL = "gpt-4o-mini"
# The simulator's limits: far above any load here (1,000 requests/s), so they never bind, but
# sent in its headers, so the workers learn them and run the limiter on every job.
SIMULATOR_RPM = 60_000
SIMULATOR_TPM = 150_000_000
IO_LATENCY_MS, IO_IN_FLIGHT = 200, 100
REALISTIC_LATENCY_MS, REALISTIC_IN_FLIGHT = 5_000, 1_000
WARM_UP_JOBS = 20
# Told the worker pids once a run's warm-up is done and its measured jobs are about to go in
# (benchmarks/profile_worker.py attaches its profiler there).
OnMeasure = Callable[[list[int]], None]
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    overhead_jobs: int
    overhead_rounds: int  # alternating rounds average out drift between two similar speeds
    io_jobs: int
    realistic_jobs: int
    latency_seconds: float
    # The smoke run shrinks the realistic case too (1,000 calls of 5 s take a minute to start
    # on a busy 2-core machine); its table says what it ran.
    realistic_latency_ms: int = REALISTIC_LATENCY_MS
    realistic_in_flight: int = REALISTIC_IN_FLIGHT
    # Two worker processes against the direct client at 200 in flight (not in the smoke run).
    two_workers: bool = True


SIZES: dict[Run, Sizes] = {
    "full": Sizes(3_000, 2, 3_000, 10_000, 10.0),
    "reduced": Sizes(1_500, 1, 1_500, 3_000, 6.0),
    "quick": Sizes(
        150,
        1,
        150,
        300,
        1.5,
        realistic_latency_ms=1_000,
        realistic_in_flight=100,
        two_workers=False,
    ),
}


def warm_up(in_flight: int) -> int:
    """Jobs run before measuring: enough to open every connection of the pool."""
    return max(WARM_UP_JOBS, in_flight)


def request(i: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"job {i}"}]}


def mean_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(run[key] for run in runs) for key in runs[0]}


class Bench:
    def __init__(self, redis_url: str, logs: Path, console: Console) -> None:
        self.redis_url = redis_url
        self.logs = logs
        self.console = console
        self.simulator_pid = 0
        self.began = time.perf_counter()
        # What the workers learned and served, as proof the set-up was what the table says.
        self.checks: dict[str, Any] = {}

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.began:6.1f}s  {text}[/]")

    def simulator(self, latency_ms: int) -> tuple[ManagedProcess, str]:
        simulator, base_url = start_simulator(
            self.logs / f"simulator-{latency_ms}-{uuid.uuid4().hex[:6]}.log",
            args=["--latency-ms", str(latency_ms), "--record-limit", "0",
                  "--rpm", str(SIMULATOR_RPM), "--tpm", str(SIMULATOR_TPM)],
        )  # fmt: skip
        self.simulator_pid = simulator.pid
        return simulator, base_url

    def redis_pid(self) -> int | None:
        """The Redis server's pid when it runs on this machine (its CPU is then measurable)."""
        pid = int(redis.Redis.from_url(self.redis_url).info("server")["process_id"])
        return pid if Path(f"/proc/{pid}/stat").exists() else None

    def tierq_run(
        self,
        base_url: str,
        jobs: int,
        workers: int,
        in_flight: int,
        on_measure: OnMeasure | None = None,
    ) -> dict[str, float]:
        """Jobs/s end to end, worker CPU per job and peak RSS, for `workers` processes."""
        env = worker_env(self.redis_url, base_url)
        self.note(f"tierq x{workers}, {in_flight} in flight: starting")
        fleet = start_fleet(env, workers, in_flight, self.logs)
        self.note(f"tierq x{workers}: ready, {jobs} jobs")
        try:
            with TierqClient(settings_for(env)) as client:
                # One wave of `in_flight` jobs opens the worker's connections, not measured (the
                # direct client warms its pool the same way).
                warm = client.submit_many(request(-i) for i in range(warm_up(in_flight)))
                client.wait_many(warm, 120)
                if on_measure:
                    on_measure([w.pid for w in fleet])
                redis_pid = self.redis_pid()
                redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
                cpu_before = sum(cpu_seconds(w.pid) for w in fleet)
                others_before = own_cpu_seconds() + cpu_seconds(self.simulator_pid)
                machine_before = machine_jiffies()
                started = time.perf_counter()
                ids = client.submit_many(request(i) for i in range(jobs))
                results = client.wait_many(ids, 900)
                elapsed = time.perf_counter() - started
                machine_after = machine_jiffies()
                cpu = sum(cpu_seconds(w.pid) for w in fleet) - cpu_before
                redis_cpu = (cpu_seconds(redis_pid) - redis_before) if redis_pid else float("nan")
                others = own_cpu_seconds() + cpu_seconds(self.simulator_pid) - others_before
            self.check_set_up(env, fleet)
            return {
                "jobs_per_second": jobs / elapsed,
                "worker_cpu_ms_per_job": cpu / jobs * 1000,
                # Not a target, but on the same cores: Redis's share per job, and the whole
                # path's (worker, Redis, this producer, the simulator).
                "redis_cpu_ms_per_job": redis_cpu / jobs * 1000,
                "path_cpu_ms_per_job": (cpu + redis_cpu + others) / jobs * 1000,
                "machine_busy": busy_share(machine_before, machine_after),
                "peak_rss_mb": max(peak_rss_mb(w.pid) for w in fleet),
                "retried": sum(max(0, r.attempts - 1) for r in results),
                "failed": sum(r.status.value == "failed" for r in results),
            }
        finally:
            for worker in fleet:
                worker.stop()

    def check_set_up(self, env: dict[str, str], fleet: list[ManagedProcess]) -> None:
        """Record that the limiter had learned the simulator's limits and metrics were served."""
        learned = learned_limits(settings_for(env), MODEL)
        port = fleet[0].env["TIERQ_METRICS_PORT"] if fleet[0].env else ""
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            served = response.status == 200 and b"tierq_" in response.read()
        self.checks = {"limits_learned": learned, "metrics_served": served}
        if not learned or not served:
            raise RuntimeError(f"the workers did not run as the table says: {self.checks}")

    def bare_celery_run(
        self, base_url: str, jobs: int, in_flight: int, on_measure: OnMeasure | None = None
    ) -> dict[str, float]:
        from celery.result import ResultSet

        self.note(f"bare Celery, {in_flight} in flight: {jobs} jobs")
        queue = f"bare-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "BARE_REDIS_URL": self.redis_url,
            "BARE_BASE_URL": base_url,
            "BARE_CONCURRENCY": str(in_flight),
            "PYTHONPATH": str(ROOT),
        }
        worker = ManagedProcess(
            "bare-celery",
            [sys.executable, "-m", "celery", "-A", "benchmarks.bare_celery", "worker",
             "-P", "threads", "-c", str(in_flight), "-Q", queue, "-l", "WARNING", "-E",
             "--without-mingle", "--without-gossip", "-n", f"{queue}@%h"],
            self.logs / f"{queue}.log",
            env,
        ).start()  # fmt: skip
        bare_celery.app.conf.update(broker_url=self.redis_url, result_backend=self.redis_url)
        try:
            # Ready when it has answered the warm-up (it logs at WARNING, as tierq's do).
            warm = bare_celery.publish_many((request(-i) for i in range(warm_up(in_flight))), queue)
            ResultSet(warm).join_native(timeout=120)
            if on_measure:
                on_measure([worker.pid])
            cpu_before = cpu_seconds(worker.pid)
            started = time.perf_counter()
            results = bare_celery.publish_many((request(i) for i in range(jobs)), queue)
            ResultSet(results).join_native(timeout=900)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(worker.pid) - cpu_before
            return {
                "jobs_per_second": jobs / elapsed,
                "worker_cpu_ms_per_job": cpu / jobs * 1000,
                "peak_rss_mb": peak_rss_mb(worker.pid),
            }
        finally:
            worker.stop()

    def direct_run(self, base_url: str, jobs: int, in_flight: int) -> dict[str, float]:
        self.note(f"direct client, {in_flight} in flight: {jobs} jobs")
        simulator_before = cpu_seconds(self.simulator_pid)
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.direct_client", base_url, str(jobs),
             str(in_flight)],
            capture_output=True, text=True, timeout=900, cwd=ROOT, check=True,
        )  # fmt: skip
        simulator = cpu_seconds(self.simulator_pid) - simulator_before
        figures = json.loads(done.stdout)
        return {
            # Calls that failed (after their retries) are not counted as done.
            "jobs_per_second": (jobs - figures["failed"]) / figures["seconds"],
            "cpu_ms_per_call": figures["cpu_seconds"] / jobs * 1000,
            # The client's calls and the simulator's answers: the whole path, with no queue.
            "path_cpu_ms_per_job": (figures["cpu_seconds"] + simulator) / jobs * 1000,
            "machine_busy": figures["machine_busy"],
            "peak_rss_mb": figures["peak_rss_mb"],
            "retried": figures["retried"],
            "failed": figures["failed"],
        }

    def latency_run(self, base_url: str, rate: float, seconds: float) -> dict[str, float]:
        """Open-loop submissions at `rate`/s; latency to the producer hearing of the end."""
        env = worker_env(self.redis_url, base_url)
        settings = settings_for(env)
        fleet = start_fleet(env, 1, IO_IN_FLIGHT, self.logs)
        heard: dict[str, float] = {}
        listener = redis.Redis.from_url(self.redis_url).pubsub(ignore_subscribe_messages=True)
        listener.psubscribe(Keys(settings.key_prefix).done_channels)
        stop = threading.Event()

        def listen() -> None:
            # What a waiting producer is told: the job's "done" announcement.
            while not stop.is_set():
                message = listener.get_message(timeout=0.1)
                if message and message["type"] == "pmessage":
                    heard[message["data"].decode()] = time.perf_counter()

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()
        sent: dict[str, float] = {}
        try:
            with TierqClient(settings) as client:
                warm = client.submit_many(request(-i) for i in range(warm_up(IO_IN_FLIGHT)))
                client.wait_many(warm, 120)
                heard.clear()
                interval = 1 / rate
                begin = time.perf_counter()
                n = 0
                while (now := time.perf_counter()) - begin < seconds:
                    due = begin + n * interval
                    if now < due:
                        time.sleep(due - now)
                    submitted = time.perf_counter()
                    sent[client.submit(request(n))] = submitted
                    n += 1
                client.wait_many(list(sent), timeout=120)
            time.sleep(0.3)
        finally:
            stop.set()
            thread.join()
            listener.close()
            for worker in fleet:
                worker.stop()
        overheads = sorted(
            (heard[job] - at) * 1000 - IO_LATENCY_MS for job, at in sent.items() if job in heard
        )

        def pct(q: float) -> float:
            return overheads[min(len(overheads) - 1, round(q * (len(overheads) - 1)))]

        return {
            "rate": rate,
            "jobs": len(sent),
            "unheard": sum(job not in heard for job in sent),
            "p50_ms": statistics.median(overheads),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
        }

    def run(self, sizes: Sizes) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        simulator, base_url = self.simulator(0)
        try:
            self.note("1. overhead limit (0 ms): tierq and the bare Celery task, alternated")
            tierq_runs, bare_runs = [], []
            for _ in range(sizes.overhead_rounds):
                tierq_runs.append(self.tierq_run(base_url, sizes.overhead_jobs, 1, IO_IN_FLIGHT))
                bare_runs.append(self.bare_celery_run(base_url, sizes.overhead_jobs, IO_IN_FLIGHT))
            figures["overhead_tierq"] = mean_of(tierq_runs)
            figures["overhead_bare_celery"] = mean_of(bare_runs)
            figures["overhead_rounds"] = {"tierq": tierq_runs, "bare_celery": bare_runs}
        finally:
            simulator.stop()
        simulator, base_url = self.simulator(IO_LATENCY_MS)
        try:
            self.note("2. 200 ms: tierq, bare Celery, direct client")
            io = sizes.io_jobs
            figures["io_tierq_1"] = self.tierq_run(base_url, io, 1, IO_IN_FLIGHT)
            if sizes.two_workers:
                figures["io_tierq_2"] = self.tierq_run(base_url, io, 2, IO_IN_FLIGHT)
            figures["io_bare_celery"] = self.bare_celery_run(base_url, io, IO_IN_FLIGHT)
            figures["io_direct_100"] = self.direct_run(base_url, io, IO_IN_FLIGHT)
            if sizes.two_workers:
                figures["io_direct_200"] = self.direct_run(base_url, io, 2 * IO_IN_FLIGHT)
            capacity = figures["io_tierq_1"]["jobs_per_second"]
            self.note(f"4. latency at half capacity ({capacity / 2:.0f} jobs/s)")
            figures["latency"] = self.latency_run(base_url, capacity / 2, sizes.latency_seconds)
        finally:
            simulator.stop()
        simulator, base_url = self.simulator(sizes.realistic_latency_ms)
        try:
            latency, in_flight = sizes.realistic_latency_ms, sizes.realistic_in_flight
            self.note(f"3. {latency} ms, {in_flight} in flight: tierq x1, direct")
            jobs = sizes.realistic_jobs
            figures["real"] = {"latency_ms": latency, "in_flight": in_flight, "jobs": jobs}
            figures["real_tierq_1"] = self.tierq_run(base_url, jobs, 1, in_flight)
            figures["real_direct"] = self.direct_run(base_url, jobs, in_flight)
        finally:
            simulator.stop()
        figures["set_up_checks"] = self.checks
        return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    size.add_argument("--reduced", action="store_true", help="half the jobs (a shared machine)")
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    args = parser.parse_args()
    run: Run = "quick" if args.quick else "reduced" if args.reduced else "full"
    sizes = SIZES[run]
    console = Console(width=max(Console().width, 150))
    setup = setup_record(
        simulator_limits={"rpm": SIMULATOR_RPM, "tpm": SIMULATOR_TPM},
        tierq_limits="learned from the simulator's x-ratelimit-* headers (none configured)",
        tierq_ran_with=(
            "the shared limiter on every job (limits learned from the simulator's headers), "
            + AS_COMPOSE
        ),
        scenarios={
            "overhead": {"latency_ms": 0, "in_flight": IO_IN_FLIGHT, "jobs": sizes.overhead_jobs,
                         "rounds": sizes.overhead_rounds},
            "io": {"latency_ms": IO_LATENCY_MS, "in_flight_per_worker": IO_IN_FLIGHT,
                   "jobs": sizes.io_jobs},
            "realistic": {"latency_ms": sizes.realistic_latency_ms,
                          "in_flight": sizes.realistic_in_flight, "jobs": sizes.realistic_jobs},
            "latency": {"latency_ms": IO_LATENCY_MS, "seconds": sizes.latency_seconds},
        },
        warm_up_jobs="one wave of the in-flight count (at least 20), not measured",
        references={
            "direct": "AsyncOpenAI + asyncio.Semaphore(in flight), pool as large, one process",
            "bare_celery": bare_celery.__doc__.split("\n\n")[1].replace("\n", " "),
        },
    )  # fmt: skip
    redis_url, embedded = ensure_redis(
        os.environ.get("TIERQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    )
    logs = Path(tempfile.mkdtemp(prefix="tierq-bench-"))
    try:
        figures = Bench(redis_url, logs, console).run(sizes)
    finally:
        if embedded is not None:
            embedded.stop()
    rows, targets = rows_and_targets(figures)
    table = (Row.COLUMNS, [row.cells() for row in rows])
    print_table(*table, console, f"tierq throughput ({run} run)")
    out = Path(args.out)
    write_results(out, "throughput", run, setup, table, targets, figures)
    console.print(f"[dim]Figures: {out}; logs: {logs}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
