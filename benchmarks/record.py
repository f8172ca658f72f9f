"""A benchmark's results file: its set-up next to its figures, and each target met or not.

    {"benchmark": "throughput", "run": "full" | "reduced" | "quick",
     "setup": {"git_commit": ..., "git_dirty": ..., "machine": {...}, "command": ..., ...},
     "columns": [...], "rows": [[cell, ...], ...],
     "targets": [{"name", "target", "figure", "met"}, ...],
     "figures": {...}}

`rows` are the table the benchmark printed, already formatted; `python -m benchmarks.render`
copies them into docs/performance.md, so the docs say what the run said and nothing else.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from benchmarks.machine import describe

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
Run = Literal["full", "reduced", "quick"]


@dataclass(frozen=True)
class Target:
    """One target of the issue, judged on this run's figure."""

    name: str
    target: str  # as the docs print it: "≥ 1.0", "≤ 300 MB", "none"
    figure: float
    met: bool
    unit: str = ""  # of the figure: "", " MB", " ms", " 429s"

    @classmethod
    def at_least(cls, name: str, figure: float, bound: float, unit: str = "") -> Target:
        met = not math.isnan(figure) and figure >= bound
        return cls(name, f"≥ {_number(bound)}{unit}", figure, met, unit)

    @classmethod
    def at_most(cls, name: str, figure: float, bound: float, unit: str = "") -> Target:
        met = not math.isnan(figure) and figure <= bound
        return cls(name, f"≤ {_number(bound)}{unit}", figure, met, unit)

    def verdict(self, figure_text: str) -> str:
        """The target cell: `≥ 1.0: met`, or `≥ 1.0: **not met** (0.93)`."""
        return f"{self.target}: met" if self.met else f"{self.target}: **not met** ({figure_text})"


def _number(value: float) -> str:
    """1.0 stays "1.0" (a ratio), 300.0 becomes "300", 0.97 stays "0.97"."""
    value = float(value)
    if value.is_integer() and abs(value) >= 10:
        return f"{value:.0f}"
    return f"{value:.2f}".rstrip("0") if not value.is_integer() else f"{value:.1f}"


@dataclass
class Row:
    """One line of a comparison table: what was measured, what tierq ran with, what the
    reference did, their ratio and the target's verdict."""

    measure: str
    tierq_ran_with: str
    tierq: str
    reference: str
    ratio: float | None = None
    target: str = ""

    COLUMNS = ("measure", "tierq ran with", "tierq", "reference (what it did)", "ratio", "target")

    def cells(self) -> list[str]:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}"
        return [self.measure, self.tierq_ran_with, self.tierq, self.reference, ratio, self.target]


def git(*args: str) -> str:
    """A read-only git query about this checkout ("" outside a git checkout)."""
    binary = shutil.which("git")
    if binary is None:
        return ""
    done = subprocess.run([binary, *args], capture_output=True, text=True, cwd=ROOT, check=False)
    return done.stdout.strip() if done.returncode == 0 else ""


def setup_record(**scenario: Any) -> dict[str, Any]:
    """The set-up every results file starts with, then the scenario's own (latency, limits...)."""
    return {
        "git_commit": git("rev-parse", "HEAD"),
        # Uncommitted changes to the code under test (the results folder itself excepted).
        "git_dirty": bool(git("status", "--porcelain", "--", ".", ":!benchmarks/results")),
        "machine": describe(),
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m", _module_of(sys.argv[0]), *sys.argv[1:]]),
        **scenario,
    }


def _module_of(script: str) -> str:
    path = Path(script).resolve()
    try:
        return ".".join(path.relative_to(ROOT).with_suffix("").parts)
    except ValueError:
        return script


def write_results(
    out: Path,
    benchmark: str,
    run: Run,
    setup: dict[str, Any],
    table: tuple[Sequence[str], list[list[str]]],
    targets: list[Target],
    figures: dict[str, Any],
) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    columns, rows = table
    document = {
        "benchmark": benchmark,
        "run": run,
        "setup": setup,
        "columns": list(columns),
        "rows": rows,
        "targets": [asdict(target) for target in targets],
        "figures": figures,
    }
    out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def print_table(columns: Sequence[str], rows: list[list[str]], console: Any, title: str) -> None:
    """The table on the terminal, as rich lays it out."""
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def measure_and_record(
    *,
    name: str,
    run: Run,
    setup: dict[str, Any],
    default_redis_db: int,
    measure: Callable[[str, Path], dict[str, Any]],
    rows_and_targets: Callable[[dict[str, Any]], tuple[Sequence[Row], list[Target]]],
    title: str,
    out: Path,
    console: Any,
) -> int:
    """The end every benchmark shares: a Redis (TIERQ_BENCH_REDIS_URL, else the given database
    of the local one, else an embedded one), `measure(redis_url, logs)`, its rows printed as a
    table and its results file written."""
    import os
    import tempfile
    import uuid

    from tierq.devkit.local_redis import ensure_redis

    default = f"redis://127.0.0.1:6379/{default_redis_db}"
    redis_url, embedded = ensure_redis(os.environ.get("TIERQ_BENCH_REDIS_URL", default))
    logs = Path(tempfile.mkdtemp(prefix=f"tierq-bench-{name}-{uuid.uuid4().hex[:4]}-"))
    try:
        figures = measure(redis_url, logs)
    finally:
        if embedded is not None:
            embedded.stop()
    found, targets = rows_and_targets(figures)
    rows = [row.cells() for row in found]
    print_table(Row.COLUMNS, rows, console, f"{title} ({run} run)")
    write_results(out, name, run, setup, (Row.COLUMNS, rows), targets, figures)
    console.print(f"[dim]Figures: {out}; logs: {logs}[/]")
    return 0
