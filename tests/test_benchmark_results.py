"""The docs' benchmark tables are the committed results files, rendered (benchmarks/render.py).

Pure reading of docs/performance.md, README.md and benchmarks/results/*.json: no benchmark
runs here. A figure typed into a quoted table by hand, or a results file re-run without
re-rendering, fails `test_the_docs_say_what_the_committed_results_say`.
"""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from benchmarks import render

ROOT = Path(__file__).resolve().parent.parent


def quoted_names() -> list[str]:
    names: list[str] = []
    for page in render.PAGES:
        if (ROOT / page).exists():
            names += render.quoted((ROOT / page).read_text(encoding="utf-8"))
    return names


def a_results_document(**changes: Any) -> dict[str, Any]:
    document: dict[str, Any] = {
        "benchmark": "throughput",
        "run": "full",
        "setup": {
            "git_commit": "0123456789abcdef",
            "git_dirty": False,
            "machine": {"cpu": "a CPU", "cores": 2, "memory_gb": 8.0,
                        "load_average_1m_at_start": 0.1},
            "started_at": "2025-01-01T00:00:00+00:00",
            "command": "python -m benchmarks.throughput",
            "tierq_ran_with": "the shared limiter on every job",
        },
        "columns": ["measure", "tierq", "target"],
        "rows": [["jobs/s", "193", "≥ 1: **not met** (0.93)"]],
        "targets": [{"name": "jobs/s ÷ direct", "target": "≥ 1", "figure": 0.93, "met": False}],
        "figures": {},
    }  # fmt: skip
    document.update(changes)
    return document


PAGE = "# Performance\n\nProse.\n\n<!-- bench:throughput -->\nold\n<!-- /bench:throughput -->\n"


def test_the_docs_quote_every_benchmark() -> None:
    assert {"throughput", "rate_limits", "dropin", "fairness", "spend"} <= set(quoted_names())


def test_the_docs_say_what_the_committed_results_say() -> None:
    assert render.stale_pages(ROOT) == [], "run: python -m benchmarks.render"


@pytest.mark.parametrize("name", sorted(set(quoted_names())))
def test_every_quoted_results_file_is_in_the_tree_with_its_setup(name: str) -> None:
    path = ROOT / render.results_path(name)
    assert path.is_file(), f"{path} is quoted by the docs but missing"
    document = render.load(ROOT, name)
    assert document["benchmark"] == name
    assert {"git_commit", "machine", "command", "tierq_ran_with"} <= set(document["setup"])
    assert all({"name", "target", "figure", "met"} <= set(t) for t in document["targets"])
    git = shutil.which("git")
    if git and (ROOT / ".git").exists():
        ignored = subprocess.run(
            [git, "check-ignore", "--quiet", str(path)], cwd=ROOT, check=False
        ).returncode
        assert ignored != 0, f"{path} is ignored by git, so it cannot be committed"


def test_a_hand_edited_figure_makes_the_page_stale() -> None:
    document = a_results_document()
    fresh = render.rewrite(PAGE, {"throughput": document})
    edited = fresh.replace("193", "250")

    assert render.rewrite(fresh, {"throughput": document}) == fresh
    assert render.rewrite(edited, {"throughput": document}) != edited


def test_a_new_result_rewrites_only_between_the_markers() -> None:
    before = render.rewrite(PAGE, {"throughput": a_results_document()})
    newer = copy.deepcopy(a_results_document())
    newer["rows"][0][1] = "201"

    after = render.rewrite(before, {"throughput": newer})

    assert "| jobs/s | 201 |" in after
    assert after.startswith("# Performance\n\nProse.\n\n<!-- bench:throughput -->\n")
    assert after.endswith("<!-- /bench:throughput -->\n")


def test_a_missed_target_is_said_plainly_with_its_figure() -> None:
    block = render.render_block(a_results_document())

    assert "Targets: 0 of 1 met; not met:" in block
    assert "- jobs/s ÷ direct: 0.93, target ≥ 1" in block


def test_a_reduced_run_says_so() -> None:
    assert "**A reduced run**" in render.render_block(a_results_document(run="reduced"))
    assert "reduced" not in render.render_block(a_results_document()).lower()
