"""benchmarks/dropin.py's figures as table rows and targets (pure; no run needed)."""

from __future__ import annotations

from typing import Any

from benchmarks.record import Row, Target

THROUGH = "the SDK through the gateway (1 process); limiter (learned), metrics, events"
DIRECT = "the same SDK clients straight to the simulator"
# The targets.
P50_OVERHEAD_MS, P99_OVERHEAD_MS = 20, 80
SHARE_OF_LIMIT = 0.95
PEAK_RSS_MB = 400


def failures(outcomes: dict[str, int]) -> str:
    """ "none", or what went wrong by status or kind: "3 x 504, 1 x connection"."""
    wrong = {kind: n for kind, n in outcomes.items() if kind != "200" and n}
    return ", ".join(f"{n} x {kind}" for kind, n in sorted(wrong.items())) or "none"


def rows_and_targets(f: dict[str, Any]) -> tuple[list[Row], list[Target]]:
    rows: list[Row] = []
    targets: list[Target] = []

    lat = f["latency"]
    d, g = lat["direct"], lat["gateway"]
    half = f"half of {lat['capacity_jobs_per_second']:.0f}/s"
    case = f"{lat['latency_ms']} ms, {lat['clients']} SDK clients ({half})"
    rows.append(
        Row(
            f"{case}: latency p50 / p95 / p99",
            THROUGH,
            f"{g['p50_ms']:.1f} / {g['p95_ms']:.1f} / {g['p99_ms']:.1f} ms "
            f"({g['calls']} calls, errors: {failures(g['errors'])})",
            f"{DIRECT}: {d['p50_ms']:.1f} / {d['p95_ms']:.1f} / {d['p99_ms']:.1f} ms "
            f"({d['calls']} calls, errors: {failures(d['errors'])})",
            None,
            "reported",
        )
    )
    p50 = Target.at_most("latency overhead p50", g["p50_ms"] - d["p50_ms"], P50_OVERHEAD_MS, " ms")
    p99 = Target.at_most("latency overhead p99", g["p99_ms"] - d["p99_ms"], P99_OVERHEAD_MS, " ms")
    targets += [p50, p99]
    rows.append(
        Row(
            f"{case}: latency overhead p50 / p99",
            THROUGH,
            f"{p50.figure:.1f} / {p99.figure:.1f} ms",
            "gateway's p50 and p99 less the direct calls'",
            None,
            f"p50 ≤ {P50_OVERHEAD_MS}, p99 ≤ {P99_OVERHEAD_MS} ms: "
            + (
                "met"
                if p50.met and p99.met
                else f"**not met** ({p50.figure:.1f} / {p99.figure:.1f})"
            ),
        )
    )
    rows.append(
        Row(
            f"{case}: gateway CPU per call",
            THROUGH,
            f"{lat['gateway_cpu_ms_per_call']:.2f} ms",
            f"{g['calls_per_second']:.0f} calls/s through it; {d['calls_per_second']:.0f}/s direct",
            None,
            "reported",
        )
    )

    s = f["shared_limit"]
    case = f"{s['apps']} apps x {s['calls'] // s['apps']} calls at once, {s['rpm']:,} RPM limit"
    ran_with = (
        f"the SDK through the gateway, 5 tenants; shared limiter, limit configured "
        f"({s['rpm']:,} RPM); metrics, events"
    )
    seen = Target("shared limit: 429s seen by the apps", "0", s["seen_429"], s["seen_429"] == 0)
    share = Target(
        "shared limit: share of the limit over the busy window",
        f"≥ {SHARE_OF_LIMIT:.0%}",
        round(s["fraction_of_limit"] * 100, 1),
        s["fraction_of_limit"] >= SHARE_OF_LIMIT,
        "%",
    )
    answered = Target(
        "shared limit: calls answered", f"all {s['calls']:,}", s["answered"],
        s["answered"] == s["calls"],
    )  # fmt: skip
    targets += [seen, share, answered]
    rows.append(
        Row(
            f"{case}: 429s seen by the apps",
            ran_with,
            f"{s['seen_429']}",
            f"the simulator refused the workers {s['upstream_429']} of "
            f"{s['upstream_calls']:,} calls (the workers wait those out)",
            None,
            seen.verdict(str(s["seen_429"])),
        )
    )
    rows.append(
        Row(
            f"{case}: share of the limit, first answer to last",
            ran_with,
            f"{s['fraction_of_limit']:.1%} over {s['busy_window_seconds']:.0f} s",
            f"the simulator's limit: {s['rpm']:,} RPM",
            None,
            share.verdict(f"{s['fraction_of_limit']:.1%}"),
        )
    )
    rows.append(
        Row(
            f"{case}: calls answered",
            ran_with,
            f"{s['answered']:,} of {s['calls']:,}",
            f"what went wrong: {failures(s['outcomes_seen_by_apps'])}",
            None,
            answered.verdict(f"{s['answered']:,}"),
        )
    )

    h = f["held"]
    case = (
        f"{h['latency_ms'] / 1000:g} s, {h['calls']:,} calls held by 1 gateway process "
        f"({h['workers']} worker{'s' if h['workers'] > 1 else ''} x "
        f"{h['in_flight_per_worker']:,} threads)"
    )
    # The RSS target is for a gateway holding every call: calls refused were never held.
    held_all = h["errors"] == 0
    rss = Target(
        "held calls: gateway peak RSS, every call held",
        f"≤ {PEAK_RSS_MB} MB",
        round(h["gateway_peak_rss_mb"]),
        held_all and h["gateway_peak_rss_mb"] <= PEAK_RSS_MB,
        " MB",
    )
    errors = Target("held calls: errors", "0", h["errors"], held_all)
    rss_verdict = (
        rss.verdict(f"{rss.figure:.0f} MB")
        if held_all
        else f"{rss.target}: **not met** ({h['errors']:,} of {h['calls']:,} calls were refused, "
        "not held)"
    )
    targets += [rss, errors]
    rows.append(
        Row(
            f"{case}: gateway peak RSS",
            THROUGH,
            f"{h['gateway_peak_rss_mb']:.0f} MB",
            f"at rest: {h['gateway_rss_at_rest_mb']:.0f} MB; {h['peak_in_flight']:,} calls open "
            f"at once, the simulator's peak in flight {h['simulator_peak_in_flight']}",
            None,
            rss_verdict,
        )
    )
    rows.append(
        Row(
            f"{case}: errors",
            THROUGH,
            f"{h['errors']} ({failures(h['outcomes'])})",
            f"the {h['calls']:,} calls took {h['seconds']:.0f} s; latency p50 "
            f"{h['latency_p50_s']:.1f} s, p99 {h['latency_p99_s']:.1f} s",
            None,
            errors.verdict(str(h["errors"])),
        )
    )
    return rows, targets
