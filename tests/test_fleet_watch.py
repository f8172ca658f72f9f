"""What operators watch: `tierq stats`, a worker's heartbeat, /healthz and /metrics."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.support import Fleet, env_of, eventually, job, nonce, run_tierq, user
from tierq.core.exit_codes import ExitCode
from tierq.devkit.local_redis import EmbeddedRedis
from tierq.devkit.processes import free_port, start_worker
from tierq.producers.client import TierqClient


def stats_json(env: dict[str, str]) -> dict[str, object]:
    done = run_tierq(env, "stats", "--json", timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def http_get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as error:
        return int(error.code), bytes(error.read())


def test_stats_json_matches_the_queues_and_the_workers(
    start_fleet: Fleet, worker_env: dict[str, str]
) -> None:
    # A standard-tier worker is running; jobs for the reasoning tier wait, as no worker takes
    # them: stats must show both as they are.
    _, settings = start_fleet("standard")
    env = {**worker_env, **env_of(settings)}
    with TierqClient(settings) as client:
        waiting = client.submit_many([job(model="o3")] * 3)
        done = client.wait(client.submit(model="gpt-4o", messages=user(nonce())), 30)
    assert done.status.value == "succeeded"
    time.sleep(1.0)

    tiers = {t["tier"]: t for t in stats_json(env)["tiers"]}  # type: ignore[attr-defined]

    # (they wait in the tier's backlogs, fair dispatch being on; no worker moves them)
    assert tiers["reasoning"]["waiting"] == len(waiting) == 3
    assert tiers["reasoning"]["backlog"] == 3
    assert tiers["reasoning"]["oldest_job_age_seconds"] >= 1.0
    assert tiers["reasoning"]["workers"] == 0
    assert tiers["standard"]["queue_depth"] == 0
    assert tiers["standard"]["workers"] == 1
    assert tiers["standard"]["succeeded"] == 1
    assert tiers["standard"]["tokens_per_minute"] > 0
    assert tiers["fast"]["queue_depth"] == 0


def test_liveness_fails_once_the_worker_has_lost_its_broker_and_metrics_are_served(
    start_fleet: Fleet, private_redis: EmbeddedRedis
) -> None:
    port = free_port()
    start_fleet(
        "fast",
        TIERQ_REDIS_URL=private_redis.url,
        TIERQ_METRICS_PORT=str(port),
        TIERQ_METRICS_HOST="127.0.0.1",
        TIERQ_LIVENESS_GRACE_SECONDS="3",
    )
    root = f"http://127.0.0.1:{port}"
    # A client that connects and says nothing does not hold up the probe.
    with socket.create_connection(("127.0.0.1", port)):
        assert http_get(f"{root}/healthz")[0] == 200
    status, metrics = http_get(f"{root}/metrics")
    assert status == 200
    assert b'tierq_queue_depth{tier="fast"}' in metrics

    private_redis.stop()
    status, body = eventually(
        lambda: http_get(f"{root}/healthz"),
        until=lambda answer: answer[0] != 200,
        what="/healthz failing once the broker is gone",
        timeout=20,
        interval=0.5,
    )
    assert status == 503
    assert json.loads(body)["status"] == "broker_lost"


def test_a_metrics_port_in_use_stops_the_worker_with_a_clear_error(
    worker_env: dict[str, str], logs_dir: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {**worker_env, "TIERQ_METRICS_PORT": str(port), "TIERQ_METRICS_HOST": "127.0.0.1"}
        worker = start_worker("fast", logs_dir / f"port-taken-{port}.log", env, wait=False)
        assert worker.process is not None
        code = worker.process.wait(timeout=60)
        worker.stop()  # closes its log file
    assert code != 0
    assert "TIERQ_METRICS_PORT" in worker.log_text()
    assert "Traceback" not in worker.log_text()


def test_ctrl_c_leaves_the_live_view_with_exit_130(worker_env: dict[str, str]) -> None:
    # Given `tierq stats` live on a terminal (a pseudo-terminal: rich draws only on one)
    terminal, its_end = pty.openpty()
    watching = subprocess.Popen(
        [sys.executable, "-m", "tierq", "stats", "--interval", "0.5"],
        env={**worker_env, "COLUMNS": "160"}, stdin=its_end, stdout=its_end, stderr=its_end,
    )  # fmt: skip
    os.close(its_end)
    shown = bytearray()

    def screen() -> bytes:
        while select.select([terminal], [], [], 0.05)[0]:
            try:
                shown.extend(os.read(terminal, 65536))
            except OSError:  # the process closed the terminal
                break
        return bytes(shown)

    try:
        eventually(
            screen, until=lambda text: text.count(b"tierq fleet") >= 2,
            what="the live view drawn and redrawn", timeout=30,
        )  # fmt: skip

        # When Ctrl-C is pressed
        watching.send_signal(signal.SIGINT)

        # Then it leaves as every command does on Ctrl-C
        assert watching.wait(timeout=30) == ExitCode.INTERRUPTED
        assert b"Traceback" not in screen()
    finally:
        watching.kill()
        watching.wait(timeout=30)
        os.close(terminal)
