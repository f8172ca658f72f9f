"""The drop-in path: the `openai` SDK pointed at the gateway, against the SDK calling the API.

    .venv/bin/python -m benchmarks.dropin             # the full run (about 6 minutes)
    .venv/bin/python -m benchmarks.dropin --reduced   # fewer calls, a shared machine (3 min)
    .venv/bin/python -m benchmarks.dropin --quick     # a smoke run (under a minute)

An app adopts tierq by changing `base_url` and `api_key` (docs/gateway.md, drop-in section).
Everything runs on this machine, on loopback, against the simulator; each case starts its own
simulator, workers (as docker-compose.yml runs them: metrics served, Celery events on, the
shared limiter on) and one gateway process (its `/metrics` served), and ends them all:

1. Latency overhead at half capacity (200 ms): the fleet's capacity is measured first (jobs
   submitted straight to the queue, as benchmarks.throughput does); then N closed-loop SDK
   clients (`openai.OpenAI`, one thread each), N chosen so they offer half that capacity, call
   for the same time straight to the simulator and through the gateway, in alternating rounds.
   The overhead is the difference of the two distributions' p50 and p99.
2. A shared limit: five apps (five processes, five tenants, an `AsyncOpenAI` each) send 200
   calls each, all at once, against a simulator enforcing an RPM limit well below their
   demand; the workers are configured with the limit (`TIERQ_RATE_LIMITS`). Measured: the
   429s any app saw (the SDK's own retries are off, so every one would be seen), the share
   of the limit used from the first answer to the last (as benchmarks.rate_limits measures
   it), the calls answered, and the 429s the simulator sent the workers (theirs to wait out).
3. Held connections: one `AsyncOpenAI` (its pool as large as the calls) holds 2,000 calls at
   once in one gateway process, at 5 s latency, on two workers of 1,000 threads each; the
   gateway's peak RSS (VmHWM) and the errors.

The apps' code is benchmarks/dropin_clients.py, the table's benchmarks/dropin_table.py.
Figures go to a table and to benchmarks/results/dropin.json (`--out`), with the set-up and
each target met or not; `python -m benchmarks.render` copies the table into the docs. Nothing
in Redis is flushed: every run uses key and queue prefixes of its own, on database 12 unless
`TIERQ_BENCH_REDIS_URL` says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import sys
import time
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx2
import openai
from rich.console import Console

from benchmarks.dropin_clients import (
    HOLD_SECONDS,
    MODEL,
    WARM_UP_CALLS,
    app_calls,
    closed_loop,
    hold_calls,
    percentile,
    request,
)
from benchmarks.dropin_table import rows_and_targets
from benchmarks.machine import peak_rss_mb
from benchmarks.record import Run, measure_and_record, setup_record
from benchmarks.workers import AS_COMPOSE, learned_limits, start_fleet, worker_env
from tierq.core.keys import Keys
from tierq.core.redis_clients import async_client
from tierq.devkit.processes import (
    ManagedProcess,
    cpu_seconds,
    settings_for,
    start_gateway,
    start_simulator,
)
from tierq.producers.client import TierqClient
from tierq.producers.gateway.auth import KeyStore

# Cases 1 and 3: limits far above the load, sent in the simulator's headers, so the workers
# learn them and run the limiter on every job (as benchmarks.throughput does).
UNBINDING_RPM, UNBINDING_TPM = 60_000, 150_000_000
LATENCY_MS = 200
IN_FLIGHT = 100  # a worker's threads in cases 1 and 2
SHARED_LIMIT_WORKERS, SHARED_LIMIT_IN_FLIGHT = 2, 20
APPS = 5
METRICS_KEY = "bench-metrics-key"


@dataclass(frozen=True)
class Sizes:
    capacity_jobs: int  # case 1: jobs submitted at once to measure the fleet's capacity
    latency_rounds: int  # case 1: alternating rounds of (direct, gateway)
    latency_round_seconds: float
    calls_per_app: int  # case 2: each app's calls, all at once
    shared_rpm: int  # case 2: the simulator's limit
    held_calls: int  # case 3
    held_latency_ms: int
    held_workers: int
    held_in_flight: int  # per worker


SIZES: dict[Run, Sizes] = {
    # About 6 minutes: 2 x 2 x 45 s, 1,000 calls at 600 RPM (100 s), 2,000 held calls.
    "full": Sizes(600, 2, 45.0, 200, 600, 2_000, 5_000, 2, 1_000),
    # About 3 minutes on a busy machine: one round, 1,000 calls at 1,200 RPM (50 s), 1,000
    # held calls on one worker.
    "reduced": Sizes(400, 1, 30.0, 200, 1_200, 1_000, 5_000, 1, 1_000),
    "quick": Sizes(100, 1, 4.0, 20, 1_200, 100, 1_000, 1, 100),
}


def raise_open_files(needed: int) -> int:
    """The soft open-files limit, raised towards the hard one if `needed` is more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        soft = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def stop_all(gateway: Any, fleet: list[Any], simulator: Any) -> None:
    """Stop a case's processes: the gateway (if it started), the workers, the simulator."""
    if gateway is not None:
        gateway.stop()
    for worker in fleet:
        worker.stop()
    simulator.stop()


class Bench:
    def __init__(self, redis_url: str, sizes: Sizes, logs: Path, console: Console) -> None:
        self.redis_url = redis_url
        self.sizes = sizes
        self.logs = logs
        self.console = console
        self.began = time.perf_counter()
        self.checks: dict[str, Any] = {}

    def note(self, text: str) -> None:
        self.console.print(f"[dim]{time.perf_counter() - self.began:6.1f}s  {text}[/]")

    def simulator(self, name: str, latency_ms: int, *limits: str) -> tuple[ManagedProcess, str]:
        return start_simulator(
            self.logs / f"simulator-{name}.log",
            args=["--latency-ms", str(latency_ms), "--seed", "1", *limits],
        )

    def gateway(self, env: dict[str, str], name: str) -> tuple[ManagedProcess, str]:
        gateway_env = {
            **env,
            # Every case's held requests fit in one tenant's share, and the hold outlasts
            # every case's longest wait.
            "TIERQ_GATEWAY__MAX_WAITING_PER_TENANT": str(max(self.sizes.held_calls, 200)),
            "TIERQ_GATEWAY__MAX_WAIT_SECONDS": str(HOLD_SECONDS),
            "TIERQ_GATEWAY__TENANT_MAX_IN_FLIGHT": "10000",
            "TIERQ_GATEWAY__METRICS_KEY": METRICS_KEY,
        }
        return start_gateway(self.logs / f"gateway-{name}.log", gateway_env)

    def keys(self, env: dict[str, str], tenants: list[str]) -> list[str]:
        """A fresh API key for each tenant, made as `tierq keys create` makes it."""
        settings = settings_for(env)

        async def create() -> list[str]:
            client = async_client(settings)
            try:
                store = KeyStore(client, Keys(settings.key_prefix))
                return [(await store.create(tenant))[0] for tenant in tenants]
            finally:
                await client.aclose()

        return asyncio.run(create())

    def latency(self) -> dict[str, Any]:
        sizes = self.sizes
        simulator, base_url = self.simulator(
            "latency", LATENCY_MS, "--rpm", str(UNBINDING_RPM), "--tpm", str(UNBINDING_TPM),
            "--record-limit", "0",
        )  # fmt: skip
        env = worker_env(self.redis_url, base_url)
        fleet: list[ManagedProcess] = []
        gateway: ManagedProcess | None = None
        try:
            fleet = start_fleet(env, 1, IN_FLIGHT, self.logs)
            with TierqClient(settings_for(env)) as client:
                # The first wave opens the worker's connections; the second measures capacity.
                client.wait_many(client.submit_many(request(-i) for i in range(IN_FLIGHT)), 120)
                started = time.perf_counter()
                ids = client.submit_many(request(i) for i in range(sizes.capacity_jobs))
                client.wait_many(ids, 600)
                capacity = sizes.capacity_jobs / (time.perf_counter() - started)
            # Closed loops offer clients / latency calls a second: half the capacity.
            clients = max(1, round(capacity / 2 * LATENCY_MS / 1000))
            self.note(f"1. capacity {capacity:.0f} jobs/s: {clients} SDK clients, half of it")
            gateway, root = self.gateway(env, "latency")
            key = self.keys(env, ["latency"])[0]
            direct: list[dict[str, Any]] = []
            through: list[dict[str, Any]] = []
            gateway_cpu = 0.0
            for n in range(sizes.latency_rounds):
                self.note(f"1. round {n + 1}: straight to the simulator")
                direct.append(
                    closed_loop(base_url, "sk-benchmark", clients, sizes.latency_round_seconds)
                )
                self.note(f"1. round {n + 1}: through the gateway")
                before = cpu_seconds(gateway.pid)
                through.append(closed_loop(f"{root}/v1", key, clients, sizes.latency_round_seconds))
                gateway_cpu += cpu_seconds(gateway.pid) - before
            self.check_set_up(env, fleet, root)
        finally:
            stop_all(gateway, fleet, simulator)
        return {
            "latency_ms": LATENCY_MS,
            "capacity_jobs_per_second": capacity,
            "clients": clients,
            "direct": summary(direct),
            "gateway": summary(through),
            "gateway_cpu_ms_per_call": gateway_cpu / max(1, summary(through)["calls"]) * 1000,
        }

    def check_set_up(self, env: dict[str, str], fleet: list[ManagedProcess], root: str) -> None:
        """Record that the limiter had learned the simulator's limits and that the workers and
        the gateway served their metrics."""
        learned = learned_limits(settings_for(env), MODEL)
        port = fleet[0].env["TIERQ_METRICS_PORT"] if fleet[0].env else ""
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            workers_served = response.status == 200 and b"tierq_" in response.read()
        gateway_served = bool(gateway_statuses(root))
        self.checks = {
            "limits_learned": learned,
            "worker_metrics_served": workers_served,
            "gateway_metrics_served": gateway_served,
        }
        if not learned or not workers_served or not gateway_served:
            raise RuntimeError(f"the set-up was not what the table says: {self.checks}")

    def shared_limit(self) -> dict[str, Any]:
        sizes = self.sizes
        rpm = sizes.shared_rpm
        simulator, base_url = self.simulator("shared", LATENCY_MS, "--rpm", str(rpm))
        env = worker_env(self.redis_url, base_url, RATE_LIMITS=json.dumps({MODEL: {"rpm": rpm}}))
        fleet: list[ManagedProcess] = []
        gateway: ManagedProcess | None = None
        calls = APPS * sizes.calls_per_app
        try:
            fleet = start_fleet(env, SHARED_LIMIT_WORKERS, SHARED_LIMIT_IN_FLIGHT, self.logs)
            gateway, root = self.gateway(env, "shared")
            keys = self.keys(env, [f"app-{n}" for n in range(APPS)])
            self.note(f"2. {APPS} apps x {sizes.calls_per_app} calls at once, {rpm} RPM")
            # Enough wait for every call at the limit, twice over, plus the apps' start.
            wait = calls / rpm * 60 * 2 + 60
            with multiprocessing.get_context("spawn").Pool(APPS) as pool:
                start_at = time.time() + 10  # after the five processes have imported the SDK
                pending = pool.starmap_async(
                    app_calls,
                    [(f"{root}/v1", key, sizes.calls_per_app, start_at) for key in keys],
                )
                apps = pending.get(timeout=wait)
            with httpx2.Client(base_url=base_url.removesuffix("/v1"), timeout=30) as sim:
                records = sim.get("/sim/requests").json()["data"]
            statuses = gateway_statuses(root)
        finally:
            stop_all(gateway, fleet, simulator)
        seen: Counter[str] = Counter()
        for outcomes in apps:
            seen.update(outcomes)
        answered = sorted(
            (r["received_at"] for r in records if r["status"] == 200),
        )
        span = max(answered[-1] - answered[0], 1e-6) if len(answered) > 1 else float("nan")
        # n answers span n - 1 intervals: the first answer's own weight is not part of the rate.
        achieved = (len(answered) - 1) / span * 60 if len(answered) > 1 else 0.0
        return {
            "apps": APPS,
            "calls": calls,
            "rpm": rpm,
            "outcomes_seen_by_apps": dict(seen),
            "answered": seen["200"],
            "seen_429": seen["429"],
            "per_app": apps,
            "busy_window_seconds": span,
            "fraction_of_limit": achieved / rpm,
            "upstream_429": sum(r["status"] == 429 for r in records),
            "upstream_calls": len(records),
            "gateway_statuses": statuses,
        }

    def held(self) -> dict[str, Any]:
        sizes = self.sizes
        simulator, base_url = self.simulator(
            "held", sizes.held_latency_ms, "--rpm", str(UNBINDING_RPM),
            "--tpm", str(UNBINDING_TPM), "--record-limit", "0",
        )  # fmt: skip
        env = worker_env(self.redis_url, base_url)
        fleet: list[ManagedProcess] = []
        gateway: ManagedProcess | None = None
        try:
            fleet = start_fleet(env, sizes.held_workers, sizes.held_in_flight, self.logs)
            gateway, root = self.gateway(env, "held")
            key = self.keys(env, ["held"])[0]
            at_rest = peak_rss_mb(gateway.pid)
            self.note(f"3. {sizes.held_calls} calls held at {sizes.held_latency_ms} ms")
            client = asyncio.run(
                asyncio.wait_for(
                    hold_calls(f"{root}/v1", key, sizes.held_calls), HOLD_SECONDS + 120
                )
            )
            peak = peak_rss_mb(gateway.pid)
            statuses = gateway_statuses(root)
            with httpx2.Client(base_url=base_url.removesuffix("/v1"), timeout=30) as sim:
                upstream = sim.get("/sim/stats").json()
        finally:
            stop_all(gateway, fleet, simulator)
        return {
            "calls": sizes.held_calls,
            "latency_ms": sizes.held_latency_ms,
            "workers": sizes.held_workers,
            "in_flight_per_worker": sizes.held_in_flight,
            **client,
            "errors": sizes.held_calls - client["outcomes"].get("200", 0),
            "gateway_rss_at_rest_mb": at_rest,
            "gateway_peak_rss_mb": peak,
            "gateway_statuses": statuses,
            "simulator_peak_in_flight": upstream.get("peak_in_flight"),
        }

    def run(self) -> dict[str, Any]:
        figures: dict[str, Any] = {}
        self.note("1. latency overhead at half capacity")
        figures["latency"] = self.latency()
        self.note("2. a shared limit")
        figures["shared_limit"] = self.shared_limit()
        self.note("3. held connections")
        figures["held"] = self.held()
        figures["set_up_checks"] = self.checks
        return figures


def summary(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One path's rounds as one distribution."""
    latencies = [ms for r in rounds for ms in r["latencies_ms"]]
    errors: Counter[str] = Counter()
    for r in rounds:
        errors.update(r["errors"])
    seconds = sum(r["seconds"] for r in rounds)
    return {
        "calls": len(latencies),
        "calls_per_second": len(latencies) / seconds if seconds else float("nan"),
        "errors": dict(errors),
        "p50_ms": percentile(latencies, 0.5),
        "p95_ms": percentile(latencies, 0.95),
        "p99_ms": percentile(latencies, 0.99),
    }


def gateway_statuses(root: str) -> dict[str, int]:
    """The gateway's own count of its chat-completion answers by status (its /metrics)."""
    headers = {"Authorization": f"Bearer {METRICS_KEY}"}
    text = httpx2.get(f"{root}/metrics", headers=headers, timeout=10).raise_for_status().text
    counts: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("tierq_gateway_requests_total{") and "/chat/completions" in line:
            labels, value = line.rsplit(" ", 1)
            status = labels.split('status="', 1)[1].split('"', 1)[0]
            counts[status] = counts.get(status, 0) + int(float(value))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run, about a minute")
    size.add_argument("--reduced", action="store_true", help="fewer calls (a shared machine)")
    parser.add_argument("--out", default="benchmarks/results/dropin.json")
    args = parser.parse_args()
    run: Run = "quick" if args.quick else "reduced" if args.reduced else "full"
    sizes = SIZES[run]
    console = Console(width=max(Console().width, 150))
    open_files = raise_open_files(sizes.held_calls + 1_000)
    setup = setup_record(
        sizes=asdict(sizes),
        model=MODEL,
        latency_ms=LATENCY_MS,
        gateway={"processes": 1, "max_wait_seconds": HOLD_SECONDS,
                 "max_waiting_per_tenant": max(sizes.held_calls, 200),
                 "tenant_max_in_flight": 10_000, "metrics": "served (metrics key set)"},
        sdk={"version": openai.__version__, "max_retries": 0,
             "timeout_seconds": {"read": HOLD_SECONDS + 30, "connect": 5.0},
             "warm_up_calls_per_client": WARM_UP_CALLS},
        cases={
            "latency": {"simulator_limits": {"rpm": UNBINDING_RPM, "tpm": UNBINDING_TPM},
                        "workers": 1, "in_flight_per_worker": IN_FLIGHT,
                        "tierq_limits": "learned from the simulator's headers"},
            "shared_limit": {"apps": APPS, "simulator_rpm": sizes.shared_rpm,
                             "tierq_limits": f"configured: {sizes.shared_rpm} RPM",
                             "workers": SHARED_LIMIT_WORKERS,
                             "in_flight_per_worker": SHARED_LIMIT_IN_FLIGHT},
            "held": {"simulator_limits": {"rpm": UNBINDING_RPM, "tpm": UNBINDING_TPM},
                     "tierq_limits": "learned from the simulator's headers"},
        },
        open_files_limit=open_files,
        tierq_ran_with=(
            "the shared limiter on every job (limits learned from the simulator's headers; "
            "configured in the shared-limit case), " + AS_COMPOSE + "; one gateway process, "
            "its metrics served"
        ),
    )  # fmt: skip

    return measure_and_record(
        name="dropin",
        run=run,
        setup=setup,
        default_redis_db=12,
        measure=lambda redis_url, logs: Bench(redis_url, sizes, logs, console).run(),
        rows_and_targets=rows_and_targets,
        title="tierq drop-in: the SDK through the gateway",
        out=Path(args.out),
        console=console,
    )


if __name__ == "__main__":
    sys.exit(main())
