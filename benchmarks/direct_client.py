"""The reference every user knows: `AsyncOpenAI` with an `asyncio.Semaphore`, no queue at all.

    python -m benchmarks.direct_client BASE_URL JOBS CONCURRENCY

Run as its own process so its CPU time is its own; prints one JSON line: jobs, seconds,
cpu_seconds (user + system), machine_busy (the share of all cores busy meanwhile),
peak_rss_mb, and the calls retried and failed. A call that cannot connect (at 1,000 new
connections at once on a busy machine, some connects outlast the SDK's 5 s connect timeout) is
tried again at once, up to `ATTEMPTS` times, as tierq's worker retries a connection error.
The connection pool is warmed first with one wave of CONCURRENCY calls, not measured.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httpx2
import openai

from benchmarks.machine import busy_share, machine_jiffies, own_cpu_seconds, own_peak_rss_mb

ATTEMPTS = 3
counts = {"retried": 0, "failed": 0}


async def run(base_url: str, jobs: int, concurrency: int) -> float:
    # A connection pool as large as the concurrency, as tierq's workers have.
    client = openai.AsyncOpenAI(
        base_url=base_url,
        api_key="sk-benchmark",
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(
            limits=httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        ),
    )
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            for attempt in range(1, ATTEMPTS + 1):
                try:
                    await client.chat.completions.create(
                        model="gpt-4o-mini", messages=[{"role": "user", "content": f"job {i}"}]
                    )
                    return
                except openai.APIConnectionError:  # a connect timeout among them
                    counts["retried" if attempt < ATTEMPTS else "failed"] += 1

    # Warm the connection pool: one wave of `concurrency` calls opens every connection, as a
    # worker's first jobs do; the measured calls then run on open connections.
    await asyncio.gather(*(one(-1 - i) for i in range(concurrency)))
    counts.update(retried=0, failed=0)
    started = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(jobs)))
    elapsed = time.perf_counter() - started
    await client.close()
    return elapsed


def main() -> None:
    base_url, jobs, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    before, machine_before = own_cpu_seconds(), machine_jiffies()
    seconds = asyncio.run(run(base_url, jobs, concurrency))
    cpu, busy = own_cpu_seconds() - before, busy_share(machine_before, machine_jiffies())
    print(
        json.dumps(
            {
                "jobs": jobs,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "machine_busy": busy,
                "peak_rss_mb": own_peak_rss_mb(),
                **counts,
            }
        )
    )


if __name__ == "__main__":
    main()
