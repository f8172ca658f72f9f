"""The `tierq` command: the root that every role hangs from by subcommand.

The job commands (`submit`, `status`, `result`, `cancel`, `dead`, `retry`, `limits`) live with
the producer side (producers/cli.py); `worker` with the worker side; `gateway`, `keys`,
`batch`, `usage` and `stats` with the producer side's tools; `simulator` and `demo` apart.
This module sits above both sides so that neither names the other: each subcommand is named
here as `module:attribute` and imported only when invoked (click's lazy-group pattern), so
`tierq submit` loads neither `openai`, the gateway nor the worker.

Exit status means the same in every subcommand: the map is `ExitCode`
(tierq/core/exit_codes.py).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click

SUBCOMMANDS = {
    "submit": "tierq.producers.cli:submit",
    "status": "tierq.producers.cli:status",
    "result": "tierq.producers.cli:result",
    "cancel": "tierq.producers.cli:cancel",
    "dead": "tierq.producers.cli:dead",
    "retry": "tierq.producers.cli:retry",
    "limits": "tierq.producers.cli:limits",
    "worker": "tierq.worker.cli:worker_command",
    "simulator": "tierq_simulator.cli:simulator_command",
    "demo": "tierq.devkit.demo:demo_command",
    "gateway": "tierq.producers.gateway.cli:gateway_command",
    "keys": "tierq.producers.gateway.cli:keys_group",
    "batch": "tierq.producers.batch_run:batch_group",
    "usage": "tierq.producers.usage:usage_command",
    "stats": "tierq.producers.stats:stats_command",
}


class LazyGroup(click.Group):
    """A group whose subcommands, given as `module:attribute`, are imported on first use."""

    def __init__(
        self, *args: Any, lazy_subcommands: Mapping[str, str] | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.lazy_subcommands = dict(lazy_subcommands or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.lazy_subcommands])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy_subcommands:
            module_name, attribute = self.lazy_subcommands[cmd_name].split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, lazy_subcommands=SUBCOMMANDS)
@click.version_option(package_name="tierq")
def cli() -> None:
    """tierq: OpenAI Chat Completions calls as durable, rate-limited background jobs.

    Settings come from the environment (TIERQ_*, OPENAI_API_KEY, OPENAI_BASE_URL) or .env.
    """


def main() -> None:
    """The console script (and `python -m tierq`): named `tierq` however it was started."""
    cli(prog_name="tierq")


if __name__ == "__main__":
    main()
