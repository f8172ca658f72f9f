"""Where a worker's CPU goes: py-spy profiles of tierq's worker and of the bare Celery task.

    .venv/bin/python -m benchmarks.profile_worker                  # 200 ms latency, 2,000 jobs
    .venv/bin/python -m benchmarks.profile_worker --latency-ms 0   # the overhead-limit case

Each worker runs under load exactly as in benchmarks/throughput.py (one process, threads pool,
concurrency 100, the simulator at the given latency; tierq's with the limiter on every job,
metrics served and Celery events on, the bare task with events on); py-spy samples the thread
holding the GIL, which is where a CPU-bound Python process spends its time. Samples are sorted
into a few shares by the frames on their stack, the first rule that matches winning, and
printed side by side with milliseconds of GIL time per job, so the two workers compare in
absolute terms too. The table goes to benchmarks/results/profile-<latency>ms.json with its
set-up, and the raw stacks (py-spy's collapsed format, for a flame graph) beside it.

py-spy reads another process's memory: it needs ptrace rights over the worker (root, or
kernel.yama.ptrace_scope 0), which the workers started here, as children, normally grant.
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from rich.console import Console

from benchmarks.record import Run, print_table, setup_record, write_results
from benchmarks.throughput import IO_IN_FLIGHT, SIMULATOR_RPM, SIMULATOR_TPM, Bench
from benchmarks.workers import AS_COMPOSE
from tierq.devkit.local_redis import ensure_redis

SAMPLES_PER_SECOND = 250
ATTACH_SECONDS = 1.0
RESULTS = Path("benchmarks/results")
FULL_JOBS = 2000  # measured jobs per worker in the full run

# (share, frame fragments): a sample goes to the first share with a fragment on its stack.
# py-spy names frames "function (package/module.py:line)".
SHARES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("the SDK call (request, httpx2, the answer read)", ("openai/", "httpx2/", "httpcore2/")),
    ("tierq's Redis scripts (claim; settle and announce)", ("JobStore.claim", "JobStore.settle")),
    ("Celery's result backend (the bare task's result)", ("celery/backends/",)),
    (
        "tierq's limiter (admission; token correction and headers)",
        ("(worker/admission.py", "(tierq/core/ratelimit.py"),
    ),
    (
        "the task's own code (tierq: validation, records, log line, metrics)",
        ("(worker/execution.py", "(worker/tasks.py", "(benchmarks/bare_celery.py"),
    ),
    (
        "tierq's background threads (leases, heartbeat, metrics server)",
        ("(worker/recovery.py", "(worker/monitoring.py", "(tierq/core/jobcontrol.py"),
    ),
    (
        "Celery's tracer and thread pool",
        ("celery/app/trace.py", "celery/concurrency/", "concurrent/futures/thread.py"),
    ),
    (
        "Celery's consumer (polling Redis, decoding messages, acks)",
        ("kombu/", "celery/worker/"),
    ),
)
OTHER = "other"


@dataclass
class Profile:
    shares: dict[str, int]
    samples: int
    jobs: int

    def gil_ms_per_job(self, share: str | None = None) -> float:
        count = self.samples if share is None else self.shares.get(share, 0)
        return count / SAMPLES_PER_SECOND / self.jobs * 1000


def classify(stack: str) -> str:
    for share, fragments in SHARES:
        if any(fragment in stack for fragment in fragments):
            return share
    return OTHER


def read_profile(raw: Path, jobs: int) -> Profile:
    shares: collections.Counter[str] = collections.Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            shares[classify(stack)] += int(count)
    return Profile(dict(shares), sum(shares.values()), jobs)


class Spy:
    """py-spy attached to the worker for the measured jobs only (not start-up or warm-up)."""

    def __init__(self, binary: str, raw: Path) -> None:
        self.binary = binary
        self.raw = raw
        self.process: subprocess.Popen[bytes] | None = None

    def attach(self, pids: list[int]) -> None:
        self.process = subprocess.Popen(
            [self.binary, "record", "--pid", str(pids[0]), "--gil", "--nonblocking",
             "--rate", str(SAMPLES_PER_SECOND), "--format", "raw", "--output", str(self.raw)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        # py-spy takes a moment to attach; the idle worker waits for it, so no job is missed.
        time.sleep(ATTACH_SECONDS)

    def detach(self) -> None:
        """Stop sampling and have py-spy write its file (it does so on SIGINT)."""
        if self.process is None:
            raise RuntimeError("py-spy was never attached: the run ended before its warm-up")
        self.process.send_signal(signal.SIGINT)
        _, stderr = self.process.communicate(timeout=60)
        if not self.raw.exists():
            raise RuntimeError(f"py-spy wrote no profile: {stderr.decode(errors='replace')}")


def profile(bench: Bench, kind: str, base_url: str, jobs: int, spy: Spy) -> Profile:
    if kind == "tierq":
        bench.tierq_run(base_url, jobs, 1, IO_IN_FLIGHT, on_measure=spy.attach)
    else:
        bench.bare_celery_run(base_url, jobs, IO_IN_FLIGHT, on_measure=spy.attach)
    spy.detach()
    result = read_profile(spy.raw, jobs)
    if not result.samples:
        raise RuntimeError(f"py-spy took no samples of the {kind} worker: try more --jobs")
    return result


def share_table(profiles: dict[str, Profile]) -> tuple[list[str], list[list[str]]]:
    """Columns and rows: each share's part of the GIL time and its milliseconds per job."""
    columns = ["share"]
    for kind in profiles:
        columns += [f"{kind}: %", f"{kind}: ms/job"]
    rows = []
    for share in [name for name, _ in SHARES] + [OTHER, "total"]:
        cells = [share]
        for p in profiles.values():
            if share == "total":
                cells += ["100%", f"{p.gil_ms_per_job():.2f}"]
            else:
                count = p.shares.get(share, 0)
                cells += [f"{count / p.samples:.0%}", f"{p.gil_ms_per_job(share):.2f}"]
        rows.append(cells)
    return columns, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency-ms", type=int, default=200, help="the simulator's latency")
    parser.add_argument("--jobs", type=int, default=FULL_JOBS, help="measured jobs per worker")
    parser.add_argument(
        "--only", choices=("tierq", "bare"), help="profile one worker instead of both"
    )
    parser.add_argument("--out-dir", type=Path, default=RESULTS, help="where the raw stacks go")
    args = parser.parse_args()
    binary = shutil.which("py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}")
    binary = binary or shutil.which("py-spy")
    if binary is None:
        print("py-spy is not installed: ops/bootstrap.sh dev installs it", file=sys.stderr)
        return 2
    console = Console(width=max(Console().width, 130))
    redis_url, embedded = ensure_redis(
        os.environ.get("TIERQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13")
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    bench = Bench(redis_url, Path(tempfile.mkdtemp(prefix="tierq-profile-")), console)
    kinds = [args.only] if args.only else ["tierq", "bare"]
    profiles: dict[str, Profile] = {}
    simulator, base_url = bench.simulator(args.latency_ms)
    try:
        for kind in kinds:
            raw = args.out_dir / f"profile-{kind}-{args.latency_ms}ms.txt"
            raw.unlink(missing_ok=True)
            console.print(f"[dim]profiling {kind}: {args.jobs} jobs[/]")
            profiles[kind] = profile(bench, kind, base_url, args.jobs, Spy(binary, raw))
    finally:
        simulator.stop()
        if embedded is not None:
            embedded.stop()
    columns, rows = share_table(profiles)
    title = f"Worker CPU by share (GIL held; {args.latency_ms} ms latency, 100 in flight)"
    print_table(columns, rows, console, title)
    name = f"profile-{args.latency_ms}ms"
    setup = setup_record(
        latency_ms=args.latency_ms,
        in_flight=IO_IN_FLIGHT,
        jobs=args.jobs,
        workers=kinds,
        samples_per_second=SAMPLES_PER_SECOND,
        simulator_limits={"rpm": SIMULATOR_RPM, "tpm": SIMULATOR_TPM},
        tierq_ran_with=f"the shared limiter on every job (limits learned), {AS_COMPOSE}",
    )
    figures = {kind: asdict(p) for kind, p in profiles.items()}
    out = args.out_dir / f"{name}.json"
    run: Run = "full" if args.jobs >= FULL_JOBS else "reduced" if args.jobs >= 1000 else "quick"
    write_results(out, name, run, setup, (columns, rows), [], figures)
    console.print(f"[dim]Figures: {out}; raw stacks (py-spy's collapsed format): "
                  f"{args.out_dir}/profile-*.txt[/]")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
