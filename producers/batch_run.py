"""`tierq batch run`: an OpenAI batch input file straight onto the queues, results to a file.

    tierq batch run requests.jsonl -o results.jsonl     # errors to results.errors.jsonl

The input is the Batch API's JSONL (`{"custom_id", "method", "url", "body"}` per line), judged
as the API judges it (producers/batchfile.py): a malformed file is refused whole with the lines
named, and nothing runs; a body that breaks the contract fails alone, in the error file. The
output and error files are in the API's line format, so tools written for the Batch API read
them unchanged. Unlike the Batch API, answers come back at the speed the operator's rate limits
allow: minutes, not up to 24 hours.

Resumable without paying twice: each request is submitted under an idempotency key made of
the input file's SHA-256 and its custom_id, so running the same command again after an
interruption (Ctrl-C, a lost terminal, a crash) finds the jobs already submitted, running or
finished, and submits only those that never were. Keys last as long as job records
(TIERQ_RESULT_TTL_SECONDS, 24 h). Output files are written whole at the end, through a
temporary file, so an interrupted run never leaves a half-written one.

Exit status: 0 every request succeeded, 1 some failed (see the error file), 2 the file was
refused (or a setting is wrong), 4 timed out waiting (run again to resume), 5 Redis
unreachable, 130 interrupted.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from tierq.core.cli_output import plural
from tierq.core.errors import BrokerUnavailableError, JobWaitTimeout
from tierq.core.exit_codes import ExitCode, ExitCodeCommand
from tierq.core.results import JobResult
from tierq.producers.batchfile import (
    ParsedBatch,
    is_error_line,
    output_line,
    parse_batch_file,
    rejected_line,
)
from tierq.producers.client import TierqClient

# Requests per submit_many call: progress shows while a large file is being submitted.
SUBMIT_CHUNK = 1_000


class RateColumn(ProgressColumn):
    """Jobs per second since the first answer (rich's own speed column counts bytes)."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        rate = task.completed / elapsed if elapsed > 0 else 0.0
        return Text(f"{rate:.1f} jobs/s", style="progress.data.speed")


def idempotency_keys(data: bytes, custom_ids: Iterable[str]) -> list[str]:
    """One key per request: the same file and custom_id give the same key on every run."""
    digest = hashlib.sha256(data).hexdigest()[:32]
    return [f"batch-run:{digest}:{custom_id}" for custom_id in custom_ids]


def default_errors_path(output: Path) -> Path:
    name = output.name.removesuffix(".jsonl")
    return output.with_name(f"{name}.errors.jsonl")


def write_jsonl(path: Path, lines: Iterable[Mapping[str, Any]]) -> int:
    """Write through a temporary file and rename: the file is whole or absent."""
    partial = path.with_name(path.name + ".partial")
    count = 0
    with partial.open("w", encoding="utf-8") as out:
        for line in lines:
            out.write(json.dumps(line, separators=(",", ":")) + "\n")
            count += 1
    os.replace(partial, path)
    return count


def _refuse(parsed: ParsedBatch, console: Console) -> NoReturn:
    problems = plural(len(parsed.errors), "problem")
    console.print(f"[red]error:[/] the input file is refused ({problems}):")
    for error in parsed.errors:
        where = f"line {error.line}" if error.line is not None else "file"
        console.print(f"  {where}: {error.message} [dim]({error.code})[/]")
    raise click.exceptions.Exit(ExitCode.INVALID)


def run_batch(
    client: TierqClient,
    data: bytes,
    *,
    timeout: float,
    console: Console,
    progress: bool,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Submit (or find again) every request and wait for all; (output lines, error lines)."""
    parsed = parse_batch_file(data, client.settings)
    if parsed.errors:
        _refuse(parsed, console)
    errors = [rejected_line(rejected) for rejected in parsed.rejected]
    requests = parsed.requests
    keys = idempotency_keys(data, (r.custom_id for r in requests))
    custom_id_of: dict[str, str] = {}
    outputs: list[dict[str, Any]] = []
    tokens = 0
    failed = len(errors)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[red]{task.fields[failed]} failed[/]"),
        TextColumn("{task.fields[tokens]:,} tokens"),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
        transient=False,
    ) as bar:
        submitting = bar.add_task("submitted", total=len(requests), failed=0, tokens=0)
        for start in range(0, len(requests), SUBMIT_CHUNK):
            chunk = requests[start : start + SUBMIT_CHUNK]
            ids = client.submit_many(
                [r.request for r in chunk], idempotency_keys=keys[start : start + SUBMIT_CHUNK]
            )
            custom_id_of.update(zip(ids, (r.custom_id for r in chunk), strict=True))
            bar.advance(submitting, len(chunk))
        done = bar.add_task("done", total=parsed.total, failed=failed, tokens=0)
        bar.advance(done, len(errors))
        for record in client.as_completed(list(custom_id_of), timeout=timeout):
            line = output_line(custom_id_of[record.job_id], record)
            if is_error_line(line):
                errors.append(line)
                failed += 1
            else:
                outputs.append(line)
            tokens += _tokens(record)
            bar.update(done, advance=1, failed=failed, tokens=tokens)
    return outputs, errors


def _tokens(record: JobResult) -> int:
    return record.usage.total_tokens if record.usage is not None else 0


@click.group("batch")
def batch_group() -> None:
    """Run OpenAI batch input files (JSONL) on tierq's queues."""


@batch_group.command("run", cls=ExitCodeCommand)
@click.argument("input_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where the successful lines go (the API's output file format).")  # fmt: skip
@click.option("-e", "--errors", "errors_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where failed lines go [default: OUTPUT.errors.jsonl].")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=1), default=24 * 3600.0, show_default=True,
              help="Seconds to wait for all answers; run again afterwards to resume.")  # fmt: skip
@click.option("--no-progress", is_flag=True, help="No progress bar (for logs and scripts).")
def run_command(
    input_file: Path, output: Path, errors_path: Path | None, timeout: float, no_progress: bool
) -> None:
    """Run every request of INPUT_FILE and write the answers to OUTPUT.

    Run the same command again after an interruption: requests already submitted are found
    again (running or finished) and none is paid for twice.
    """
    console = Console(stderr=True)
    errors_path = errors_path or default_errors_path(output)
    data = input_file.read_bytes()
    started = time.monotonic()
    try:
        with TierqClient() as client:
            outputs, errors = run_batch(
                client, data, timeout=timeout, console=console, progress=not no_progress
            )
    except KeyboardInterrupt:
        console.print(
            "[yellow]interrupted:[/] submitted jobs keep running; run the same command again "
            "to collect them (nothing is paid for twice)"
        )
        raise click.exceptions.Exit(ExitCode.INTERRUPTED) from None
    except JobWaitTimeout as error:
        console.print(f"[yellow]timed out:[/] {error}; run the same command again to resume")
        raise click.exceptions.Exit(ExitCode.TIMED_OUT) from None
    except BrokerUnavailableError as error:
        console.print(f"[red]error:[/] {error}")
        raise click.exceptions.Exit(ExitCode.REDIS_UNREACHABLE) from None
    write_jsonl(output, outputs)
    write_jsonl(errors_path, errors)
    console.print(
        f"{len(outputs)} succeeded, {len(errors)} failed in {time.monotonic() - started:.1f}s: "
        f"{output}" + (f", errors in {errors_path}" if errors else "")
    )
    if errors:
        raise click.exceptions.Exit(ExitCode.JOB_FAILED)


__all__ = ["batch_group", "run_batch"]
