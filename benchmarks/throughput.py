"""Throughput, latency, memory and CPU of tierq, beside the references, in one run.

    .venv/bin/python -m benchmarks.throughput            # the full run (a few minutes)
    .venv/bin/python -m benchmarks.throughput --quick    # a smoke run (under a minute)

Everything runs on this machine, on loopback, against the simulator; figures are relative to
references measured in the same run, so they compare like with like on a noisy machine:

1. Overhead limit: simulator latency 0 ms. Jobs/s end to end (submission to the result seen by
   the producer) for tierq and for a bare Celery task making the same SDK call on the threads
   pool at the same concurrency (benchmarks/bare_celery.py), in alternating rounds (two in
   the full run), averaged.
2. I/O-bound: latency 200 ms, concurrency 100 per process. Jobs/s for tierq with one worker
   process and with two, for the direct asyncio client at the same total concurrency
   (benchmarks/direct_client.py), and the Little's-law limit (calls in flight / latency).
   The bare Celery task runs here too: the ceiling of the framework tierq is built on.
3. Latency overhead: jobs submitted at an even rate of half the capacity measured in 2;
   p50/p95/p99 of (end-to-end latency - simulator latency), end-to-end being submission to
   the moment the producer is told the job finished (the notification `wait` sleeps on;
   reading the record then takes one more round trip, well under a millisecond here).
4. Memory: peak RSS of each worker process at full concurrency.
5. CPU per job: user+system CPU seconds of the worker process / jobs, beside the direct
   client's CPU per call; and, for the record, the Redis server's CPU per job when it runs
   on this machine (it shares the same cores), the whole path's CPU per job (worker, Redis,
   this process as the producer, the simulator) beside the direct client's (client,
   simulator), and how busy the machine's cores were meanwhile: when they are all busy,
   throughput follows the whole path's CPU per job.

Figures go to a table and to benchmarks/results/throughput.json.
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
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from benchmarks.machine import busy_share, machine_jiffies, own_cpu_seconds
from tierq.core.keys import Keys
from tierq.devkit.local_redis import ensure_redis
from tierq.devkit.processes import (
    ManagedProcess,
    cpu_seconds,
    settings_for,
    start_simulator,
    start_worker,
)
from tierq.producers.client import TierqClient

CONCURRENCY = 100
IO_LATENCY_MS = 200
# Told the worker pids once a run's warm-up is done and its measured jobs are about to go in
# (benchmarks/profile_worker.py attaches its profiler there).
OnMeasure = Callable[[list[int]], None]
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sizes:
    overhead_jobs: int
    io_jobs: int
    latency_seconds: float
    # Item 1 compares two runs of similar speed: alternating rounds average out drift.
    overhead_rounds: int


def mean_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.fmean(run[key] for run in runs) for key in runs[0]}


@dataclass
class Figures:
    values: dict[str, Any] = field(default_factory=dict)

    def __setitem__(self, key: str, value: Any) -> None:
        self.values[key] = value

    def __getitem__(self, key: str) -> Any:
        return self.values[key]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def request(i: int) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"job {i}"}]}


class Bench:
    def __init__(self, redis_url: str, logs: Path, console: Console) -> None:
        self.redis_url = redis_url
        self.logs = logs
        self.console = console

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/]")

    def simulator(self, latency_ms: int) -> tuple[ManagedProcess, str]:
        simulator, base_url = start_simulator(
            self.logs / f"simulator-{latency_ms}-{uuid.uuid4().hex[:6]}.log",
            args=["--latency-ms", str(latency_ms), "--record-limit", "0"],
        )
        self.simulator_pid = simulator.pid
        return simulator, base_url

    def redis_pid(self) -> int | None:
        """The Redis server's pid when it runs on this machine (its CPU is then measurable)."""
        pid = int(redis.Redis.from_url(self.redis_url).info("server")["process_id"])
        return pid if Path(f"/proc/{pid}/stat").exists() else None

    def tierq_env(self, base_url: str) -> dict[str, str]:
        isolation = uuid.uuid4().hex[:8]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIERQ_", "OPENAI_"))}
        env.update(
            TIERQ_REDIS_URL=self.redis_url,
            OPENAI_BASE_URL=base_url,
            OPENAI_API_KEY="sk-benchmark",
            TIERQ_QUEUE_PREFIX=f"bench-{isolation}.",
            TIERQ_KEY_PREFIX=f"bench-{isolation}:",
            TIERQ_LOG_FORMAT="json",
            TIERQ_LOG_LEVEL="INFO",
        )
        return env

    def tierq_run(
        self, base_url: str, jobs: int, workers: int, on_measure: OnMeasure | None = None
    ) -> dict[str, float]:
        """Jobs/s end to end, worker CPU per job and peak RSS, for `workers` processes."""
        env = self.tierq_env(base_url)
        fleet = [
            start_worker("fast", self.logs / f"tierq-{uuid.uuid4().hex[:6]}.log", env,
                         concurrency=CONCURRENCY, wait=False)
            for _ in range(workers)
        ]  # fmt: skip
        try:
            for worker in fleet:
                worker.wait_until(lambda w=worker: "worker.ready" in w.log_text())
            with TierqClient(settings_for(env)) as client:
                client.wait_many(client.submit_many(request(-i) for i in range(20)), 60)
                if on_measure:
                    on_measure([w.pid for w in fleet])
                redis_pid = self.redis_pid()
                redis_before = cpu_seconds(redis_pid) if redis_pid else 0.0
                cpu_before = sum(cpu_seconds(w.pid) for w in fleet)
                others_before = own_cpu_seconds() + cpu_seconds(self.simulator_pid)
                machine_before = machine_jiffies()
                started = time.perf_counter()
                ids = client.submit_many(request(i) for i in range(jobs))
                client.wait_many(ids, timeout=600)
                elapsed = time.perf_counter() - started
                machine_after = machine_jiffies()
                cpu = sum(cpu_seconds(w.pid) for w in fleet) - cpu_before
                redis_cpu = (cpu_seconds(redis_pid) - redis_before) if redis_pid else float("nan")
                others = own_cpu_seconds() + cpu_seconds(self.simulator_pid) - others_before
            return {
                "jobs_per_second": jobs / elapsed,
                "worker_cpu_ms_per_job": cpu / jobs * 1000,
                # Not in the figures, but on the same 2 cores: Redis's share per job,
                # and the whole path's (worker, Redis, this producer, the simulator).
                "redis_cpu_ms_per_job": redis_cpu / jobs * 1000,
                "path_cpu_ms_per_job": (cpu + redis_cpu + others) / jobs * 1000,
                "machine_busy": busy_share(machine_before, machine_after),
                "peak_rss_mb": max(peak_rss_mb(w.pid) for w in fleet),
            }
        finally:
            for worker in fleet:
                worker.stop()

    def bare_celery_run(
        self, base_url: str, jobs: int, on_measure: OnMeasure | None = None
    ) -> dict[str, float]:
        from celery.result import ResultSet

        from benchmarks import bare_celery

        queue = f"bare-{uuid.uuid4().hex[:8]}"
        env = {
            **os.environ,
            "BARE_REDIS_URL": self.redis_url,
            "BARE_BASE_URL": base_url,
            "BARE_CONCURRENCY": str(CONCURRENCY),
            "PYTHONPATH": str(ROOT),
        }
        worker = ManagedProcess(
            "bare-celery",
            [sys.executable, "-m", "celery", "-A", "benchmarks.bare_celery", "worker",
             "-P", "threads", "-c", str(CONCURRENCY), "-Q", queue, "-l", "WARNING",
             "--without-mingle", "--without-gossip", "-n", f"{queue}@%h"],
            self.logs / f"{queue}.log",
            env,
        ).start()  # fmt: skip
        app = bare_celery.app
        app.conf.broker_url = self.redis_url
        app.conf.result_backend = self.redis_url
        try:
            # Ready when it has answered the warm-up (it logs at WARNING, as tierq's do).
            send = app.send_task
            warm = [send("bare.complete", args=[request(-i)["messages"]], queue=queue)
                    for i in range(20)]  # fmt: skip
            ResultSet(warm).join_native(timeout=60)
            if on_measure:
                on_measure([worker.pid])
            cpu_before = cpu_seconds(worker.pid)
            started = time.perf_counter()
            with app.producer_or_acquire() as producer:
                results = [
                    send("bare.complete", args=[request(i)["messages"]], queue=queue,
                         producer=producer)
                    for i in range(jobs)
                ]  # fmt: skip
            ResultSet(results).join_native(timeout=600)
            elapsed = time.perf_counter() - started
            cpu = cpu_seconds(worker.pid) - cpu_before
            return {"jobs_per_second": jobs / elapsed, "worker_cpu_ms_per_job": cpu / jobs * 1000}
        finally:
            worker.stop()

    def direct_run(self, base_url: str, jobs: int, concurrency: int) -> dict[str, float]:
        simulator_before = cpu_seconds(self.simulator_pid)
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.direct_client", base_url, str(jobs),
             str(concurrency)],
            capture_output=True, text=True, timeout=600, cwd=ROOT, check=True,
        )  # fmt: skip
        simulator = cpu_seconds(self.simulator_pid) - simulator_before
        figures = json.loads(done.stdout)
        return {
            "jobs_per_second": jobs / figures["seconds"],
            "cpu_ms_per_call": figures["cpu_seconds"] / jobs * 1000,
            # The client's calls and the simulator's answers: the whole path, with no queue.
            "path_cpu_ms_per_job": (figures["cpu_seconds"] + simulator) / jobs * 1000,
            "machine_busy": figures["machine_busy"],
        }

    def latency_run(self, base_url: str, rate: float, seconds: float) -> dict[str, float]:
        """Open-loop submissions at `rate`/s; latency to the producer hearing of the end."""
        env = self.tierq_env(base_url)
        settings = settings_for(env)
        worker = start_worker("fast", self.logs / f"latency-{uuid.uuid4().hex[:6]}.log", env,
                              concurrency=CONCURRENCY)  # fmt: skip
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
                client.wait_many(client.submit_many(request(-i) for i in range(20)), 60)
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
            worker.stop()
        overheads = sorted(
            (heard[job] - at) * 1000 - IO_LATENCY_MS for job, at in sent.items() if job in heard
        )
        unheard = sum(job not in heard for job in sent)

        def pct(q: float) -> float:
            return overheads[min(len(overheads) - 1, round(q * (len(overheads) - 1)))]

        return {
            "rate": rate,
            "jobs": len(sent),
            "unheard": unheard,
            "p50_ms": statistics.median(overheads),
            "p95_ms": pct(0.95),
            "p99_ms": pct(0.99),
        }

    def run(self, sizes: Sizes) -> Figures:
        figures = Figures()
        simulator, base_url = self.simulator(0)
        try:
            self.note("1. overhead limit (latency 0 ms): tierq and a bare Celery task, alternated")
            tierq_runs, bare_runs = [], []
            for _ in range(sizes.overhead_rounds):
                tierq_runs.append(self.tierq_run(base_url, sizes.overhead_jobs, 1))
                bare_runs.append(self.bare_celery_run(base_url, sizes.overhead_jobs))
            figures["overhead_tierq"] = mean_of(tierq_runs)
            figures["overhead_bare_celery"] = mean_of(bare_runs)
            figures["overhead_rounds"] = {"tierq": tierq_runs, "bare_celery": bare_runs}
        finally:
            simulator.stop()
        simulator, base_url = self.simulator(IO_LATENCY_MS)
        try:
            self.note(
                "2. I/O-bound (latency 200 ms): tierq x1, x2, bare Celery x1, direct x100, x200"
            )
            figures["io_tierq_1"] = self.tierq_run(base_url, sizes.io_jobs, 1)
            figures["io_tierq_2"] = self.tierq_run(base_url, sizes.io_jobs, 2)
            figures["io_bare_celery"] = self.bare_celery_run(base_url, sizes.io_jobs)
            figures["io_direct_100"] = self.direct_run(base_url, sizes.io_jobs, CONCURRENCY)
            figures["io_direct_200"] = self.direct_run(base_url, sizes.io_jobs, 2 * CONCURRENCY)
            capacity = figures["io_tierq_1"]["jobs_per_second"]
            self.note(f"3. latency at half capacity ({capacity / 2:.0f} jobs/s)")
            figures["latency"] = self.latency_run(base_url, capacity / 2, sizes.latency_seconds)
        finally:
            simulator.stop()
        return figures


def render(figures: Figures, console: Console) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def row(measure: str, value: str, reference: str, ratio: float | None, target: str) -> None:
        rows.append({"measure": measure, "value": value, "reference": reference,
                     "ratio": ratio, "target": target})  # fmt: skip

    o_t, o_b = figures["overhead_tierq"], figures["overhead_bare_celery"]
    row("1. overhead limit, jobs/s", f"{o_t['jobs_per_second']:.0f}",
        f"bare Celery task {o_b['jobs_per_second']:.0f}",
        o_t["jobs_per_second"] / o_b["jobs_per_second"], ">= 1.0")  # fmt: skip
    row("   worker CPU per job (latency 0)", f"{o_t['worker_cpu_ms_per_job']:.2f} ms",
        f"bare Celery task {o_b['worker_cpu_ms_per_job']:.2f} ms",
        o_t["worker_cpu_ms_per_job"] / o_b["worker_cpu_ms_per_job"], "")  # fmt: skip
    d1, d2 = figures["io_direct_100"], figures["io_direct_200"]
    t1, t2 = figures["io_tierq_1"], figures["io_tierq_2"]
    little1 = CONCURRENCY / (IO_LATENCY_MS / 1000)
    row("2. I/O-bound, 1 worker, jobs/s", f"{t1['jobs_per_second']:.0f}",
        f"direct x100 {d1['jobs_per_second']:.0f}", t1["jobs_per_second"] / d1["jobs_per_second"],
        ">= 0.9")  # fmt: skip
    row("   I/O-bound, 2 workers, jobs/s", f"{t2['jobs_per_second']:.0f}",
        f"direct x200 {d2['jobs_per_second']:.0f}", t2["jobs_per_second"] / d2["jobs_per_second"],
        "")  # fmt: skip
    b1 = figures["io_bare_celery"]
    row("   bare Celery task, 1 worker, jobs/s", f"{b1['jobs_per_second']:.0f}",
        f"direct x100 {d1['jobs_per_second']:.0f}", b1["jobs_per_second"] / d1["jobs_per_second"],
        "framework ceiling")  # fmt: skip
    row(
        "   Little's-law limit, jobs/s",
        f"{little1:.0f} / {2 * little1:.0f}",
        f"direct x100 {d1['jobs_per_second']:.0f}",
        d1["jobs_per_second"] / little1,
        "",
    )
    lat = figures["latency"]
    row("3. latency overhead p50 / p95 / p99",
        f"{lat['p50_ms']:.1f} / {lat['p95_ms']:.1f} / {lat['p99_ms']:.1f} ms",
        f"{lat['jobs']} jobs at {lat['rate']:.0f}/s ({lat['unheard']} unheard)", None,
        "p50 <= 15, p99 <= 60")  # fmt: skip
    row(
        "4. peak RSS per worker (100 in flight)",
        f"{t1['peak_rss_mb']:.0f} MB",
        "",
        None,
        "<= 150 MB",
    )
    row("5. CPU per job, 1 worker (200 ms)", f"{t1['worker_cpu_ms_per_job']:.2f} ms",
        f"direct client {d1['cpu_ms_per_call']:.2f} ms/call",
        t1["worker_cpu_ms_per_job"] / d1["cpu_ms_per_call"], "<= 1.3")  # fmt: skip
    row("   bare Celery task CPU per job (200 ms)", f"{b1['worker_cpu_ms_per_job']:.2f} ms",
        f"direct client {d1['cpu_ms_per_call']:.2f} ms/call",
        b1["worker_cpu_ms_per_job"] / d1["cpu_ms_per_call"], "framework ceiling")  # fmt: skip
    row("   Redis server CPU per job (same run)", f"{t1['redis_cpu_ms_per_job']:.2f} ms", "",
        None, "")  # fmt: skip
    row("   CPU per job, whole path (+ Redis, producer, simulator)",
        f"{t1['path_cpu_ms_per_job']:.2f} ms",
        f"direct client + simulator {d1['path_cpu_ms_per_job']:.2f} ms",
        t1["path_cpu_ms_per_job"] / d1["path_cpu_ms_per_job"], "")  # fmt: skip
    row("   machine busy (all cores)", f"{t1['machine_busy']:.0%}",
        f"direct client {d1['machine_busy']:.0%}", None, "")  # fmt: skip

    table = Table(title="tierq throughput and latency (one run, loopback, simulator)")
    for column in ("measure", "tierq", "reference", "ratio", "target"):
        table.add_column(column, justify="left" if column in ("measure", "reference") else "right")
    for r in rows:
        ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else ""
        table.add_row(r["measure"], r["value"], r["reference"], ratio, r["target"])
    console.print(table)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run, under a minute")
    parser.add_argument("--out", default="benchmarks/results/throughput.json")
    args = parser.parse_args()
    sizes = Sizes(400, 400, 3.0, 1) if args.quick else Sizes(3000, 3000, 10.0, 2)
    console = Console(width=max(Console().width, 130))
    redis_url, embedded = ensure_redis(
        os.environ.get("TIERQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    )
    logs = Path(tempfile.mkdtemp(prefix="tierq-bench-"))
    try:
        figures = Bench(redis_url, logs, console).run(sizes)
    finally:
        if embedded is not None:
            embedded.stop()
    rows = render(figures, console)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"figures": figures.values, "rows": rows}, indent=2))
    console.print(f"[dim]Figures: {out}; logs: {logs}[/]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
