"""The tenants' side of benchmarks/fairness.py: their jobs, each carrying a unique marker, and
what the simulator saw of them.

Every job's prompt holds a marker, `job <tenant>-<n>`, that names its tenant and is unique in
the run, so the simulator's records (`GET /sim/requests`) say which tenant each call was for
and how many times each job reached the API. Each job asks the simulator (a `[sim tokens=N]`
directive) for an answer longer than its `max_tokens`, so every answer is cut at the cap: its
real usage is what tierq's limiter reserved for it (prompt estimate plus output cap), and a
share of a TPM limit counted by usage is the share the limiter was asked to pace.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import httpx2

from tierq.producers.client import TierqClient

MODEL = "gpt-4o-mini"
PROMPT = "Summarise the benefits of fair queueing in two sentences."
MAX_TOKENS = 40
# Longer than MAX_TOKENS: the cap always cuts the answer.
ANSWER_TOKENS = MAX_TOKENS * 4
# submit_many's batch per call: 20,000 jobs go in a few calls, each one pipelined round trip
# per 500 jobs.
SUBMIT_CHUNK = 2_000
_MARKER = re.compile(r"\bjob ([A-Za-z0-9_.]+)-(\d+)\b")


def request(tenant: str, n: int) -> dict[str, Any]:
    """Job `n` of `tenant`, its marker in the prompt."""
    return {
        "model": MODEL,
        "messages": [
            {
                "role": "user",
                "content": f"{PROMPT} job {tenant}-{n} [sim tokens={ANSWER_TOKENS}]",
            }
        ],
        "max_tokens": MAX_TOKENS,
    }


def marker(tenant: str, n: int) -> str:
    return f"{tenant}-{n}"


def submit(
    client: TierqClient, tenant: str, numbers: Iterable[int], priority: str
) -> dict[str, str]:
    """Submit `tenant`'s jobs `numbers` in chunks; marker -> job id."""
    ids: dict[str, str] = {}
    chunk: list[int] = []

    def flush() -> None:
        job_ids = client.submit_many(
            (request(tenant, n) for n in chunk), tenant=tenant, priority=priority
        )
        ids.update(zip((marker(tenant, n) for n in chunk), job_ids, strict=True))
        chunk.clear()

    for n in numbers:
        chunk.append(n)
        if len(chunk) == SUBMIT_CHUNK:
            flush()
    if chunk:
        flush()
    return ids


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def sleep_until(moment: float) -> None:
    """Sleep until `moment` (time.time() seconds); at once if it has passed."""
    time.sleep(max(0.0, moment - time.time()))


def simulator_calls(base_url: str) -> list[dict[str, Any]]:
    """What the simulator received: one dict per call, with `marker` ("a-12"; None for a
    call without one), `received_at` (epoch seconds) and `status`."""
    with httpx2.Client(base_url=base_url.removesuffix("/v1"), timeout=60) as sim:
        records = sim.get("/sim/requests").json()["data"]
    calls = []
    for record in records:
        text = " ".join(
            str(message.get("content", "")) for message in record["body"].get("messages", [])
        )
        found = _MARKER.search(text)
        calls.append(
            {
                "marker": f"{found.group(1)}-{found.group(2)}" if found else None,
                "received_at": record["received_at"],
                "status": record["status"],
            }
        )
    return calls


def times_seen(calls: list[dict[str, Any]]) -> Counter[str]:
    """How many calls the simulator received for each marker (whatever their answer)."""
    return Counter(call["marker"] for call in calls if call["marker"] is not None)


def tenant_of(marker_text: str) -> str:
    return marker_text.rsplit("-", 1)[0]
