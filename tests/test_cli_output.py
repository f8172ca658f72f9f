"""What the commands print, the same way everywhere: one JSON document per `--json`, and
tables that keep every name whole, even through a pipe (docs/cli.md, "Output")."""

from __future__ import annotations

import json

import pytest

from tests.support import nonce, run_tierq, user
from tierq.core.results import JobStatus
from tierq.producers.client import TierqClient

# Model names that an 80-column table used to cut (`gpt-4o-m…`).
LONG_NAMES = ("gpt-4o-mini", "o4-mini")


@pytest.fixture
def finished_job(client: TierqClient) -> str:
    """A job of the session's workers that has succeeded (and so is in the usage ledger)."""
    job_id = client.submit(model="gpt-4o-mini", messages=user(nonce()))
    assert client.wait(job_id, timeout=30).status is JobStatus.SUCCEEDED
    return job_id


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        (["status", "JOB"], dict),
        (["result", "JOB"], dict),
        (["stats"], dict),
        (["usage"], dict),
        (["dead"], list),
        (["limits"], list),
    ],
    ids=lambda value: value[0] if isinstance(value, list) else value.__name__,
)
def test_every_json_option_prints_one_json_document(
    worker_env: dict[str, str], finished_job: str, command: list[str], kind: type
) -> None:
    args = [finished_job if arg == "JOB" else arg for arg in command]

    done = run_tierq(worker_env, *args, "--json")

    assert done.returncode == 0, done.stderr
    assert isinstance(json.loads(done.stdout), kind)  # the whole output: one document


def test_submit_json_prints_one_object(worker_env: dict[str, str]) -> None:
    done = run_tierq(worker_env, "submit", "--model", "gpt-4o", "--user", "hi", "--json")

    assert done.returncode == 0, done.stderr
    assert set(json.loads(done.stdout)) == {"job_id"}


@pytest.mark.parametrize("command", [["limits"], ["usage", "--since", "1h"]], ids=" ".join)
def test_a_table_through_a_pipe_keeps_every_model_name_whole(
    worker_env: dict[str, str], finished_job: str, command: list[str]
) -> None:
    # run_tierq's stdout is a pipe, not a terminal: rich's fallback would be 80 columns
    env = {key: value for key, value in worker_env.items() if key != "COLUMNS"}

    done = run_tierq(env, *command)

    assert done.returncode == 0, done.stderr
    shown = done.stdout
    assert "…" not in shown
    for name in LONG_NAMES if command == ["limits"] else LONG_NAMES[:1]:
        assert f" {name} " in shown, shown
