"""How every `tierq` command writes what it prints: one JSON document per `--json`, tables
that never cut a name, counts in plain English.

- `--json` prints exactly one JSON document on stdout: an object for one thing (a job, a
  snapshot, a report), an array for a list (dead letters, limits, keys), so `tierq dead --json
  | jq '.[].job_id'` works the same for every command. JSON Lines would suit an endless stream;
  no command prints one.
- A table printed to a terminal folds a long name onto a second line rather than cutting it
  (`gpt-4…`); printed to a pipe, a file or a CI log, which have no width of their own, it is
  printed as wide as its content, one row per line, so `grep gpt-4o-mini` finds the row.

rich is imported only when a table is printed: the job commands that print none stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import pydantic_core

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

# Wider than any table tierq prints; only bounds the measuring of one.
_MEASURE_WIDTH = 10_000


def echo_json(document: Any) -> None:
    """Print `document` (dicts, lists, pydantic models, dataclasses) as one JSON document."""
    click.echo(pydantic_core.to_json(document, indent=2).decode())


def fit(console: Console, renderable: RenderableType) -> Console:
    """`console`, widened when it is not a terminal so that `renderable` prints at its natural
    width (nothing folded, wrapped or cut); a terminal's width is left alone."""
    from rich.measure import Measurement

    if not console.is_terminal:
        options = console.options.update_width(_MEASURE_WIDTH)
        console.width = max(console.width, Measurement.get(console, options, renderable).maximum)
    return console


def print_table(renderable: RenderableType, *, console: Console | None = None) -> None:
    """Print a table on stdout (or `console`), whole: see `fit`."""
    from rich.console import Console

    fit(console or Console(), renderable).print(renderable)


def plural(count: int, noun: str) -> str:
    """`1 problem`, `3 problems`, `1,200 dead letters`: a count and its noun, agreed."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"
