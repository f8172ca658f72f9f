"""Copy the committed benchmark results into the docs' tables.

    .venv/bin/python -m benchmarks.render           # rewrite the tables in the docs
    .venv/bin/python -m benchmarks.render --check   # exit 1 if the docs differ from the results

A page quotes a results file between two marker comments named after it:

    <!-- bench:throughput -->
    (rewritten from benchmarks/results/throughput.json)
    <!-- /bench:throughput -->

Between them goes the file's set-up (run size, commit, machine, what tierq ran with), its
table as the benchmark printed it, and its targets, each met or plainly not met. Nothing else
on the page is touched, and no figure between the markers comes from anywhere but the file.
tests/test_benchmark_results.py runs the check, so the docs cannot drift from the results.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("benchmarks") / "results"
PAGES = (Path("docs") / "performance.md", Path("README.md"))
_BLOCK = re.compile(r"(<!-- bench:([\w-]+) -->\n)(.*?)(<!-- /bench:\2 -->)", re.DOTALL)

# A load average above this many runnable tasks per core at the start: the page says so.
BUSY_LOAD_PER_CORE = 0.5
RUN_NOTES = {
    "full": "",
    "reduced": (
        "**A reduced run** (fewer jobs, on a machine shared with other work): figures for "
        "development, not for quoting; the full run replaces them."
    ),
    "quick": "**A smoke run** (a handful of jobs): these figures say only that it runs.",
}


def results_path(name: str) -> Path:
    """The results file a `bench:NAME` marker quotes, relative to the repository root."""
    return RESULTS / f"{name}.json"


def quoted(text: str) -> list[str]:
    """The results (by name) a page quotes between markers, in page order."""
    return [match.group(2) for match in _BLOCK.finditer(text)]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def setup_line(document: Mapping[str, Any]) -> str:
    setup = document["setup"]
    machine = setup["machine"]
    commit = (setup.get("git_commit") or "unknown")[:7]
    dirty = " with uncommitted changes" if setup.get("git_dirty") else ""
    return (
        f"From `{results_path(document['benchmark']).as_posix()}`: {document['run']} run "
        f"(`{setup['command']}`) at commit {commit}{dirty}, {setup['started_at']}, on "
        f"{machine['cores']} cores ({machine['cpu']}, {machine['memory_gb']} GB), load "
        f"{machine['load_average_1m_at_start']} at the start. tierq ran with "
        f"{setup['tierq_ran_with']}."
    )


def render_block(document: Mapping[str, Any]) -> str:
    """What goes between a results file's markers."""
    lines = [setup_line(document), ""]
    note = RUN_NOTES.get(document["run"], "")
    if note:
        lines += [note, ""]
    machine = document["setup"]["machine"]
    if machine["load_average_1m_at_start"] > BUSY_LOAD_PER_CORE * machine["cores"]:
        lines += [
            f"**The machine was busy** (load {machine['load_average_1m_at_start']} on "
            f"{machine['cores']} cores at the start): other work shared the cores, so these "
            "figures are noisier than a quiet machine's.",
            "",
        ]
    columns = document["columns"]
    lines.append("| " + " | ".join(_cell(c) for c in columns) + " |")
    lines.append("|" + "---|" * len(columns))
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in document["rows"]]
    targets = document["targets"]
    missed = [t for t in targets if not t["met"]]
    lines.append("")
    if not targets:
        lines.append("No targets apply to this run.")
    elif not missed:
        lines.append(f"Targets: all {len(targets)} met.")
    else:
        lines.append(f"Targets: {len(targets) - len(missed)} of {len(targets)} met; not met:")
        lines.append("")
        lines += [
            f"- {t['name']}: {_figure(t['figure'])}{t.get('unit', '')}, target {t['target']}"
            for t in missed
        ]
    return "\n".join(lines) + "\n"


def _figure(value: float) -> str:
    return f"{value:g}" if float(value).is_integer() else f"{value:.3g}"


def load(root: Path, name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((root / results_path(name)).read_text(encoding="utf-8"))
    return loaded


def rewrite(text: str, documents: Mapping[str, Mapping[str, Any]]) -> str:
    """The page with every quoted block rendered afresh from `documents` (by name)."""

    def block(match: re.Match[str]) -> str:
        return match.group(1) + render_block(documents[match.group(2)]) + match.group(4)

    return _BLOCK.sub(block, text)


def render_pages(root: Path) -> dict[Path, tuple[str, str]]:
    """Each page that quotes results: (as it is, as the results say it should be)."""
    pages: dict[Path, tuple[str, str]] = {}
    for page in PAGES:
        path = root / page
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        names = quoted(text)
        if names:
            documents = {name: load(root, name) for name in names}
            pages[page] = (text, rewrite(text, documents))
    return pages


def stale_pages(root: Path) -> list[Path]:
    """Pages whose quoted tables differ from what the results files say."""
    return [page for page, (now, fresh) in render_pages(root).items() if now != fresh]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    args = parser.parse_args()
    if args.check:
        stale = stale_pages(ROOT)
        for page in stale:
            print(f"{page}: differs from {RESULTS}/ (run python -m benchmarks.render)")
        return 1 if stale else 0
    for page, (now, fresh) in render_pages(ROOT).items():
        if now != fresh:
            (ROOT / page).write_text(fresh, encoding="utf-8")
            print(f"rewrote {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
