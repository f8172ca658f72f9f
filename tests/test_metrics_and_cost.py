"""After a run: /metrics, the stored results, the usage ledger and the price table agree."""

from __future__ import annotations

import json
import urllib.request
from collections import defaultdict
from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Fleet, env_of, nonce, run_tierq, user
from tierq.core.results import JobResult, JobStatus, Usage
from tierq.core.settings import Settings
from tierq.devkit.processes import free_port
from tierq.producers.client import TierqClient

MODEL = "gpt-4o-mini"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def total(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **want: str
) -> float:
    return sum(
        value
        for (sample, labels), value in samples.items()
        if sample == name and set(want.items()) <= set(labels)
    )


def priced(usage: Usage, settings: Settings) -> float:
    """The price table applied by hand: uncached prompt, cached prompt, completion."""
    price = settings.price_of(MODEL)
    assert price is not None
    cached = usage.cached_tokens
    return (
        (usage.prompt_tokens - cached) * price.input
        + cached * price.cached_input
        + usage.completion_tokens * price.output
    ) / 1_000_000


@dataclass
class Run:
    records: list[JobResult]
    samples: Samples
    settings: Settings
    env: dict[str, str]


@pytest.fixture
def finished_run(start_fleet: Fleet) -> Run:
    port = free_port()
    _, settings = start_fleet("fast", TIERQ_METRICS_PORT=str(port), TIERQ_METRICS_HOST="127.0.0.1")
    prompts = [
        *(f"{nonce()} plain {i}" for i in range(4)),
        f"{nonce()} [sim fail=429 times=1 retry_after=0.2]",
        f"{nonce()} [sim fail=400]",
    ]
    with TierqClient(settings) as client:
        ids = client.submit_many(
            {"model": MODEL, "messages": user(p), "max_tokens": 40} for p in prompts
        )
        records = client.wait_many(ids, timeout=60)
    return Run(records, scrape(port), settings, env_of(settings))


def test_metrics_agree_with_the_stored_results(finished_run: Run) -> None:
    records, samples = finished_run.records, finished_run.samples
    by_status: dict[str, int] = defaultdict(int)
    for record in records:
        by_status[record.status.value] += 1
    assert by_status == {"succeeded": 5, "failed": 1}
    for status, count in by_status.items():
        assert total(samples, "tierq_jobs_finished_total", status=status, model=MODEL) == count
    assert total(samples, "tierq_attempts_total") == sum(r.attempts for r in records) == 7
    assert total(samples, "tierq_rate_limited_total") == 1
    assert total(samples, "tierq_retries_total", reason="rate_limited") == 1
    succeeded = [r for r in records if r.status is JobStatus.SUCCEEDED and r.usage]
    assert total(samples, "tierq_tokens_total", kind="prompt") == sum(
        r.usage.prompt_tokens for r in succeeded if r.usage
    )
    assert total(samples, "tierq_tokens_total", kind="completion") == sum(
        r.usage.completion_tokens for r in succeeded if r.usage
    )
    assert total(samples, "tierq_cost_usd_total") == pytest.approx(
        sum(r.cost_usd or 0 for r in succeeded)
    )
    assert total(samples, "tierq_job_duration_seconds_count") == len(records)
    assert total(samples, "tierq_api_call_duration_seconds_count", outcome="ok") == 5


def test_the_cost_of_a_job_is_its_usage_times_the_price_table(finished_run: Run) -> None:
    records, settings = finished_run.records, finished_run.settings
    for record in records:
        if record.status is JobStatus.SUCCEEDED:
            assert record.usage is not None
            assert record.cost_usd == pytest.approx(priced(record.usage, settings), abs=1e-9)
            assert record.cost_usd > 0
        else:
            assert record.cost_usd is None  # a refused call is not billed


def test_the_usage_report_sums_the_ledger_once_per_paid_answer(
    finished_run: Run, worker_env: dict[str, str]
) -> None:
    records, env = finished_run.records, finished_run.env
    done = run_tierq({**worker_env, **env}, "usage", "--since", "1h", "--json", timeout=30)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (row,) = report["rows"]
    assert (row["tenant"], row["model"]) == ("-", MODEL)
    succeeded = [r for r in records if r.status is JobStatus.SUCCEEDED and r.usage]
    assert row["jobs"] == len(records)
    assert row["failed"] == 1
    assert row["prompt_tokens"] == sum(r.usage.prompt_tokens for r in succeeded if r.usage)
    assert row["cost_usd"] == pytest.approx(sum(r.cost_usd or 0 for r in succeeded), abs=1e-6)
