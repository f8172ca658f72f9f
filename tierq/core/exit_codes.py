"""Every `tierq` command's exit status, in one map, and the ways a command ends with one.

Scripts branch on these numbers (`tierq result "$id" || ...`), so each meaning has one code
for every command: the job commands, `batch run`, `keys`, `usage`, `stats`, `worker` and `demo`
all take theirs from `ExitCode`. A command ends early with `fail()` (`error: <message>` on
stderr, then the code) or, for an outcome that is not an error (a job not finished yet),
`stop()` (the message alone). A command built with `cls=ExitCodeCommand` needs no error
handling of its own: the tierq errors that have a code end it with their message and that
code, not a traceback, and Ctrl-C ends it with `ExitCode.INTERRUPTED`, not click's "Aborted!"
and exit 1 (which would read as a failed job).

All raise click's `Exit`, which click turns into the process's exit status (or returns from
`main(standalone_mode=False)`), so `finally` blocks and context managers still run.
"""

from __future__ import annotations

import enum
from typing import Any, NoReturn

import click

from tierq.core.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    InvalidJobError,
    JobNotFoundError,
    JobWaitTimeout,
    TierqError,
)


class ExitCode(enum.IntEnum):
    """What a `tierq` command's exit status means."""

    OK = 0
    """Done: the command did what it was asked (or the job succeeded)."""
    JOB_FAILED = 1
    """The job failed or was cancelled (`batch run`: at least one request failed)."""
    INVALID = 2
    """Invalid input or settings: bad usage, a refused request or file, a wrong setting."""
    NOT_FOUND = 3
    """No such job (or, for `keys revoke`, no such key)."""
    TIMED_OUT = 4
    """Gave up waiting; the job carries on and can be waited for again."""
    REDIS_UNREACHABLE = 5
    """Redis did not answer."""
    NOT_FINISHED = 6
    """`result` without `--wait`: the job has not finished yet, so there is no answer to print
    (nothing on stdout)."""
    ALREADY_FINISHED = 7
    """`cancel`: the job had succeeded or failed before the cancel reached it; its answer (or
    error) stands."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (128 + SIGINT, the shell's convention); `batch run` can resume."""


# The tierq errors a command may end with, and the code each ends it with. Errors not listed
# (a provider error, say, which only a worker raises) are bugs if they reach a command: they
# keep their traceback.
ERROR_EXIT_CODES: dict[type[TierqError], ExitCode] = {
    InvalidJobError: ExitCode.INVALID,
    ConfigurationError: ExitCode.INVALID,
    JobNotFoundError: ExitCode.NOT_FOUND,
    JobWaitTimeout: ExitCode.TIMED_OUT,
    BrokerUnavailableError: ExitCode.REDIS_UNREACHABLE,
}


def exit_code_for(error: TierqError) -> ExitCode | None:
    """The code a command ends with for `error`, or None if it is not one a command expects."""
    for kind, code in ERROR_EXIT_CODES.items():
        if isinstance(error, kind):
            return code
    return None


def stop(message: str, code: ExitCode) -> NoReturn:
    """End the command: `message` on stderr (stdout stays as it is), then exit status `code`."""
    click.echo(message, err=True)
    raise click.exceptions.Exit(code)


def fail(message: str, code: ExitCode) -> NoReturn:
    """End the command: `error: <message>` on stderr, then exit status `code`."""
    stop(f"error: {message}", code)


class ExitCodeCommand(click.Command):
    """A click command whose tierq errors, and Ctrl-C, end it with a message and exit code.

    The translation lives here once, so each command's body is plain code that lets a
    `JobNotFoundError`, a `ConfigurationError` or a `KeyboardInterrupt` rise.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TierqError as error:
            code = exit_code_for(error)
            if code is None:
                raise
            fail(str(error), code)
        except KeyboardInterrupt:
            stop("interrupted", ExitCode.INTERRUPTED)
