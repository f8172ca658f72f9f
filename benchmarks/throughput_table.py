"""benchmarks/throughput.py's figures as table rows and targets (pure; no run needed)."""

from __future__ import annotations

from typing import Any

from benchmarks.record import Row, Target

LIMITER = "limiter (learned), metrics, events"
DIRECT = "AsyncOpenAI + semaphore"
BARE = "bare Celery task (same publish and call, events; no limiter, no metrics)"


def retries(figures: dict[str, Any]) -> str:
    """Say " (12 retried, 0 failed)" when any call was retried or failed; else nothing."""
    retried, failed = figures.get("retried", 0), figures.get("failed", 0)
    return f" ({retried} retried, {failed} failed)" if retried or failed else ""


def rows_and_targets(f: dict[str, Any]) -> tuple[list[Row], list[Target]]:
    rows: list[Row] = []
    targets: list[Target] = []
    o_t, o_b = f["overhead_tierq"], f["overhead_bare_celery"]
    rows.append(
        Row(
            "0 ms, 100 in flight, 1 worker: jobs/s end to end",
            LIMITER,
            f"{o_t['jobs_per_second']:.0f}",
            f"{BARE}: {o_b['jobs_per_second']:.0f}",
            o_t["jobs_per_second"] / o_b["jobs_per_second"],
            "reported",
        )
    )
    rows.append(
        Row(
            "0 ms: worker CPU per job",
            LIMITER,
            f"{o_t['worker_cpu_ms_per_job']:.2f} ms",
            f"{BARE}: {o_b['worker_cpu_ms_per_job']:.2f} ms",
            o_t["worker_cpu_ms_per_job"] / o_b["worker_cpu_ms_per_job"],
            "reported",
        )
    )

    t1, b1, d1 = f["io_tierq_1"], f["io_bare_celery"], f["io_direct_100"]
    io_ratio = t1["jobs_per_second"] / d1["jobs_per_second"]
    rows.append(
        Row(
            "200 ms, 100 in flight, 1 worker: jobs/s",
            LIMITER,
            f"{t1['jobs_per_second']:.0f}",
            f"{DIRECT}, 100 in flight: {d1['jobs_per_second']:.0f}",
            io_ratio,
            "reported",
        )
    )
    if "io_tierq_2" in f:  # not in the smoke run
        rows.append(
            Row(
                "200 ms, 2 workers x 100 in flight: jobs/s",
                LIMITER,
                f"{f['io_tierq_2']['jobs_per_second']:.0f}",
                f"{DIRECT}, 200 in flight: {f['io_direct_200']['jobs_per_second']:.0f}",
                f["io_tierq_2"]["jobs_per_second"] / f["io_direct_200"]["jobs_per_second"],
                "reported",
            )
        )
    rows.append(
        Row(
            "200 ms, 100 in flight, 1 worker: bare Celery task, jobs/s",
            "(not tierq)",
            f"{b1['jobs_per_second']:.0f}",
            f"{DIRECT}, 100 in flight: {d1['jobs_per_second']:.0f}",
            b1["jobs_per_second"] / d1["jobs_per_second"],
            "the framework's ceiling",
        )
    )
    rows.append(
        Row(
            "200 ms: worker CPU per job",
            LIMITER,
            f"{t1['worker_cpu_ms_per_job']:.2f} ms",
            f"{DIRECT}: {d1['cpu_ms_per_call']:.2f} ms per call",
            t1["worker_cpu_ms_per_job"] / d1["cpu_ms_per_call"],
            "reported",
        )
    )
    rows.append(
        Row(
            "200 ms: bare Celery task, worker CPU per job",
            "(not tierq)",
            f"{b1['worker_cpu_ms_per_job']:.2f} ms",
            f"{DIRECT}: {d1['cpu_ms_per_call']:.2f} ms per call",
            b1["worker_cpu_ms_per_job"] / d1["cpu_ms_per_call"],
            "the framework's ceiling",
        )
    )
    rows.append(
        Row(
            "200 ms: whole path's CPU per job (+ Redis, producer, simulator)",
            LIMITER,
            f"{t1['path_cpu_ms_per_job']:.2f} ms",
            f"{DIRECT} + simulator: {d1['path_cpu_ms_per_job']:.2f} ms",
            t1["path_cpu_ms_per_job"] / d1["path_cpu_ms_per_job"],
            f"Redis alone {t1['redis_cpu_ms_per_job']:.2f} ms",
        )
    )
    rows.append(
        Row(
            "200 ms: cores busy (whole machine)",
            LIMITER,
            f"{t1['machine_busy']:.0%}",
            f"{DIRECT}: {d1['machine_busy']:.0%}",
            None,
            "reported",
        )
    )
    rows.append(
        Row(
            "200 ms: peak RSS per worker",
            LIMITER,
            f"{t1['peak_rss_mb']:.0f} MB",
            f"{DIRECT}: {d1['peak_rss_mb']:.0f} MB",
            None,
            "reported",
        )
    )

    r_t, r_d = f["real_tierq_1"], f["real_direct"]
    real = f"{f['real']['latency_ms'] / 1000:g} s, {f['real']['in_flight']:,} in flight"
    speed = Target.at_least(
        f"{real}: jobs/s ÷ direct client's",
        r_t["jobs_per_second"] / r_d["jobs_per_second"],
        1.0,
    )
    cpu = Target.at_most(
        f"{real}: worker CPU per job ÷ direct client's per call",
        r_t["worker_cpu_ms_per_job"] / r_d["cpu_ms_per_call"],
        1.3,
    )
    rss = Target.at_most(f"{real}: worker peak RSS", r_t["peak_rss_mb"], 300, " MB")
    targets += [speed, cpu, rss]
    rows.append(
        Row(
            f"{real}, 1 worker: jobs/s",
            LIMITER,
            f"{r_t['jobs_per_second']:.0f}{retries(r_t)}",
            f"{DIRECT}, {real}: {r_d['jobs_per_second']:.0f}{retries(r_d)}",
            speed.figure,
            speed.verdict(f"{speed.figure:.2f}"),
        )
    )
    rows.append(
        Row(
            f"{real}: worker CPU per job",
            LIMITER,
            f"{r_t['worker_cpu_ms_per_job']:.2f} ms",
            f"{DIRECT}: {r_d['cpu_ms_per_call']:.2f} ms per call",
            cpu.figure,
            cpu.verdict(f"{cpu.figure:.2f}"),
        )
    )
    rows.append(
        Row(
            f"{real}: peak RSS of the worker",
            LIMITER,
            f"{r_t['peak_rss_mb']:.0f} MB",
            f"{DIRECT}: {r_d['peak_rss_mb']:.0f} MB",
            None,
            rss.verdict(f"{rss.figure:.0f} MB"),
        )
    )

    lat = f["latency"]
    p50 = Target.at_most("200 ms, half capacity: latency overhead p50", lat["p50_ms"], 15, " ms")
    p99 = Target.at_most("200 ms, half capacity: latency overhead p99", lat["p99_ms"], 60, " ms")
    targets += [p50, p99]
    verdict = "met" if p50.met and p99.met else "**not met**"
    rows.append(
        Row(
            "200 ms, half capacity: latency overhead p50 / p95 / p99",
            LIMITER,
            f"{lat['p50_ms']:.1f} / {lat['p95_ms']:.1f} / {lat['p99_ms']:.1f} ms",
            f"{lat['jobs']} jobs at {lat['rate']:.0f}/s, {lat['unheard']} unheard",
            None,
            f"p50 ≤ 15, p99 ≤ 60: {verdict}",
        )
    )
    return rows, targets
