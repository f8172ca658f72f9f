"""Running tierq by hand, as the README's "By hand" quick start says: its block runs as
written, and the two commands it relies on print what it tells the reader to copy.

The block is the fenced one under the `<!-- quick start: ... -->` marker in README.md; it runs
in bash, in a directory of its own, as a user pastes it. Only the environment differs from a
user's shell, and the block itself lets the environment win: it keeps a `TIERQ_REDIS_URL` that
is already set (`${TIERQ_REDIS_URL:-...}`), which is also how a user points it at their own
Redis. So no line is rewritten for the tests' Redis: the environment names it, with a queue and
key prefix of the run's own so no other test's worker takes the job. The simulator's port is
rewritten only when something else already listens on it. Everything the block starts in the
background is in its process group, stopped when the run ends.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import openai
import pytest
import redis

from tests.support import clean_environment, eventually, nonce, settings_for
from tierq.core.exit_codes import ExitCode
from tierq.core.keys import Keys
from tierq.devkit.processes import free_port
from tierq.producers.client import TierqClient

README = Path(__file__).resolve().parent.parent / "README.md"
QUICK_START = re.compile(r"^<!-- quick start:[^>]*-->\n```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Starting a worker and a simulator, then one job, on a loaded 2-core machine.
QUICK_START_TIMEOUT_SECONDS = 90.0
# Celery's warm shutdown of an idle worker, the simulator's and Redis's stop.
STOP_GRACE_SECONDS = 20.0
# The shell a user pastes the block into.
BASH = shutil.which("bash") or "/bin/bash"
EXPORT = re.compile(r"^export (\w+)=(\S+)", re.MULTILINE)


@dataclass
class Run:
    """How a run of a shell block ended: its exit status and what it printed."""

    status: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit status {self.status}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def readme_quick_start() -> str:
    """The README's quick-start block, as written."""
    found = QUICK_START.findall(README.read_text(encoding="utf-8"))
    assert len(found) == 1, "README.md needs exactly one block under a <!-- quick start --> mark"
    return str(found[0])


def on_a_free_port(block: str) -> str:
    """`block` as written when the port it gives the simulator is free, else on a free one."""
    port = int(re.findall(r"--port (\d+)", block)[0])
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
            return block
        except OSError:
            pass
    return re.sub(rf"\b{port}\b", str(free_port()), block)


def block_environment(redis_url: str) -> dict[str, str]:
    """A user's shell with tierq installed, on `redis_url`, with queues of the run's own."""
    isolation = nonce()
    return {
        **clean_environment(),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "TIERQ_REDIS_URL": redis_url,
        "TIERQ_QUEUE_PREFIX": f"tierq-quickstart-{isolation}.",
        "TIERQ_KEY_PREFIX": f"tierq-quickstart-{isolation}:",
    }


def live_members(group: int) -> list[int]:
    """The processes of a process group not yet ended (zombies count as ended: whoever
    adopted them may never reap them)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # ended while we looked
        # After the ")" of stat(5): state is field 3, the process group field 5.
        if int(fields[2]) == group and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM every process of the group `process` leads, SIGKILL what is left after the grace
    period, and reap the leader."""
    for signum in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        while live_members(process.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not live_members(process.pid):
            break
    process.wait()


@contextmanager
def run_in_bash(block: str, env: dict[str, str], directory: Path) -> Iterator[Run]:
    """Run `block` in bash in `directory` until it ends (bounded), yield how it ended, then
    stop every process it left running in the background (its process group)."""
    script = directory / "block.sh"
    script.write_text(block, encoding="utf-8")
    stdout_path, stderr_path = directory / "stdout.txt", directory / "stderr.txt"
    # Files, not pipes: the background processes keep the block's output open after it ends.
    with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [BASH, str(script)], cwd=directory, env=env, stdout=stdout, stderr=stderr,
            start_new_session=True,
        )  # fmt: skip
    try:
        try:
            status = process.wait(QUICK_START_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            status = -1
        run = Run(
            status, stdout_path.read_text(errors="replace"), stderr_path.read_text(errors="replace")
        )
        assert status != -1, f"the block ran past {QUICK_START_TIMEOUT_SECONDS}s:\n{run}"
        yield run
    finally:
        stop_group(process)


def the_only_job_content(env: dict[str, str]) -> str | None:
    """The answer of the one job submitted under `env`'s key prefix."""
    settings = settings_for(env)
    with redis.Redis.from_url(settings.redis_url.get_secret_value()) as client:
        job_keys = [key.decode() for key in client.scan_iter(Keys(settings.key_prefix).job("*"))]
    assert len(job_keys) == 1, job_keys
    job_id = job_keys[0].removeprefix(Keys(settings.key_prefix).job_prefix)
    with TierqClient(settings) as tierq:
        return tierq.get(job_id).content


# --- the README's block ------------------------------------------------------------------------


def test_the_readme_quick_start_runs_as_written_and_prints_the_answer(
    redis_url: str, tmp_path: Path
) -> None:
    # Given the README's block, and a shell whose TIERQ_REDIS_URL names a Redis that answers
    block = on_a_free_port(readme_quick_start())
    env = block_environment(redis_url)

    # When it runs as written
    with run_in_bash(block, env, tmp_path) as run:
        # Then the job's answer is what it printed last, and it ends with status 0
        assert run.status == ExitCode.OK, str(run)
        answer = the_only_job_content(env)
        assert answer
        assert run.stdout.rstrip().endswith(answer.rstrip()), str(run)

    # And the Redis step left the Redis that answered alone; the `export OPENAI_*` lines the
    # reader copies are the ones the simulator printed
    assert "a Redis already answers at" in run.stdout, str(run)
    copied = [line for line in block.splitlines() if line.startswith("export OPENAI_")]
    assert len(copied) == 2, block
    for line in copied:
        assert re.sub(r"\s+#.*", "", line) in run.stdout.splitlines(), str(run)


def test_the_quick_start_starts_its_own_redis_on_a_machine_without_one(tmp_path: Path) -> None:
    # Given a shell whose TIERQ_REDIS_URL names a port where nothing listens
    block = on_a_free_port(readme_quick_start())
    env = block_environment(f"redis://127.0.0.1:{free_port()}/0")

    # When the README's block runs as written
    with run_in_bash(block, env, tmp_path) as run:
        # Then it started the embedded Redis there, and the job ran on it
        assert run.status == ExitCode.OK, str(run)
        export = f"export TIERQ_REDIS_URL={env['TIERQ_REDIS_URL']}"
        assert export in run.stdout.splitlines(), str(run)
        answer = the_only_job_content(env)
        assert answer
        assert run.stdout.rstrip().endswith(answer.rstrip()), str(run)


def test_a_quick_start_whose_base_url_lacks_v1_fails_the_same_run(
    redis_url: str, tmp_path: Path
) -> None:
    # Given the block with the base URL the simulator's banner used to show: no /v1
    block = on_a_free_port(readme_quick_start())
    broken = re.sub(r"(export OPENAI_BASE_URL=\S+)/v1", r"\1", block)
    assert broken != block

    # When the same runner runs it
    with run_in_bash(broken, block_environment(redis_url), tmp_path) as run:
        # Then the job fails with the API's 404, and so does the run
        assert run.status == ExitCode.JOB_FAILED, str(run)
        assert "404" in run.stdout, str(run)


# --- what the reader copies ------------------------------------------------------------------


def test_the_simulator_prints_the_exact_base_url_and_key_to_export(tmp_path: Path) -> None:
    # Given a simulator started as `tierq simulator` starts it (on a free port)
    log = tmp_path / "simulator.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tierq_simulator", "--port", "0"],
            stdout=output, stderr=subprocess.STDOUT, env=clean_environment(),
            start_new_session=True,
        )  # fmt: skip
    try:
        # When it is ready, it has printed an export line for the base URL and the key
        exports = eventually(
            lambda: dict(EXPORT.findall(log.read_text())),
            until=lambda found: {"OPENAI_BASE_URL", "OPENAI_API_KEY"} <= set(found),
            what="the simulator's export lines",
            timeout=30,
        )

        # Then the SDK, given exactly those, gets an answer
        with openai.OpenAI(
            base_url=exports["OPENAI_BASE_URL"], api_key=exports["OPENAI_API_KEY"], max_retries=0
        ) as sdk:
            completion = sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}]
            )
        assert exports["OPENAI_BASE_URL"].endswith("/v1")
        assert completion.choices[0].message.content
    finally:
        stop_group(process)


@contextmanager
def local_redis(env: dict[str, str], directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m tierq.devkit.local_redis` running in the background, output to a file."""
    with (directory / "local_redis.log").open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "tierq.devkit.local_redis"], stdout=output,
            stderr=subprocess.STDOUT, env=env, cwd=directory, start_new_session=True,
        )  # fmt: skip
    try:
        yield process
    finally:
        stop_group(process)


def reachable(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_local_redis_starts_one_where_none_answers_and_stops_it_on_sigterm(
    tmp_path: Path,
) -> None:
    # Given a URL on a port where nothing listens
    url = f"redis://127.0.0.1:{free_port()}/3"
    env = {**clean_environment(), "TIERQ_REDIS_URL": url}

    with local_redis(env, tmp_path) as process:
        # When it is ready, it has printed the line that points tierq at it, and a Redis answers
        log = tmp_path / "local_redis.log"
        eventually(
            log.read_text,
            until=lambda text: f"export TIERQ_REDIS_URL={url}\n" in text,
            what="the export line",
            timeout=30,
        )
        assert reachable(url)

        # Then SIGTERM stops it: exit 0, and nothing answers there any more
        process.send_signal(signal.SIGTERM)
        assert process.wait(STOP_GRACE_SECONDS) == ExitCode.OK, log.read_text()
        assert not reachable(url)


def test_local_redis_leaves_a_redis_that_answers_alone(redis_url: str, tmp_path: Path) -> None:
    env = {**clean_environment(), "TIERQ_REDIS_URL": redis_url}

    with local_redis(env, tmp_path) as process:
        assert process.wait(30) == ExitCode.OK

    assert "a Redis already answers at" in (tmp_path / "local_redis.log").read_text()


@pytest.mark.parametrize(
    "url", ["redis://:secret@127.0.0.1:{port}/0", "rediss://127.0.0.1:{port}/0"]
)
def test_local_redis_refuses_a_url_it_cannot_serve_without_showing_its_password(
    url: str, tmp_path: Path
) -> None:
    env = {**clean_environment(), "TIERQ_REDIS_URL": url.format(port=free_port())}

    with local_redis(env, tmp_path) as process:
        assert process.wait(30) == ExitCode.INVALID

    output = (tmp_path / "local_redis.log").read_text()
    assert "error: no Redis answers at" in output
    assert "secret" not in output
