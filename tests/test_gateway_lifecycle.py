"""How a gateway starts and stops: `tierq gateway` on a port it cannot have, the gateway's
commands with a wrong setting, and its background task (the batch finalizer) stopped at any
point of its work.

The commands run as real processes (`run_tierq`); the finalizer runs on the tests' real Redis,
under a key prefix of its own, so it sees no other test's batches.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from functools import partial

import pytest

from tests.support import clean_environment, nonce, run_tierq
from tierq.core.exit_codes import ExitCode
from tierq.devkit.processes import settings_for
from tierq.producers.gateway.batch_finalizer import Finalizer
from tierq.producers.gateway.deps import Gateway

# A gateway that cannot listen says so within this long (it used to hang until SIGKILL).
REFUSAL_SECONDS = 15.0
# A cancelled finalizer ends within this long (it ends at once; this is the bound).
STOP_SECONDS = 1.0
# Event-loop steps after its start at which the finalizer is cancelled, one run each: they
# land in every await of a pass (connecting to Redis, sending and reading each command) and in
# the sleep after it.
STOP_STEPS = range(1, 41)
# By then its first pass (over no batches) is long done and it sleeps until the next.
ASLEEP_AFTER_SECONDS = 0.3


@pytest.fixture
def gateway_env(redis_url: str) -> dict[str, str]:
    """A gateway's environment on the tests' Redis, under a key prefix of its own."""
    return {
        **clean_environment(),
        "TIERQ_REDIS_URL": redis_url,
        "TIERQ_KEY_PREFIX": f"tq-{nonce()}:",
    }


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port on 127.0.0.1 that a listening socket of the test holds."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def test_a_gateway_whose_port_is_taken_says_so_and_exits_at_once(
    gateway_env: dict[str, str], taken_port: int
) -> None:
    started = time.monotonic()
    done = run_tierq(
        gateway_env, "gateway", "--host", "127.0.0.1", "--port", str(taken_port),
        timeout=REFUSAL_SECONDS,
    )  # fmt: skip

    assert done.returncode == ExitCode.INVALID, done.stderr
    assert f"error: cannot listen on 127.0.0.1:{taken_port}" in done.stderr
    assert "in use" in done.stderr
    assert "Traceback" not in done.stderr
    assert time.monotonic() - started < REFUSAL_SECONDS


@pytest.mark.parametrize(
    "command",
    [["gateway"], ["keys", "create", "acme"], ["keys", "list"], ["keys", "revoke", "k"]],
    ids=" ".join,
)
def test_a_wrong_setting_ends_the_gateways_commands_with_one_error_and_exit_2(
    gateway_env: dict[str, str], command: list[str]
) -> None:
    done = run_tierq({**gateway_env, "TIERQ_LOG_LEVEL": "LOUD"}, *command)

    assert done.returncode == ExitCode.INVALID, done.stderr
    assert done.stderr.startswith("error: invalid settings:")
    assert "TIERQ_LOG_LEVEL" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_batch_finalizer_ends_cancelled_wherever_it_is_stopped(
    gateway_env: dict[str, str],
) -> None:
    # On Python 3.11 a cancellation that lands while redis-py sends a command is lost inside
    # `asyncio.wait_for` (python/cpython#86296): the task was left "cancelling", asleep, and a
    # stopping gateway (its port taken, SIGTERM, Ctrl-C) waited for it forever.
    settings = settings_for(gateway_env)

    async def ends_cancelled(until: Callable[[], Awaitable[object]]) -> bool:
        """Whether the finalizer, cancelled once `until()` returns, has ended cancelled."""
        gateway = Gateway.open(settings)
        task = asyncio.create_task(Finalizer(gateway).run())
        try:
            await until()
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_SECONDS)
            return task.cancelled()
        finally:
            while not task.done():  # one that lost its cancellation: ended for the cleanup
                task.cancel()
                await asyncio.wait({task}, timeout=STOP_SECONDS)
            await gateway.aclose()

    async def steps(count: int) -> None:
        for _ in range(count):
            await asyncio.sleep(0)

    async def every_stop() -> tuple[list[int], bool]:
        missed = [n for n in STOP_STEPS if not await ends_cancelled(partial(steps, n))]
        asleep = await ends_cancelled(partial(asyncio.sleep, ASLEEP_AFTER_SECONDS))
        return missed, asleep

    missed, ended_from_its_sleep = asyncio.run(every_stop())

    assert ended_from_its_sleep
    assert missed == [], f"still running after a cancel at these steps: {missed}"
