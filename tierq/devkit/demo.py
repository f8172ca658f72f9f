"""`tierq demo`: the whole path, end to end, on whatever this machine has.

Redis: the configured URL if something answers there, else an embedded server. API: the real
one when OPENAI_API_KEY is set, else the simulator. One worker per tier is started, a mixed set
of jobs is submitted across the tiers (streamed, tool calls, JSON output, a reasoning model, a
job that meets a 429 and is retried, a request the API refuses, and one refused at submission),
and a table of the results is printed. Everything started here is stopped on the way out.
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click
from pydantic import SecretStr
from rich.console import Console
from rich.table import Table

from tierq.core.cli_output import plural, print_table
from tierq.core.errors import InvalidJobError
from tierq.core.exit_codes import ExitCode, ExitCodeCommand
from tierq.core.results import JobResult
from tierq.core.settings import get_settings
from tierq.devkit.local_redis import ensure_redis
from tierq.devkit.processes import start_simulator, start_worker

SIMULATED_KEY = "sk-simulator-demo"
NOT_AN_IMAGE = "https://tierq.invalid/not-an-image.png"
GREETING = [{"role": "system", "content": "You are a concise assistant."}]


def demo_jobs(simulated: bool) -> list[tuple[str, dict[str, Any]]]:
    """(label, request) pairs across every tier and the interesting paths."""

    # The API answers 400 for an image it cannot fetch; the simulator is told to do the same.
    bad_image_hint = " [sim fail=400 code=invalid_image_url]" if simulated else ""

    def user(text: str) -> list[dict[str, str]]:
        return [*GREETING, {"role": "user", "content": text}]

    weather_tool = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
    jobs: list[tuple[str, dict[str, Any]]] = [
        ("plain", {"model": "gpt-4o-mini", "messages": user("Name three rivers."), "seed": 1}),
        ("n=2", {"model": "gpt-4o-mini", "messages": user("Two taglines."), "n": 2}),
        (
            "json",
            {
                "model": "gpt-4o-mini",
                "messages": user("Answer in JSON: capital of France?"),
                "response_format": {"type": "json_object"},
            },
        ),
        (
            "tools",
            {
                "model": "gpt-4o",
                "messages": user("What's the weather in Paris?"),
                "tools": [weather_tool],
                "tool_choice": "required",
            },
        ),
        ("streamed", {"model": "gpt-4o", "messages": user("Count to five."), "stream": True}),
        (
            "reasoning",
            {
                "model": "o4-mini",
                "messages": user("How many days for a snail to climb a 10 ft wall?"),
                "reasoning_effort": "low",
                "max_tokens": 2000,
            },
        ),
        ("reasoning", {"model": "o3", "messages": user("Prove there are infinitely many primes.")}),
        (
            "API refuses",
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is in this image?" + bad_image_hint},
                            {"type": "image_url", "image_url": {"url": NOT_AN_IMAGE}},
                        ],
                    }
                ],
            },
        ),
        (
            "refused at submit",
            {"model": "o3", "messages": user("Hello"), "temperature": 0.2},
        ),
    ]
    if simulated:
        jobs.insert(
            3,
            (
                "429 then retried",
                {
                    "model": "gpt-4o-mini",
                    "messages": user("Hello [sim fail=429 times=1 retry_after=1]"),
                },
            ),
        )
    return jobs


def _tokens(result: JobResult) -> str:
    usage = result.usage
    if usage is None:
        return "-"
    text = f"{usage.prompt_tokens} in, {usage.completion_tokens} out"
    return text + (f" ({usage.reasoning_tokens} reasoning)" if usage.reasoning_tokens else "")


def run_demo(console: Console) -> ExitCode:
    from tierq.producers.client import TierqClient

    base = get_settings()
    logs = Path(tempfile.mkdtemp(prefix="tierq-demo-"))
    with ExitStack() as cleanup:
        redis_url, embedded = ensure_redis(base.redis_url.get_secret_value())
        if embedded is not None:
            cleanup.callback(embedded.stop)
            console.print(f"[dim]No Redis answered; started an embedded one at {redis_url}[/]")
        env = {**os.environ, "TIERQ_REDIS_URL": redis_url, "TIERQ_LOG_FORMAT": "json"}
        simulated = base.openai_api_key is None
        if simulated:
            simulator, base_url = start_simulator(logs / "simulator.log", args=["--seed", "7"])
            cleanup.callback(simulator.stop)
            env.update(OPENAI_BASE_URL=base_url, OPENAI_API_KEY=SIMULATED_KEY)
            console.print(f"[dim]OPENAI_API_KEY is not set; the simulator answers at {base_url}[/]")
        settings = base.model_copy(update={"redis_url": SecretStr(redis_url)})

        console.print(f"[dim]Starting one worker per tier: {', '.join(settings.tiers)}[/]")
        for tier in settings.tiers:
            worker = start_worker(tier, logs / f"worker-{tier}.log", env, concurrency=8)
            cleanup.callback(worker.stop)

        client = TierqClient(settings)
        cleanup.callback(client.close)
        rows: list[tuple[str, str | JobResult]] = []
        submitted: list[tuple[str, str]] = []
        for label, request in demo_jobs(simulated):
            try:
                submitted.append((label, client.submit(request)))
            except InvalidJobError as error:
                rows.append((label, str(error)))
        started = time.monotonic()
        results = client.wait_many([job_id for _, job_id in submitted], timeout=120)
        elapsed = time.monotonic() - started
        rows = [
            (label, result) for (label, _), result in zip(submitted, results, strict=True)
        ] + rows

        table = Table(title=f"tierq demo: {plural(len(submitted), 'job')} in {elapsed:.1f}s")
        for column in ("job", "what", "tier", "model", "status", "attempts", "tokens", "latency"):
            # Short columns stay on one line; the rest wrap, and a model name folds rather
            # than lose characters on a narrow terminal (cli_output.py).
            wraps = column in ("what", "model", "tokens")
            table.add_column(column, no_wrap=not wraps, overflow="fold" if wraps else "ellipsis")
        notes: list[str] = []
        for label, outcome in rows:
            if isinstance(outcome, str):
                table.add_row("-", label, "-", "-", "[yellow]refused[/]", "0", "-", "-")
                notes.append(f"{label}: {outcome}")
                continue
            style = "green" if outcome.status.value == "succeeded" else "red"
            latency = outcome.latency_seconds
            if outcome.error is not None:
                notes.append(f"{label}: {outcome.error.type}: {outcome.error.message}")
            table.add_row(
                outcome.job_id[:8],
                label,
                outcome.tier,
                outcome.model,
                f"[{style}]{outcome.status.value}[/]",
                str(outcome.attempts),
                _tokens(outcome),
                f"{latency:.2f}s" if latency is not None else "-",
            )
        print_table(table, console=console)  # whole, even in a log or CI page
        for note in notes:
            console.print(note, style="dim", markup=False)
        console.print(f"[dim]Worker and simulator logs: {logs}[/]")
    return ExitCode.OK


@click.command("demo", cls=ExitCodeCommand)
def demo_command() -> None:
    """Run the demo: Redis (embedded if none), simulator (if no key), a worker per tier, jobs."""
    raise click.exceptions.Exit(run_demo(Console()))
