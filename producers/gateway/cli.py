"""`tierq gateway` and `tierq keys`: serve the HTTP gateway, and manage its API keys."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
import redis.asyncio
import structlog

from tierq.core.cli_output import echo_json
from tierq.core.exit_codes import ExitCode, ExitCodeCommand, fail
from tierq.core.keys import Keys
from tierq.core.redis_clients import async_client
from tierq.core.settings import get_settings
from tierq.producers.gateway.auth import ApiKey, InvalidTenantError, KeyStore, UnknownKeyError

T = TypeVar("T")

log = structlog.get_logger("tierq.gateway")


@click.command("gateway", cls=ExitCodeCommand)
@click.option("--host", default=None, help="Address to bind [default: TIERQ_GATEWAY__HOST].")
@click.option("--port", type=int, default=None, help="Port to bind [default: TIERQ_GATEWAY__PORT].")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Gateway processes (uvicorn workers).")  # fmt: skip
def gateway_command(host: str | None, port: int | None, workers: int) -> None:
    """Serve the HTTP gateway: the job API and the OpenAI Files and Batches API.

    Exit 2 if its address cannot be had (the port is taken, say), before anything starts.
    """
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from tierq.core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings)
    host = host or settings.gateway.host
    port = port or settings.gateway.port
    try:
        listener = _listen(host, port)
    except OSError as error:
        fail(f"cannot listen on {host}:{port}: {error.strerror or error}", ExitCode.INVALID)
    config = uvicorn.Config(
        "tierq.producers.gateway.app:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # Access lines carry paths and ids, never bodies; structlog carries the rest.
        log_level=settings.log_level.lower(),
        proxy_headers=True,
    )
    log.info("gateway.listening", url=f"http://{host}:{port}", workers=workers)
    try:
        if workers > 1:
            Multiprocess(config, sockets=[listener]).run()
        else:
            uvicorn.Server(config).run(sockets=[listener])
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a gateway is stopped: it has shut down, and exits 0 (as uvicorn)
    finally:
        listener.close()


def _listen(host: str, port: int) -> socket.socket:
    """The gateway's listening socket, bound before the app starts.

    uvicorn binds only after the app's start-up (its Redis pool, the batch finalizer), and
    answers a port it cannot have with a log line and an exit status of its own; bound here
    first, a taken port ends the command at once with `error:` and exit 2, and nothing was
    started. The socket is handed to uvicorn (and inherited by its worker processes), as
    uvicorn's own `--workers` does.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family)
    listener.set_inheritable(True)
    return listener


def _with_store(action: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = get_settings()

    async def run() -> T:
        client = async_client(settings)
        try:
            return await action(KeyStore(client, Keys(settings.key_prefix)))
        finally:
            await client.aclose()

    try:
        return asyncio.run(run())
    except InvalidTenantError as error:
        fail(str(error), ExitCode.INVALID)
    except UnknownKeyError as error:
        fail(str(error), ExitCode.NOT_FOUND)
    except (redis.RedisError, OSError) as error:
        fail(f"cannot reach Redis: {error}", ExitCode.REDIS_UNREACHABLE)


def _view(key: ApiKey) -> dict[str, Any]:
    return key.model_dump(mode="json") | {"active": key.active}


@click.group("keys")
def keys_group() -> None:
    """Create, list and revoke the gateway's API keys (one tenant per key)."""


@keys_group.command("create", cls=ExitCodeCommand)
@click.argument("tenant")
@click.option("--json", "as_json", is_flag=True, help="Print the key and its record as JSON.")
def create_key(tenant: str, as_json: bool) -> None:
    """Create a key for TENANT and print it: it is shown this once, and stored only hashed."""
    secret, record = _with_store(lambda store: store.create(tenant))
    if as_json:
        echo_json({"key": secret, **_view(record)})
    else:
        click.echo(secret)
        click.echo(f"key id {record.key_id}, tenant {record.tenant} (store the key now)", err=True)


@keys_group.command("list", cls=ExitCodeCommand)
@click.option("--tenant", default=None, help="Only this tenant's keys.")
@click.option("--json", "as_json", is_flag=True, help="Print the keys as a JSON array.")
def list_keys(tenant: str | None, as_json: bool) -> None:
    """List keys: id, tenant, first characters, created, revoked. Never the keys."""
    found = _with_store(lambda store: store.list(tenant))
    if as_json:
        echo_json([_view(key) for key in found])
        return
    for key in found:
        revoked = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "active"
        click.echo(
            f"{key.key_id}  {key.tenant:<20} {key.hint}…  "
            f"created {key.created_at:%Y-%m-%d %H:%M}  {revoked}"
        )


@keys_group.command("revoke", cls=ExitCodeCommand)
@click.argument("key_id")
def revoke_key(key_id: str) -> None:
    """Revoke the key KEY_ID: refused from the next request on. Exit 3 if there is none."""
    record = _with_store(lambda store: store.revoke(key_id))
    click.echo(f"revoked {record.key_id} (tenant {record.tenant})")
