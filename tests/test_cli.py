"""The `tierq` command, run as a user runs it: a separate process, output and exit status."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from typing import get_args

import pytest

from tests.support import run_tierq
from tierq.core.contract import ReasoningEffort
from tierq.core.exit_codes import ExitCode
from tierq.devkit.processes import ManagedProcess, free_port


def imported_modules(env: dict[str, str], *args: str) -> tuple[int, set[str]]:
    """Run `tierq ARGS` with `-X importtime`: its exit status, and every module it imported."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tierq", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (line for line in done.stderr.splitlines() if line.startswith("import time:"))
    return done.returncode, {line.rsplit("|", 1)[-1].strip() for line in lines}


def loaded(modules: set[str], package: str) -> bool:
    return any(name == package or name.startswith(f"{package}.") for name in modules)


def test_the_exit_codes_are_the_documented_ones() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "JOB_FAILED": 1,
        "INVALID": 2,
        "NOT_FOUND": 3,
        "TIMED_OUT": 4,
        "REDIS_UNREACHABLE": 5,
        "INTERRUPTED": 130,
    }


def test_help_lists_every_command_with_its_summary(worker_env: dict[str, str]) -> None:
    done = run_tierq(worker_env, "--help")

    assert done.returncode == 0, done.stderr
    commands = done.stdout.split("Commands:\n", 1)[1].splitlines()
    assert [line.split()[0] for line in commands] == [
        "batch", "cancel", "dead", "demo", "gateway", "keys", "limits", "result", "retry",
        "simulator", "stats", "status", "submit", "usage", "worker",
    ]  # fmt: skip
    assert "  status     Show a job's status, attempts and tokens." in commands


def test_version_names_the_installed_package(worker_env: dict[str, str]) -> None:
    done = run_tierq(worker_env, "--version")

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"tierq, version {version('tierq')}"


def test_job_commands_load_neither_openai_the_gateway_nor_the_worker(
    worker_env: dict[str, str],
) -> None:
    # Given: the import check sees these packages when a command does load them.
    _, worker_modules = imported_modules(worker_env, "worker", "--help")
    assert loaded(worker_modules, "openai")
    assert loaded(worker_modules, "tierq.worker")

    # When: a job command runs to its end (an unknown job).
    code, modules = imported_modules(worker_env, "status", "nope")

    # Then: it needed only the producer side and the shared core.
    assert code == ExitCode.NOT_FOUND
    assert loaded(modules, "tierq.producers.client")
    for package in ("openai", "tierq.worker", "tierq.producers.gateway"):
        assert not loaded(modules, package), package


def test_submit_with_wait_prints_the_result_as_json(
    worker_env: dict[str, str], workers: dict[str, ManagedProcess]
) -> None:
    done = run_tierq(
        worker_env,
        "submit",
        "--model", "gpt-4o-mini",
        "--system", "Be brief.",
        "--user", "Name a colour.",
        "--seed", "5",
        "--max-tokens", "20",
        "--wait", "--json",
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded"
    assert result["tier"] == "fast"
    assert result["usage"]["total_tokens"] > 0


def test_submit_then_status_then_result(
    worker_env: dict[str, str], workers: dict[str, ManagedProcess]
) -> None:
    submitted = run_tierq(worker_env, "submit", "--model", "gpt-4o", "--user", "Hello there")
    assert submitted.returncode == 0, submitted.stderr
    job_id = submitted.stdout.strip()

    answer = run_tierq(worker_env, "result", job_id, "--wait", "--timeout", "30")
    status = run_tierq(worker_env, "status", job_id)

    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip()
    assert status.returncode == 0
    assert f"{job_id}  succeeded  tier=standard  model=gpt-4o" in status.stdout


def test_messages_can_come_as_json_on_stdin(
    worker_env: dict[str, str], workers: dict[str, ManagedProcess]
) -> None:
    messages = [
        {"role": "developer", "content": "Answer in JSON."},
        {"role": "user", "content": "A colour?"},
    ]

    done = run_tierq(
        worker_env,
        "submit", "--model", "o4-mini", "--messages", "-", "--reasoning-effort", "low",
        "--wait", "--json",
        stdin=json.dumps(messages),
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["usage"]["completion_tokens_details"]["reasoning_tokens"] > 0


def test_an_invalid_submission_exits_2_naming_the_field(worker_env: dict[str, str]) -> None:
    done = run_tierq(
        worker_env, "submit", "--model", "gpt-4o", "--user", "hi", "--temperature", "3"
    )

    assert done.returncode == 2
    assert "temperature" in done.stderr


def test_a_failed_job_exits_1_and_shows_the_apis_error(
    worker_env: dict[str, str], workers: dict[str, ManagedProcess]
) -> None:
    done = run_tierq(
        worker_env, "submit", "--model", "gpt-4o", "--user", "[sim fail=401]", "--wait"
    )

    assert done.returncode == 1
    assert "failed" in done.stdout
    assert "authentication_error 401" in done.stdout


def test_reasoning_effort_offers_the_contracts_levels(worker_env: dict[str, str]) -> None:
    levels = get_args(ReasoningEffort)

    shown = run_tierq(worker_env, "submit", "--help")
    refused = run_tierq(worker_env, "submit", "--model", "o3", "--reasoning-effort", "huge")

    assert f"--reasoning-effort [{'|'.join(levels)}]" in shown.stdout
    assert refused.returncode == 2
    assert "'huge' is not one of" in refused.stderr


def test_a_wrong_setting_exits_2_naming_the_variable(worker_env: dict[str, str]) -> None:
    done = run_tierq({**worker_env, "TIERQ_LOG_LEVEL": "LOUD"}, "status", "some-job")

    assert done.returncode == 2
    assert done.stderr.startswith("error: invalid settings:")
    assert "TIERQ_LOG_LEVEL" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_job_exits_3(worker_env: dict[str, str]) -> None:
    assert run_tierq(worker_env, "status", "nope").returncode == 3


def test_an_unreachable_redis_exits_5_with_a_message(worker_env: dict[str, str]) -> None:
    env = {**worker_env, "TIERQ_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}

    done = run_tierq(env, "status", "some-job")

    assert done.returncode == 5
    assert "cannot reach Redis" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_missing_messages_file_exits_2_naming_it(worker_env: dict[str, str]) -> None:
    done = run_tierq(worker_env, "submit", "--model", "gpt-4o", "--messages", "/no/such/file.json")

    assert done.returncode == 2
    assert "/no/such/file.json: No such file or directory" in done.stderr


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("TIERQ_RESULT_TTL_SECONDS", "soon"),
        ("TIERQ_RETRY__MAX_ATTEMPTS", "0"),
        ("TIERQ_TIERS", '{"fast": {"models": []}}'),
    ],
)
def test_a_wrong_setting_stops_the_worker_naming_the_variable(
    worker_env: dict[str, str], variable: str, value: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tierq.worker", "--tier", "fast"],
        env={**worker_env, variable: value},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode != 0
    assert variable in done.stderr


def test_an_unknown_tier_is_refused_with_the_list_of_tiers(worker_env: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tierq.worker", "--tier", "turbo"],
        env=worker_env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 2
    assert "fast, standard, reasoning" in done.stderr


def test_a_request_body_that_is_not_json_exits_2_naming_it(
    worker_env: dict[str, str],
) -> None:
    done = run_tierq(worker_env, "submit", "--request", "-", stdin='{"model": "gpt-4o", messages')

    assert done.returncode == 2
    assert "-: not valid JSON" in done.stderr
