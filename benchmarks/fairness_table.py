"""benchmarks/fairness.py's figures as table rows and targets (pure; no run needed)."""

from __future__ import annotations

from typing import Any

from benchmarks.record import Row, Target

# The targets.
QUEUE_WAIT_SECONDS = 2.0  # plus the limiter's pacing interval
SHARE_POINTS = 5.0
USE_OF_LIMIT = 0.95
COST_RATIO = 0.9
EVENTS = "metrics, events"


def rows_and_targets(f: dict[str, Any]) -> tuple[list[Row], list[Target]]:
    rows: list[Row] = []
    targets: list[Target] = []
    rows += starvation(f["starvation"], targets)
    rows += fair_share(f["fair_share"], f["alone"], targets)
    rows += cost(f["cost"], targets)
    rows += crash(f["crash"], targets)
    return rows, targets


def starvation(s: dict[str, Any], targets: list[Target]) -> list[Row]:
    case = (
        f"Starvation: A {s['bulk_jobs']:,} bulk jobs, then B 1 interactive job/s for "
        f"{s['interactive_jobs']} s, {s['rpm']:,} RPM"
    )
    ran_with = (
        f"fair dispatch; limiter configured ({s['rpm']:,} RPM); 1 worker x {s['in_flight']} "
        f"threads, {EVENTS}"
    )
    bound = QUEUE_WAIT_SECONDS + s["pacing_interval_seconds"]
    all_started = s["interactive_started"] == s["interactive_jobs"]
    p99 = s["queue_wait_p99_seconds"] if all_started else float("inf")
    wait = Target.at_most("starvation: B's queue wait p99", round(p99, 3), round(bound, 3), " s")
    progress = Target(
        "starvation: A's bulk jobs finished while B submitted",
        "> 0",
        s["bulk_finished_in_window"],
        s["bulk_finished_in_window"] > 0,
    )
    targets += [wait, progress]
    window = s["window_seconds"]
    return [
        Row(
            f"{case}: B's queue wait (started less submitted) p50 / p99",
            ran_with,
            f"{s['queue_wait_p50_seconds']:.2f} / {s['queue_wait_p99_seconds']:.2f} s "
            f"({s['interactive_started']} of {s['interactive_jobs']} started; max "
            f"{s['queue_wait_max_seconds']:.2f} s)",
            f"2 s + the limiter's pacing interval (60 / {s['rpm']:,} RPM = "
            f"{s['pacing_interval_seconds']:.2f} s); B's latency to its result p50 / p99 "
            f"{s['latency_p50_seconds']:.2f} / {s['latency_p99_seconds']:.2f} s",
            None,
            wait.verdict(f"{p99:.2f} s"),
        ),
        Row(
            f"{case}: A's progress while B submitted",
            ran_with,
            f"{s['bulk_finished_in_window']:,} bulk jobs finished in {window:.0f} s "
            f"({s['bulk_finished_in_window'] / window:.1f}/s)",
            f"the pace's {s['rpm'] / 60:.0f} jobs/s; {s['bulk_waiting_at_the_end']:,} of A's "
            "jobs still in the backlog at the end",
            None,
            progress.verdict(str(s["bulk_finished_in_window"])),
        ),
    ]


def share_ran_with(share: dict[str, Any]) -> str:
    weights = " : ".join(f"{t} {w:g}" for t, w in share["tenant_weights"].items())
    return (
        f"fair dispatch, tenant weights {weights}; limiter configured ({share['tpm']:,} TPM); "
        f"1 worker x {share['in_flight']} threads, {EVENTS}"
    )


def use_row(share: dict[str, Any], case: str, target: Target) -> Row:
    return Row(
        f"{case}: use of the TPM limit",
        share_ran_with(share),
        f"{share['fraction_of_limit']:.1%} over {share['window_seconds']:.0f} s",
        f"{share['calls_counted']:,} calls of {share['mean_tokens_per_call']:.0f} tokens (real "
        f"usage); 429s: {share['responses_429']}; still waiting at the end: "
        + ", ".join(f"{t} {n:,}" for t, n in share["waiting_at_window_end"].items()),
        None,
        target.verdict(f"{share['fraction_of_limit']:.1%}"),
    )


def fair_share(share: dict[str, Any], alone: dict[str, Any], targets: list[Target]) -> list[Row]:
    weights = share["tenant_weights"]
    total = sum(weights.values())
    expected = {t: w / total for t, w in weights.items()}
    got = share["token_share_by_tenant"]
    off = max(abs(got[t] - expected[t]) * 100 for t in weights)
    ratio = " : ".join(f"{w:g}" for w in weights.values())
    case = (
        f"Fair share: tenants weighing {ratio}, both saturating {share['tpm']:,} TPM for "
        f"{share['window_seconds']:.0f} s"
    )
    within = Target.at_most(
        "fair share: a tenant's token share, points from its weight's", round(off, 1),
        SHARE_POINTS, " points",
    )  # fmt: skip
    used = Target.at_least(
        "fair share: use of the TPM limit", round(share["fraction_of_limit"] * 100, 1),
        USE_OF_LIMIT * 100, "%",
    )  # fmt: skip
    alone_used = Target.at_least(
        "work-conserving: one tenant's use of the TPM limit",
        round(alone["fraction_of_limit"] * 100, 1), USE_OF_LIMIT * 100, "%",
    )  # fmt: skip
    targets += [within, used, alone_used]
    alone_case = (
        f"Work-conserving: tenant {alone['tenants'][0]} alone, {alone['tpm']:,} TPM for "
        f"{alone['window_seconds']:.0f} s"
    )
    return [
        Row(
            f"{case}: token shares (real usage)",
            share_ran_with(share),
            " / ".join(f"{t} {got[t]:.1%}" for t in weights),
            "by weight: "
            + " / ".join(f"{t} {expected[t]:.0%}" for t in weights)
            + "; calls: "
            + " / ".join(f"{t} {share['calls_by_tenant'][t]:,}" for t in weights),
            None,
            f"± {SHARE_POINTS:g} points: met"
            if within.met
            else f"± {SHARE_POINTS:g} points: **not met** ({off:.1f} points off)",
        ),
        use_row(share, case, used),
        use_row(alone, alone_case, alone_used),
    ]


def cost(c: dict[str, Any], targets: list[Target]) -> list[Row]:
    ratio = Target.at_least("cost: jobs/s with fair dispatch ÷ without", round(c["ratio"], 3),
                            COST_RATIO)  # fmt: skip
    targets.append(ratio)
    rounds = len(c["rounds"]["with"])
    return [
        Row(
            f"Cost: 0 ms, 1 worker x {c['in_flight']} in flight, {c['jobs_per_round']:,} jobs "
            f"a round: jobs/s end to end",
            f"fair dispatch; limiter (learned), {EVENTS}",
            f"{c['jobs_per_second_with']:.0f}",
            f"the same build without fair dispatch: {c['jobs_per_second_without']:.0f} "
            f"(mean of {rounds} alternating round{'s' if rounds > 1 else ''} each; "
            f"failed: {c['failed']}); worker CPU per job {c['worker_cpu_ms_per_job_with']:.2f} "
            f"ms with, {c['worker_cpu_ms_per_job_without']:.2f} ms without; producer's "
            f"{c['producer_cpu_ms_per_job_with']:.2f} / "
            f"{c['producer_cpu_ms_per_job_without']:.2f} ms; Redis's "
            f"{c['redis_cpu_ms_per_job_with']:.2f} / {c['redis_cpu_ms_per_job_without']:.2f} ms",
            c["ratio"],
            ratio.verdict(f"{c['ratio']:.2f}"),
        )
    ]


def crash(c: dict[str, Any], targets: list[Target]) -> list[Row]:
    case = (
        f"Crash: worker SIGKILLed {c['killed_after_seconds']:g} s into {c['jobs']:,} jobs "
        f"({c['backlog_at_kill']:,} in the backlog), a new one started"
    )
    ran_with = (
        f"fair dispatch; limiter configured ({c['rpm']:,} RPM), lease {c['lease_seconds']} s; "
        f"1 worker x {c['in_flight']} threads, {EVENTS}"
    )
    not_ended = c["jobs"] - c["succeeded"]
    ended = Target("crash: jobs not ended succeeded", "0", not_ended, not_ended == 0)
    again = c["seen_twice_otherwise"] + c["markers_never_seen"]
    once = Target(
        "crash: markers not seen exactly once (calls cut off by the kill aside)", "0", again,
        again == 0,
    )  # fmt: skip
    targets += [ended, once]
    twice = len(c["markers_seen_more_than_once"])
    seen = (
        f"each once ({c['markers_seen_once']:,})"
        if twice == 0 and c["markers_never_seen"] == 0
        else f"{c['markers_seen_once']:,} once, {twice} more than once ({c['cut_off_by_the_kill']}"
        f" cut off by the kill), {c['markers_never_seen']} never"
    )
    return [
        Row(
            f"{case}: jobs ended",
            ran_with,
            f"{c['succeeded']:,} of {c['jobs']:,} succeeded, one record each",
            f"all ended {c['recovered_in_seconds']:.0f} s after the kill; "
            f"{c['requeued_by_the_reaper']} re-queued by the reaper; {c['queued_at_kill']} "
            "were on the queue",
            None,
            f"all {c['jobs']:,}: met" if ended.met else f"all: **not met** ({not_ended} not)",
        ),
        Row(
            f"{case}: each job's marker, as the simulator saw it",
            ran_with,
            seen,
            f"{c['called_before_kill']:,} called before the kill; a call in flight at the kill "
            "may be made again (docs/reliability.md)",
            None,
            once.verdict(str(again)),
        ),
    ]
