"""The job commands of `tierq`: `submit`, `status`, `result`, `cancel`, `dead`, `retry`,
`limits`.

The root command (tierq/cli.py) imports this module only when one of them is invoked, and this
module imports nothing of the worker side or the gateway, so `tierq submit` loads neither
`openai`, the gateway nor the worker's tasks. Each command is an `ExitCodeCommand`: the tierq
errors its body lets rise end it with their message and exit code (tierq/core/exit_codes.py).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any, TextIO, get_args

import click
import redis

from tierq.core.contract import ReasoningEffort
from tierq.core.errors import BrokerUnavailableError
from tierq.core.exit_codes import ExitCode, ExitCodeCommand, fail
from tierq.core.results import JobResult, JobStatus


def _client() -> Any:
    from tierq.producers.client import TierqClient

    return TierqClient()


def _read_json(source: str) -> Any:
    stream: TextIO
    if source == "-":
        stream = sys.stdin
        text = stream.read()
    else:
        try:
            with open(source, encoding="utf-8") as stream:
                text = stream.read()
        except OSError as error:
            fail(f"{source}: {error.strerror}", ExitCode.INVALID)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        fail(f"{source}: not valid JSON ({error})", ExitCode.INVALID)


def _print_result(result: JobResult, as_json: bool) -> None:
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    if result.status is JobStatus.SUCCEEDED and result.response is not None:
        for choice in result.response.choices:
            message = choice.message
            if message.tool_calls:
                for call in message.tool_calls:
                    click.echo(f"[tool call] {call.function.name}({call.function.arguments})")
            if message.content is not None:
                click.echo(message.content)
        return
    _print_status(result)


def _print_status(result: JobResult) -> None:
    line = f"{result.job_id}  {result.status.value}  tier={result.tier}  model={result.model}"
    line += f"  attempts={result.attempts}"
    if result.usage:
        line += f"  tokens={result.usage.prompt_tokens}+{result.usage.completion_tokens}"
    click.echo(line)
    if result.error:
        status = f" {result.error.status_code}" if result.error.status_code else ""
        click.echo(f"  error: {result.error.type}{status}: {result.error.message}")


def _exit_for(result: JobResult) -> None:
    """End with `ExitCode.JOB_FAILED` if the job failed or was cancelled (after printing it)."""
    if result.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise click.exceptions.Exit(ExitCode.JOB_FAILED)


@click.command(cls=ExitCodeCommand)
@click.option("--model", help="Model name; picks the tier (e.g. gpt-4o-mini, gpt-4o, o3).")
@click.option("--system", "system_text", help="A system message.")
@click.option("--developer", "developer_text", help="A developer message.")
@click.option("--user", "user_text", help="A user message (after --system/--developer).")
@click.option(
    "--messages",
    "messages_source",
    metavar="FILE|-",
    help="Messages as a JSON list, from a file or - for stdin; --system/--user are appended.",
)
@click.option(
    "--request",
    "request_source",
    metavar="FILE|-",
    help="A whole request body as JSON (file or -); options given here override its fields.",
)
@click.option("--max-tokens", type=int)
@click.option("--max-completion-tokens", type=int)
@click.option("--temperature", type=float)
@click.option("--top-p", type=float)
@click.option("--frequency-penalty", type=float)
@click.option("--presence-penalty", type=float)
@click.option("--stop", multiple=True, help="A stop sequence (repeat for up to 4).")
@click.option("--seed", type=int)
@click.option("-n", "n", type=int, help="Number of choices.")
@click.option("--logprobs/--no-logprobs", default=None)
@click.option("--top-logprobs", type=int)
@click.option("--stream/--no-stream", default=None, help="Run the call with the API's streaming.")
@click.option("--response-format", type=click.Choice(["text", "json_object"]))
@click.option("--json-schema", metavar="FILE", help="response_format json_schema from a file.")
@click.option("--tools", "tools_source", metavar="FILE", help="tools as a JSON list from a file.")
@click.option("--tool-choice", help="none, auto, required, or a function name.")
@click.option(
    "--reasoning-effort",
    # The contract's own Literal: a new effort level there is a new choice here.
    type=click.Choice(get_args(ReasoningEffort)),
)
@click.option("--end-user", "end_user", help="The API's `user` field (an end-user id).")
@click.option("--metadata", multiple=True, metavar="KEY=VALUE", help="Job metadata (repeat).")
@click.option(
    "--idempotency-key",
    help="Submitting the same request with the same key again returns the first job's id.",
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="For --wait.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the job id, or the result).")
def submit(**options: Any) -> None:
    """Submit a Chat Completions job; prints its id (or, with --wait, its result)."""
    request = _build_request(options)
    client = _client()
    job_id = client.submit(request, idempotency_key=options["idempotency_key"])
    if not options["wait"]:
        click.echo(json.dumps({"job_id": job_id}) if options["as_json"] else job_id)
        return
    result = client.wait(job_id, timeout=options["timeout"])
    _print_result(result, options["as_json"])
    _exit_for(result)


def _build_request(options: dict[str, Any]) -> dict[str, Any]:
    request: dict[str, Any] = {}
    if options["request_source"]:
        loaded = _read_json(options["request_source"])
        if not isinstance(loaded, dict):
            fail("--request must hold a JSON object", ExitCode.INVALID)
        request.update(loaded)
    messages = list(request.get("messages") or [])
    if options["messages_source"]:
        loaded = _read_json(options["messages_source"])
        if not isinstance(loaded, list):
            fail("--messages must hold a JSON list of messages", ExitCode.INVALID)
        messages = loaded
    for role, key in (("system", "system_text"), ("developer", "developer_text")):
        if options[key] is not None:
            messages.append({"role": role, "content": options[key]})
    if options["user_text"] is not None:
        messages.append({"role": "user", "content": options["user_text"]})
    if messages:
        request["messages"] = messages
    if options["model"]:
        request["model"] = options["model"]
    simple = (
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "frequency_penalty",
        "presence_penalty",
        "seed",
        "n",
        "logprobs",
        "top_logprobs",
        "stream",
        "reasoning_effort",
    )
    for name in simple:
        if options[name] is not None:
            request[name] = options[name]
    if options["stop"]:
        request["stop"] = list(options["stop"])
    if options["end_user"] is not None:
        request["user"] = options["end_user"]
    if options["response_format"]:
        request["response_format"] = {"type": options["response_format"]}
    if options["json_schema"]:
        request["response_format"] = {
            "type": "json_schema",
            "json_schema": _read_json(options["json_schema"]),
        }
    if options["tools_source"]:
        request["tools"] = _read_json(options["tools_source"])
    choice = options["tool_choice"]
    if choice is not None:
        request["tool_choice"] = (
            choice
            if choice in ("none", "auto", "required")
            else {"type": "function", "function": {"name": choice}}
        )
    if options["metadata"]:
        pairs = {}
        for item in options["metadata"]:
            key, sep, value = item.partition("=")
            if not sep:
                fail(f"--metadata {item!r} is not KEY=VALUE", ExitCode.INVALID)
            pairs[key] = value
        request["metadata"] = {**request.get("metadata", {}), **pairs}
    if "model" not in request:
        fail("a model is needed: --model, or in --request", ExitCode.INVALID)
    return request


@click.command(cls=ExitCodeCommand)
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
def status(job_id: str, as_json: bool) -> None:
    """Show a job's status, attempts and tokens."""
    result = _client().get(job_id)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        _print_status(result)


@click.command(cls=ExitCodeCommand)
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait until the job has finished.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="For --wait.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
def result(job_id: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Print a job's answer (exit 1 if the job failed)."""
    client = _client()
    record = client.wait(job_id, timeout=timeout) if wait else client.get(job_id)
    _print_result(record, as_json)
    _exit_for(record)


@click.command(cls=ExitCodeCommand)
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job: if queued it never reaches the API; if running its result is discarded."""
    record = _client().cancel(job_id)
    _print_status(record)


@click.command(cls=ExitCodeCommand)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
def dead(limit: int, as_json: bool) -> None:
    """List dead letters: jobs that failed after exhausting their attempts, newest first."""
    records = _client().dead_letters(limit)
    if as_json:
        click.echo(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return
    if not records:
        click.echo("no dead letters")
    for record in records:
        _print_status(record)


@click.command(cls=ExitCodeCommand)
@click.argument("job_id")
def retry(job_id: str) -> None:
    """Run a dead letter again with a fresh attempt budget (same job id)."""
    click.echo(_client().retry(job_id))


@click.command(cls=ExitCodeCommand)
@click.option("--json", "as_json", is_flag=True, help="Print JSON, one object per group.")
def limits(as_json: bool) -> None:
    """Show each model's (or group's) RPM/TPM limit, where it came from, and its use."""
    from rich.console import Console
    from rich.table import Table

    from tierq.core.jobstore import connect
    from tierq.core.ratelimit import SharedRateLimiter
    from tierq.core.settings import get_settings
    from tierq.producers.stats import limit_groups

    settings = get_settings()
    limiter = SharedRateLimiter(connect(settings, socket_timeout_seconds=2.0, retries=3), settings)
    groups = limit_groups(settings)
    try:
        usages = [limiter.usage(group, models) for group, models in sorted(groups.items())]
    except redis.RedisError as error:
        raise BrokerUnavailableError(f"cannot reach Redis: {error}") from None
    if as_json:
        click.echo(json.dumps([asdict(usage) for usage in usages], indent=2))
        return
    table = Table(title="Rate limits (shared by every worker)")
    for column in ("group", "models", "limit", "source", "this minute", "last minute", "state"):
        table.add_column(column)
    for u in usages:
        limit = " / ".join(
            f"{value:,} {unit}" for value, unit in ((u.rpm, "RPM"), (u.tpm, "TPM")) if value
        )
        state = (
            f"paused {u.paused_for_seconds:.1f}s"
            if u.paused_for_seconds
            else (
                f"next start in {u.next_start_in_seconds:.1f}s"
                if u.next_start_in_seconds
                else "open"
            )
        )
        table.add_row(
            u.group,
            ", ".join(u.models),
            limit or "not known yet",
            u.source,
            f"{u.requests_this_minute} req, {u.tokens_this_minute:,} tok",
            f"{u.requests_last_minute} req, {u.tokens_last_minute:,} tok",
            state,
        )
    Console().print(table)
