"""One worker process keeps a few hundred calls in flight (threads pool, pooled HTTP client)."""

from __future__ import annotations

import pytest

from tests.support import Simulator, WorkerFactory, nonce, slow_jobs
from tierq.core.results import JobStatus
from tierq.producers.client import TierqClient

pytestmark = pytest.mark.slow

IN_FLIGHT = 300


def test_one_worker_process_holds_hundreds_of_calls_in_flight(
    start_worker_with: WorkerFactory, simulator: Simulator
) -> None:
    # Given one fast-tier worker process at concurrency 300, and calls that take 6 s each (long
    # enough that a loaded 2-core machine starts all 300 before the first ends)
    _, settings = start_worker_with(
        "fast",
        TIERQ_TIERS__FAST__CONCURRENCY=str(IN_FLIGHT),
        # The test workers' 3 s call timeout would cut these 6 s calls.
        TIERQ_REQUEST_TIMEOUT_SECONDS="30",
    )
    simulator.http.delete("/sim/stats").raise_for_status()
    marker = nonce()
    requests = slow_jobs(marker, IN_FLIGHT, latency_ms=6000)

    # When 300 jobs are submitted at once
    with TierqClient(settings) as tierq:
        results = tierq.wait_many(tierq.submit_many(requests), timeout=90)

    # Then the simulator saw nearly all of them in flight together, from that one process
    assert {result.status for result in results} == {JobStatus.SUCCEEDED}
    assert {result.worker for result in results} == {results[0].worker}
    peak = simulator.http.get("/sim/stats").json()["peak_in_flight"]
    assert peak >= IN_FLIGHT * 0.9, f"only {peak} calls were in flight at once"
