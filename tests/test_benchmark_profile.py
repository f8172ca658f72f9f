"""The profile's shares (benchmarks/profile_worker.py): each sample lands in the one share its
stack says it belongs to, so the README's table adds up. Pure logic, on hand-written stacks in
py-spy's collapsed format."""

from __future__ import annotations

from pathlib import Path

from benchmarks.profile_worker import (
    OTHER,
    SAMPLES_PER_SECOND,
    SHARES,
    classify,
    read_profile,
    share_table,
)

TASK = (
    "_worker (concurrent/futures/thread.py:83);apply_target (celery/concurrency/base.py:30);"
    "build_tracer.<locals>.trace_task (celery/app/trace.py:564);"
    "JobRunner.run (worker/execution.py:130)"
)
CONSUMER = (
    "<module> (worker/__main__.py:6);run_worker (worker/cli.py:154);"
    "asynloop (celery/worker/loops.py:130);Hub.create_loop (kombu/asynchronous/hub.py:395)"
)


def test_an_sdk_call_inside_the_task_counts_as_the_sdk_call() -> None:
    stack = f"{TASK};JobRunner._call (worker/execution.py:1);post (openai/_base_client.py:1)"

    assert classify(stack).startswith("the SDK call")


def test_tierqs_scripts_count_apart_from_the_rest_of_the_task() -> None:
    stack = (
        f"{TASK};JobStore.settle (tierq/core/jobstore.py:342);evalsha (redis/commands/core.py:1)"
    )

    assert classify(stack).startswith("tierq's Redis scripts")


def test_the_task_body_counts_as_its_own_code_and_the_tracer_around_it_as_celerys() -> None:
    assert classify(f"{TASK};_log_finished (worker/execution.py:300)").startswith("the task's")
    assert classify(TASK.rsplit(";", 1)[0]).startswith("Celery's tracer")


def test_the_main_threads_loop_is_celerys_consumer_though_tierq_started_it() -> None:
    assert classify(CONSUMER).startswith("Celery's consumer")


def test_a_stack_no_rule_names_is_other() -> None:
    assert classify("Thread.run (threading.py:982);sleep (time.py:1)") == OTHER


def test_a_profile_sums_its_samples_and_converts_them_to_gil_time_per_job(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(f"{TASK};post (openai/_base_client.py:1) 300\n{CONSUMER} 200\n")

    profile = read_profile(raw, jobs=100)

    assert profile.samples == 500
    assert profile.gil_ms_per_job() == 500 / SAMPLES_PER_SECOND / 100 * 1000
    assert sum(profile.shares.values()) == profile.samples


def test_the_share_table_has_every_share_and_a_total_per_worker(tmp_path: Path) -> None:
    raw = tmp_path / "profile.txt"
    raw.write_text(f"{TASK};post (openai/_base_client.py:1) 300\n{CONSUMER} 200\n")
    profile = read_profile(raw, jobs=100)

    columns, rows = share_table({"tierq": profile})

    assert columns == ["share", "tierq: %", "tierq: ms/job"]
    assert [row[0] for row in rows] == [name for name, _ in SHARES] + [OTHER, "total"]
    assert rows[-1] == ["total", "100%", f"{profile.gil_ms_per_job():.2f}"]


def test_the_limiters_work_inside_the_task_counts_as_the_limiter() -> None:
    stack = (
        f"{TASK};AdmissionGate.before_call (worker/admission.py:63);"
        "SharedRateLimiter.acquire (tierq/core/ratelimit.py:127);evalsha (redis/commands/core.py:1)"
    )

    assert classify(stack).startswith("tierq's limiter")
