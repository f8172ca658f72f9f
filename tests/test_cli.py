"""The `tierq` command, run as a user runs it: a separate process, output and exit status."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any, get_args

import pytest
import redis

from tests.support import (
    Fleet,
    Simulator,
    env_of,
    eventually,
    nonce,
    run_tierq,
    settings_for,
    user,
)
from tierq.core.contract import JobEnvelope, ReasoningEffort
from tierq.core.exit_codes import ExitCode
from tierq.core.keys import Keys
from tierq.core.settings import Settings
from tierq.devkit.processes import ManagedProcess, free_port
from tierq.producers.client import TierqClient

DOCS = Path(__file__).resolve().parent.parent / "docs" / "cli.md"


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


def without_workers(worker_env: dict[str, str]) -> dict[str, str]:
    """The tests' environment on queues and job records of its own, which no worker serves:
    a job submitted there stays queued."""
    isolation = nonce()
    return {
        **worker_env,
        "TIERQ_QUEUE_PREFIX": f"tierq-{isolation}.",
        "TIERQ_KEY_PREFIX": f"tierq-{isolation}:",
    }


def submitted(env: dict[str, str], *args: str) -> str:
    """`tierq submit ARGS` run in `env`: the new job's id."""
    done = run_tierq(env, "submit", *args)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_the_exit_codes_are_the_documented_ones() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "JOB_FAILED": 1,
        "INVALID": 2,
        "NOT_FOUND": 3,
        "TIMED_OUT": 4,
        "REDIS_UNREACHABLE": 5,
        "NOT_FINISHED": 6,
        "ALREADY_FINISHED": 7,
        "INTERRUPTED": 130,
    }


def test_the_exit_status_table_of_the_docs_lists_every_code() -> None:
    section = DOCS.read_text(encoding="utf-8").split("## Exit status", 1)[1].split("\n## ", 1)[0]

    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)}

    assert documented == {int(code) for code in ExitCode}


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


def test_labels_stay_on_the_record_and_the_apis_metadata_is_sent(
    worker_env: dict[str, str], workers: dict[str, ManagedProcess], simulator: Simulator
) -> None:
    # Given: a request setting the API's metadata, and two labels of tierq's.
    marker = nonce()
    body = {
        "model": "gpt-4o-mini",
        "messages": user(f"Name a colour. {marker}"),
        "store": True,
        "metadata": {"run": "7"},
    }

    # When: it is submitted from the shell.
    done = run_tierq(
        worker_env,
        "submit", "--request", "-", "--label", "team=search", "--label", "run=label-7",
        "--wait", "--json",
        stdin=json.dumps(body),
    )  # fmt: skip

    # Then: the API got the body unchanged; the labels are on the record only.
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["labels"] == {"team": "search", "run": "label-7"}
    [call] = simulator.requests_with(marker)
    assert call["body"] == body


@pytest.mark.parametrize("label", ["no-equals-sign", "=value"])
def test_a_label_that_is_not_key_value_exits_2_naming_it(
    worker_env: dict[str, str], label: str
) -> None:
    done = run_tierq(worker_env, "submit", "--model", "gpt-4o", "--user", "hi", "--label", label)

    assert done.returncode == ExitCode.INVALID
    assert f"--label {label!r} is not KEY=VALUE" in done.stderr


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


@pytest.mark.parametrize(
    "command",
    [
        ["submit", "--model", "gpt-4o", "--user", "hi"],
        ["status", "some-job"],
        ["result", "some-job"],
        ["cancel", "some-job"],
        ["dead"],
        ["retry", "--all-dead"],
        ["limits"],
        ["stats", "--once"],
        ["usage"],
        ["batch", "run", "INPUT", "-o", "OUTPUT"],
        ["worker", "--tier", "fast"],
        ["demo"],
    ],
    ids=lambda command: " ".join(command[:2]),
)
def test_a_wrong_setting_ends_every_command_with_one_error_and_exit_2(
    worker_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    batch_input = tmp_path / "requests.jsonl"
    batch_input.write_text("")
    files = {"INPUT": str(batch_input), "OUTPUT": str(tmp_path / "results.jsonl")}

    done = run_tierq(
        {**worker_env, "TIERQ_LOG_LEVEL": "LOUD"}, *(files.get(arg, arg) for arg in command)
    )

    assert done.returncode == ExitCode.INVALID, done.stderr
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


# --- finished or not: result and cancel --------------------------------------------------------


def test_the_result_of_an_unfinished_job_exits_6_with_nothing_on_stdout(
    worker_env: dict[str, str],
) -> None:
    env = without_workers(worker_env)
    job_id = submitted(env, "--model", "gpt-4o-mini", "--user", "hi")

    waiting = run_tierq(env, "result", job_id)
    waiting_json = run_tierq(env, "result", job_id, "--json")

    assert waiting.returncode == waiting_json.returncode == ExitCode.NOT_FINISHED == 6
    assert waiting.stdout == waiting_json.stdout == ""
    assert f"job {job_id} is queued: not finished yet" in waiting.stderr
    # (once the job is final, the same command does print to stdout)
    assert run_tierq(env, "cancel", job_id).returncode == 0
    final = run_tierq(env, "result", job_id)
    assert final.returncode == ExitCode.JOB_FAILED
    assert f"{job_id}  cancelled" in final.stdout


def test_cancelling_a_queued_job_exits_0_and_again_says_it_was_already_cancelled(
    worker_env: dict[str, str],
) -> None:
    env = without_workers(worker_env)
    job_id = submitted(env, "--model", "gpt-4o-mini", "--user", "hi")

    first = run_tierq(env, "cancel", job_id)
    again = run_tierq(env, "cancel", job_id)

    assert first.returncode == 0, first.stderr
    assert f"{job_id}  cancelled" in first.stdout
    assert first.stderr == ""
    assert again.returncode == 0, again.stderr
    assert f"{job_id}  cancelled" in again.stdout
    assert again.stderr.strip() == f"nothing to cancel: job {job_id} was already cancelled"


def test_cancelling_a_finished_job_says_nothing_to_cancel_and_exits_7(
    worker_env: dict[str, str], workers: dict[str, ManagedProcess]
) -> None:
    job_id = submitted(worker_env, "--model", "gpt-4o-mini", "--user", "hi")
    assert run_tierq(worker_env, "result", job_id, "--wait").returncode == 0

    done = run_tierq(worker_env, "cancel", job_id)

    assert done.returncode == ExitCode.ALREADY_FINISHED == 7
    assert done.stdout == ""
    assert done.stderr.strip() == f"nothing to cancel: job {job_id} already succeeded"
    assert run_tierq(worker_env, "result", job_id).returncode == 0  # the answer stands


# --- waiting with no worker --------------------------------------------------------------------


def test_submit_wait_warns_at_once_when_no_live_worker_serves_the_tier(
    start_fleet: Fleet, worker_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a worker for the standard tier only, on queues of its own
    _, settings = start_fleet("standard")
    env = {**worker_env, **env_of(settings)}
    # (a tier with a live worker: no warning, the answer comes)
    served = run_tierq(env, "submit", "--model", "gpt-4o", "--user", nonce(), "--wait")
    assert served.returncode == 0, served.stderr
    assert "warning" not in served.stderr

    # When a job for the fast tier, which no worker serves, is submitted with --wait
    stderr = tmp_path / "stderr.txt"
    with stderr.open("w") as err:
        waiting = subprocess.Popen(
            [sys.executable, "-m", "tierq", "submit", "--model", "gpt-4o-mini", "--user", "hi",
             "--wait"],
            env=env, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
        try:
            # Then it says so at once, and keeps waiting
            warning = eventually(
                stderr.read_text, until=lambda text: "warning" in text,
                what="the warning on stderr", timeout=20,
            )  # fmt: skip
            assert waiting.poll() is None
        finally:
            waiting.send_signal(signal.SIGINT)
            waiting.communicate(timeout=30)
    assert warning.splitlines()[0] == (
        "warning: no live worker serves tier fast; the job waits on queue "
        f"{settings.queue_for('fast')} until one starts"
    )
    # (and Ctrl-C leaves it as every command does, the job left on its queue)
    assert waiting.returncode == ExitCode.INTERRUPTED
    assert "carries on" in stderr.read_text()


# --- --json-schema -----------------------------------------------------------------------------

PERSON = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


def kept_request(settings: Settings, job_id: str) -> dict[str, Any]:
    """The request a job's record keeps (its queue message), as the workers will read it."""
    with redis.Redis.from_url(settings.redis_url.get_secret_value()) as client:
        kept = client.hget(Keys(settings.key_prefix).job(job_id), "message")
    assert kept is not None
    request = JobEnvelope.model_validate_json(kept).request
    return request.api_fields()


@pytest.mark.parametrize(
    ("file_name", "content", "expected"),
    [
        (
            "order form.v2.json",
            PERSON,
            {"type": "json_schema", "json_schema": {"name": "order_form_v2", "schema": PERSON}},
        ),
        (
            "inner.json",
            {"name": "person", "strict": True, "schema": PERSON},
            {
                "type": "json_schema",
                "json_schema": {"name": "person", "strict": True, "schema": PERSON},
            },
        ),
        (
            "whole.json",
            {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
            {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}},
        ),
    ],
    ids=["a bare JSON Schema", "the json_schema part", "a whole response_format"],
)
def test_json_schema_takes_each_shape_a_schema_file_may_have(
    worker_env: dict[str, str],
    tmp_path: Path,
    file_name: str,
    content: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    env = without_workers(worker_env)
    schema = tmp_path / file_name
    schema.write_text(json.dumps(content))

    job_id = submitted(env, "--model", "gpt-4o-mini", "--user", "Who?", "--json-schema", schema)

    assert kept_request(settings_for(env), job_id)["response_format"] == expected


@pytest.mark.parametrize(
    ("content", "found"),
    [
        ([PERSON], "a list"),
        ({"type": "json_object"}, "an object that is none of these"),
        ({"title": "no schema here"}, "an object that is none of these"),
    ],
    ids=["a list", "another response_format", "an object"],
)
def test_json_schema_refuses_any_other_shape_in_one_line(
    worker_env: dict[str, str], tmp_path: Path, content: Any, found: str
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(content))

    done = run_tierq(
        worker_env, "submit", "--model", "gpt-4o-mini", "--user", "hi", "--json-schema", schema
    )

    assert done.returncode == ExitCode.INVALID
    assert done.stderr.startswith(f"error: --json-schema {schema}: expected a JSON Schema")
    assert done.stderr.strip().endswith(f"the file holds {found}")
    assert len(done.stderr.strip().splitlines()) == 1


# --- status ------------------------------------------------------------------------------------


def test_status_shows_the_reasoning_share_of_completion_tokens(
    client: TierqClient, worker_env: dict[str, str]
) -> None:
    job_id = client.submit(model="o4-mini", messages=user(nonce()), reasoning_effort="low")
    usage = client.wait(job_id, timeout=30).usage
    assert usage is not None
    assert usage.reasoning_tokens > 0

    done = run_tierq(worker_env, "status", job_id)

    share = usage.reasoning_tokens / usage.completion_tokens
    assert done.returncode == 0, done.stderr
    assert (
        f"tokens={usage.prompt_tokens}+{usage.completion_tokens}  "
        f"reasoning={usage.reasoning_tokens} ({share:.0%} of completion)"
    ) in done.stdout
