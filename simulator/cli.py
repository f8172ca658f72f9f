"""`tierq simulator` (or `python -m tierq_simulator`): run the simulator in this process.

One process, uvloop and httptools, no access log: the simulator shares a small machine with
the system under test in benchmarks, so it must spend as little CPU per request as it can.
The banner is printed (and flushed) only once the socket listens, so a parent process can
wait for it; it ends with the exact `export OPENAI_BASE_URL=...` and `export OPENAI_API_KEY=...`
lines a user copies.
"""

import socket
from collections.abc import Sequence

import click
import uvicorn
from pydantic import ValidationError

from tierq_simulator.app import create_app
from tierq_simulator.config import FAULT_KINDS, SimulatorConfig, describe

GRACEFUL_SHUTDOWN_SECONDS = 2  # don't let hanging `timeout` faults hold up a stop
# The key the banner suggests: any non-empty key is accepted, this one says where it goes.
ANY_API_KEY = "sk-simulator"


def _fail_rates(
    ctx: click.Context, param: click.Parameter, values: Sequence[str]
) -> dict[str, float]:
    rates: dict[str, float] = {}
    for value in values:
        kind, sep, raw = value.partition("=")
        if not sep or kind not in FAULT_KINDS:
            raise click.BadParameter(f"expected KIND=P with KIND in {', '.join(FAULT_KINDS)}")
        try:
            rates[kind] = float(raw)
        except ValueError:
            raise click.BadParameter(f"{raw!r} is not a probability") from None
    return rates


def banner(host: str, port: int) -> str:
    """What the simulator prints once it listens: its address, then the exact lines that point
    the `openai` SDK (and tierq's workers) at it, to copy into other terminals.

    The base URL ends in `/v1`, as the SDK's default `https://api.openai.com/v1` does: the SDK
    appends `/chat/completions` to it, so a base URL without `/v1` fails every call with a 404.
    The key is any non-empty string (the simulator checks only that one is sent).
    """
    if host in ("", "0.0.0.0", "::"):  # noqa: S104 (every interface: reach it on loopback)
        host = "127.0.0.1"
    address = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return (
        f"tierq simulator listening on {address}; point the openai SDK and tierq workers at it:\n"
        f"export OPENAI_BASE_URL={address}/v1\n"
        f"export OPENAI_API_KEY={ANY_API_KEY}"
    )


class _AnnouncingServer(uvicorn.Server):
    """A uvicorn server that prints the banner once it listens."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.config.host, self.config.port
            for server in getattr(self, "servers", []):
                for sock in server.sockets:
                    port = sock.getsockname()[1]  # the real port when --port 0
            print(banner(host, port), flush=True)


@click.command(name="simulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port", default=8711, show_default=True, type=int, help="Port to listen on (0: any free)."
)
@click.option(
    "--latency-ms",
    default=0.0,
    show_default=True,
    type=float,
    help="Delay before every answer, in milliseconds ([sim latency_ms=N] overrides it).",
)
@click.option(
    "--chunk-delay-ms",
    default=0.0,
    show_default=True,
    type=float,
    help="Delay between two chunks of a streamed answer, in milliseconds "
    "([sim chunk_delay_ms=N] overrides it).",
)
@click.option(
    "--rpm",
    default=0,
    show_default=True,
    type=int,
    help="Requests per minute allowed per model; 0 means unlimited.",
)
@click.option(
    "--tpm",
    default=0,
    show_default=True,
    type=int,
    help="Tokens per minute allowed per model; 0 means unlimited.",
)
@click.option(
    "--window-seconds",
    default=1.0,
    show_default=True,
    type=float,
    help="Burst window: each limit admits at most limit x window / 60 at once "
    "(x-ratelimit-* headers still count the per-minute budget).",
)
@click.option(
    "--fail-rate",
    "fail_rates",
    multiple=True,
    callback=_fail_rates,
    metavar="KIND=P",
    help=f"Answer a random share P (0-1) of requests with fault KIND ({', '.join(FAULT_KINDS)}): "
    "an API error with that status, a 30 s hang, or a closed connection. Repeatable. "
    "Streams fail mid-way only on request: [sim fail=stream_cut after=N].",
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Seed random faults, and generated text of requests that carry no seed of their own.",
)
@click.option(
    "--context-window",
    type=int,
    default=None,
    help="Context window in tokens for every model [default: the model's own (gpt-4o 128000, "
    "gpt-4.1 1047576, o-series 200000, gpt-5 400000)].",
)
@click.option(
    "--prompt-cache-ttl-seconds",
    default=300.0,
    show_default=True,
    type=float,
    help="How long a prompt prefix of 1024+ tokens stays cached without use (0: no caching).",
)
@click.option(
    "--flex-latency-factor",
    default=2.0,
    show_default=True,
    type=float,
    help="A request served at service_tier=flex waits this many times the latency.",
)
@click.option(
    "--flex-unavailable-rate",
    default=0.0,
    show_default=True,
    type=float,
    help="Share (0-1) of flex requests answered 429 resource_unavailable (nothing billed); "
    "[sim flex=unavailable] forces it for one request.",
)
@click.option(
    "--batch-completion-seconds",
    default=5.0,
    show_default=True,
    type=float,
    help="A batch (POST /v1/batches) completes this long after it was created.",
)
@click.option(
    "--record-limit",
    default=10_000,
    show_default=True,
    type=int,
    help="How many requests GET /sim/requests keeps (oldest dropped first).",
)
def simulator_command(
    host: str,
    port: int,
    latency_ms: float,
    chunk_delay_ms: float,
    rpm: int,
    tpm: int,
    window_seconds: float,
    fail_rates: dict[str, float],
    seed: int | None,
    context_window: int | None,
    prompt_cache_ttl_seconds: float,
    flex_latency_factor: float,
    flex_unavailable_rate: float,
    batch_completion_seconds: float,
    record_limit: int,
) -> None:
    """Serve an OpenAI-compatible Chat Completions API with simulated answers and faults."""
    try:
        config = SimulatorConfig(
            host=host,
            port=port,
            latency_ms=latency_ms,
            chunk_delay_ms=chunk_delay_ms,
            rpm=rpm,
            tpm=tpm,
            window_seconds=window_seconds,
            fail_rates=fail_rates,
            seed=seed,
            context_window=context_window,
            prompt_cache_ttl_seconds=prompt_cache_ttl_seconds,
            flex_latency_factor=flex_latency_factor,
            flex_unavailable_rate=flex_unavailable_rate,
            batch_completion_seconds=batch_completion_seconds,
            record_limit=record_limit,
        )
    except ValidationError as exc:
        raise click.UsageError(describe(exc)) from None
    server = _AnnouncingServer(
        uvicorn.Config(
            create_app(config),
            host=config.host,
            port=config.port,
            loop="uvloop",
            http="httptools",
            access_log=False,
            log_level="warning",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
        )
    )
    server.run()
