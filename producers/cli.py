"""The job commands of `tierq`: `submit`, `status`, `result`, `cancel`, `dead`, `retry`,
`limits`.

The root command (tierq/cli.py) imports this module only when one of them is invoked, and this
module imports nothing of the worker side or the gateway, so `tierq submit` loads neither
`openai`, the gateway nor the worker's tasks. Each command is an `ExitCodeCommand`: the tierq
errors its body lets rise end it with their message and exit code (tierq/core/exit_codes.py),
and what it prints follows the conventions of tierq/core/cli_output.py (one JSON document per
`--json`, tables that never cut a name).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args

import click
import redis

from tierq.core.cli_output import echo_json, plural, print_table
from tierq.core.contract import ReasoningEffort
from tierq.core.errors import BrokerUnavailableError, InvalidJobError, JobNotFoundError
from tierq.core.exit_codes import ExitCode, ExitCodeCommand, exit_code_for, stop
from tierq.core.priority import PRIORITIES, PRIORITY_DEFAULT
from tierq.core.results import JobResult, JobStatus
from tierq.core.sliding_window import CONTEXT_OVERFLOW_CHOICES, CONTEXT_OVERFLOW_DEFAULT
from tierq.producers.cli_request import build_labels, build_request

if TYPE_CHECKING:
    from tierq.producers.client import TierqClient

# Dead letters read per round by `retry --all-dead`.
RETRY_PAGE = 500


def _client() -> TierqClient:
    from tierq.producers.client import TierqClient

    return TierqClient()


def _print_result(result: JobResult, as_json: bool) -> None:
    if as_json:
        echo_json(result)
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
    usage = result.usage
    if usage:
        line += f"  tokens={usage.prompt_tokens}+{usage.completion_tokens}"
        if usage.reasoning_tokens and usage.completion_tokens:
            # Billed as completion tokens but never shown: the part of the bill a reader of
            # the answer cannot see.
            share = usage.reasoning_tokens / usage.completion_tokens
            line += f"  reasoning={usage.reasoning_tokens} ({share:.0%} of completion)"
    if result.context_dropped_messages:
        line += (
            f"  dropped={result.context_dropped_messages} messages "
            f"({result.context_dropped_tokens} tokens, sliding window)"
        )
    click.echo(line)
    if result.error:
        status = f" {result.error.status_code}" if result.error.status_code else ""
        click.echo(f"  error: {result.error.type}{status}: {result.error.message}")


def _exit_for(result: JobResult) -> None:
    """End with `ExitCode.JOB_FAILED` if the job failed or was cancelled (after printing it)."""
    if result.status in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise click.exceptions.Exit(ExitCode.JOB_FAILED)


def _warn_if_no_worker(client: TierqClient, record: JobResult) -> None:
    """Say at once, on stderr, when no live worker serves the job's tier: a wait would
    otherwise sit silent until its timeout. The wait goes on, as a worker may yet start."""
    if record.status.is_final:
        return
    from tierq.producers.stats import live_workers

    try:
        serving = {beat["tier"] for beat in live_workers(client.redis, client.settings)}
    except redis.RedisError:
        return  # the wait rides out an outage, or reports it
    if record.tier not in serving:
        queue = client.settings.queue_for(record.tier)
        click.echo(
            f"warning: no live worker serves tier {record.tier}; the job waits on queue "
            f"{queue} until one starts",
            err=True,
        )


def _wait(client: TierqClient, record: JobResult, timeout: float) -> JobResult:
    """Wait for the job `record` describes, warning first if no worker can take it."""
    _warn_if_no_worker(client, record)
    try:
        return client.wait(record.job_id, timeout=timeout)
    except KeyboardInterrupt:
        stop(
            f"interrupted: job {record.job_id} carries on; `tierq result {record.job_id} "
            "--wait` waits for it again",
            ExitCode.INTERRUPTED,
        )


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
@click.option(
    "--json-schema",
    metavar="FILE",
    help="Structured output: a JSON Schema (named after the file), a response_format's "
    "json_schema part, or a whole response_format.",
)
@click.option("--tools", "tools_source", metavar="FILE", help="tools as a JSON list from a file.")
@click.option("--tool-choice", help="none, auto, required, or a function name.")
@click.option(
    "--reasoning-effort",
    # The contract's own Literal: a new effort level there is a new choice here.
    type=click.Choice(get_args(ReasoningEffort)),
)
@click.option("--end-user", "end_user", help="The API's `user` field (an end-user id).")
@click.option(
    "--label",
    "labels",
    multiple=True,
    metavar="KEY=VALUE",
    help="A label of tierq's on the job, kept on its record and never sent (repeat).",
)
@click.option(
    "--context-overflow",
    type=click.Choice(CONTEXT_OVERFLOW_CHOICES),
    default=CONTEXT_OVERFLOW_DEFAULT,
    show_default=True,
    help="A conversation over the model's context window: refuse it, or drop its oldest "
    "turns until it fits (sliding_window). tierq's option, never sent.",
)
@click.option(
    "--priority",
    type=click.Choice(PRIORITIES),
    default=PRIORITY_DEFAULT,
    show_default=True,
    help="The job's class: on a tier with fair dispatch, a higher one leaves its backlog "
    "sooner. tierq's option, never sent.",
)
@click.option(
    "--deadline",
    metavar="SECONDS|RFC3339",
    help="By when the result must exist: seconds from now (3600) or a time "
    "(2026-12-02T09:00:00Z). A job with time to spare runs at the cheaper flex service tier "
    "where its model offers it. tierq's option, never sent.",
)
@click.option(
    "--idempotency-key",
    help="Submitting the same request with the same key again returns the first job's id.",
)
@click.option("--wait", is_flag=True, help="Wait for the result and print it.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="For --wait.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the job id, or the result).")
def submit(**options: Any) -> None:
    """Submit a Chat Completions job; prints its id (or, with --wait, its result)."""
    request = build_request(options)
    labels = build_labels(options["labels"])
    client = _client()
    job_id = client.submit(
        request,
        idempotency_key=options["idempotency_key"],
        labels=labels,
        context_overflow=options["context_overflow"],
        priority=options["priority"],
        deadline=options["deadline"],
    )
    if not options["wait"]:
        if options["as_json"]:
            echo_json({"job_id": job_id})
        else:
            click.echo(job_id)
        return
    result = _wait(client, client.get(job_id), options["timeout"])
    _print_result(result, options["as_json"])
    _exit_for(result)


@click.command(cls=ExitCodeCommand)
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
def status(job_id: str, as_json: bool) -> None:
    """Show a job's status, attempts and tokens."""
    result = _client().get(job_id)
    if as_json:
        echo_json(result)
    else:
        _print_status(result)


@click.command(cls=ExitCodeCommand)
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait until the job has finished.")
@click.option("--timeout", type=float, default=300.0, show_default=True, help="For --wait.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
def result(job_id: str, wait: bool, timeout: float, as_json: bool) -> None:
    """Print a job's answer (exit 1 if the job failed, 6 if it has not finished)."""
    client = _client()
    record = client.get(job_id)
    if wait:
        record = _wait(client, record, timeout)
    if not record.status.is_final:
        # Nothing on stdout: `tierq result ID > answer.txt` must not store a status line.
        stop(
            f"job {job_id} is {record.status.value}: not finished yet "
            f"(`tierq result {job_id} --wait` waits for it)",
            ExitCode.NOT_FINISHED,
        )
    _print_result(record, as_json)
    _exit_for(record)


@click.command(cls=ExitCodeCommand)
@click.argument("job_id")
def cancel(job_id: str) -> None:
    """Cancel a job: if queued it never reaches the API; if running its result is discarded.

    Exit 0 when the job is cancelled (now, or already before); 7 when it had succeeded or
    failed first, and its answer or error stands.
    """
    client = _client()
    before = client.get(job_id)
    after = before if before.status.is_final else client.cancel(job_id)
    if after.status is not JobStatus.CANCELLED:
        stop(
            f"nothing to cancel: job {job_id} already {after.status.value}",
            ExitCode.ALREADY_FINISHED,
        )
    if before.status is JobStatus.CANCELLED:
        click.echo(f"nothing to cancel: job {job_id} was already cancelled", err=True)
    _print_status(after)


@click.command(cls=ExitCodeCommand)
@click.option("--limit", type=click.IntRange(1, 10_000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the records as a JSON array.")
def dead(limit: int, as_json: bool) -> None:
    """List dead letters: jobs that failed after exhausting their attempts, newest first."""
    records = _client().dead_letters(limit)
    if as_json:
        echo_json(records)
        return
    if not records:
        click.echo("no dead letters")
    for record in records:
        _print_status(record)


@click.command(cls=ExitCodeCommand)
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...")
@click.option(
    "--all-dead", is_flag=True, help="Every dead letter (after a 429 storm or an outage, say)."
)
def retry(job_ids: tuple[str, ...], all_dead: bool) -> None:
    """Run dead letters again, each with a fresh attempt budget (same job id).

    Prints each job id retried. Every id given is tried; the exit status is that of the first
    that could not be (3: no such job, 2: not a dead letter).
    """
    if job_ids and all_dead:
        raise click.UsageError("give JOB_ID... or --all-dead, not both")
    if not job_ids and not all_dead:
        raise click.UsageError("name the jobs to retry (JOB_ID...), or give --all-dead")
    client = _client()
    if all_dead:
        count = _retry_all_dead(client)
        summary = f"retried {plural(count, 'dead letter')}" if count else "no dead letters"
        click.echo(summary, err=True)  # stdout holds only the ids, for scripts
        return
    first_failure: ExitCode | None = None
    for job_id in job_ids:
        try:
            click.echo(client.retry(job_id))
        except (JobNotFoundError, InvalidJobError) as error:
            click.echo(f"error: {error}", err=True)
            first_failure = first_failure or exit_code_for(error)
    if first_failure is not None:
        raise click.exceptions.Exit(first_failure)


def _retry_all_dead(client: TierqClient) -> int:
    """Retry every dead letter, newest first, a page at a time (each leaves the list as it is
    retried). A job that dies again during the run is not retried twice: should such jobs fill
    a page, the next one reads further down. Returns how many were retried."""
    seen: set[str] = set()
    count, limit = 0, RETRY_PAGE
    while True:
        records = client.dead_letters(limit)
        page = [record.job_id for record in records if record.job_id not in seen]
        if not page:
            if len(records) < limit:
                return count
            limit += RETRY_PAGE
            continue
        for job_id in page:
            seen.add(job_id)
            try:
                click.echo(client.retry(job_id))
                count += 1
            except (JobNotFoundError, InvalidJobError):
                continue  # retried by someone else, or expired, since the page was read


@click.command(cls=ExitCodeCommand)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per group.")
def limits(as_json: bool) -> None:
    """Show each model's (or group's) RPM/TPM limit, where it came from, and its use."""
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
        echo_json(usages)
        return
    table = Table(title="Rate limits (shared by every worker)")
    for column in ("group", "models", "limit", "source", "this minute", "last minute", "state"):
        # A name folds on a narrow terminal rather than lose characters (cli_output.py).
        table.add_column(column, overflow="fold")
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
    print_table(table)
