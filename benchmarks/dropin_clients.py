"""The SDK side of benchmarks/dropin.py: the apps, each an `openai` client calling one base URL.

The same code calls the simulator and the gateway: only `base_url` and `api_key` differ, as
for an app that adopts tierq. The SDK's own retries are off (`max_retries=0`), so every 429
or error an app is answered is counted, never retried away. Each function returns plain
figures (latencies, outcomes counted by HTTP status or by kind of failure).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from typing import Any

import httpx2
import openai

MODEL = "gpt-4o-mini"
# The gateway's hold, and the SDK's read timeout just past it (docs/gateway.md: give the SDK
# a timeout longer than the hold). Long enough for every case's longest wait.
HOLD_SECONDS = 300.0
SDK_TIMEOUT = httpx2.Timeout(HOLD_SECONDS + 30, connect=5.0)
# Each client's first calls are not measured: they open its connection.
WARM_UP_CALLS = 2


def request(i: int) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": f"call {i}"}]}


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def outcome_of(error: Exception) -> str:
    """How a failed SDK call is counted: its HTTP status, or the kind of failure."""
    if isinstance(error, openai.APIStatusError):
        return str(error.status_code)
    if isinstance(error, openai.APITimeoutError):
        return "timeout"
    if isinstance(error, openai.APIConnectionError):
        return "connection"
    return type(error).__name__


# Case 1's clients: each a thread with its own sync client, calling in a closed loop.


def closed_loop(base_url: str, key: str, clients: int, seconds: float) -> dict[str, Any]:
    """`clients` SDK clients calling back to back for `seconds` (after their warm-up)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: Counter[str] = Counter()
    begin = threading.Barrier(clients + 1, timeout=120)
    stop_at = [0.0]

    def client(index: int) -> None:
        with openai.OpenAI(
            base_url=base_url, api_key=key, max_retries=0, timeout=SDK_TIMEOUT
        ) as sdk:
            try:
                for n in range(WARM_UP_CALLS):
                    sdk.chat.completions.create(**request(-n))
            except BaseException:
                begin.abort()  # the run ends at once, with this client's error in the log
                raise
            begin.wait()
            i = 0
            while time.perf_counter() < stop_at[0]:
                started = time.perf_counter()
                try:
                    sdk.chat.completions.create(**request(index * 1_000_000 + i))
                except openai.OpenAIError as error:
                    errors[outcome_of(error)] += 1
                else:
                    latencies[index].append((time.perf_counter() - started) * 1000)
                i += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for thread in threads:
        thread.start()
    stop_at[0] = time.perf_counter() + 3_600  # set properly once every client has warmed up
    begin.wait()
    started = time.perf_counter()
    stop_at[0] = started + seconds
    for thread in threads:
        thread.join(seconds + HOLD_SECONDS + 60)
    elapsed = time.perf_counter() - started
    measured = [ms for per_client in latencies for ms in per_client]
    return {"latencies_ms": measured, "errors": dict(errors), "seconds": elapsed}


# Case 2's apps: one process each, with its own tenant key and AsyncOpenAI client.


def app_calls(base_url: str, key: str, calls: int, start_at: float) -> dict[str, Any]:
    """One app's calls, all at once from `start_at` (wall clock, so five apps start together)."""
    return asyncio.run(_app_calls(base_url, key, calls, start_at))


async def counted_call(sdk: openai.AsyncOpenAI, i: int, outcomes: Counter[str]) -> bool:
    """Make call `i`, counting its outcome ("200", or the error's); whether it was answered."""
    try:
        await sdk.chat.completions.create(**request(i))
    except openai.OpenAIError as error:
        outcomes[outcome_of(error)] += 1
        return False
    outcomes["200"] += 1
    return True


async def _app_calls(base_url: str, key: str, calls: int, start_at: float) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    async with openai.AsyncOpenAI(
        base_url=base_url, api_key=key, max_retries=0, timeout=SDK_TIMEOUT
    ) as sdk:
        await asyncio.sleep(max(0.0, start_at - time.time()))

        await asyncio.gather(*(counted_call(sdk, i, outcomes) for i in range(calls)))
    return dict(outcomes)


# Case 3's one client holding every call at once.


async def hold_calls(base_url: str, key: str, calls: int) -> dict[str, Any]:
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    in_flight = [0, 0]  # now, peak
    limits = httpx2.Limits(max_connections=calls, max_keepalive_connections=calls)
    async with openai.AsyncOpenAI(
        base_url=base_url,
        api_key=key,
        max_retries=0,
        timeout=SDK_TIMEOUT,
        http_client=openai.DefaultAsyncHttpxClient(limits=limits, timeout=SDK_TIMEOUT),
    ) as sdk:

        async def call(i: int) -> None:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
            started = time.perf_counter()
            try:
                if await counted_call(sdk, i, outcomes):
                    latencies.append(time.perf_counter() - started)
            finally:
                in_flight[0] -= 1

        started = time.perf_counter()
        await asyncio.gather(*(call(i) for i in range(calls)))
    return {
        "outcomes": dict(outcomes),
        "peak_in_flight": in_flight[1],
        "seconds": time.perf_counter() - started,
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p99_s": percentile(latencies, 0.99),
    }
