"""`tierq batch run`: a batch input file through the real queues and workers, and resumed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support import Simulator, eventually, job, nonce, run_tierq
from tierq.devkit.processes import ManagedProcess


def batch_line(custom_id: str, content: str, **params: Any) -> str:
    body = job(content, **params)
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body}
    )


def run_cli(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    """`tierq batch run ARGS`, without the progress bar."""
    return run_tierq(env, "batch", "run", *args, "--no-progress", timeout=90)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_batch_file_runs_and_its_answers_come_back_in_the_apis_format(
    tmp_path: Path, worker_env: dict[str, str], workers: dict[str, ManagedProcess]
) -> None:
    marker = nonce()
    source = tmp_path / "requests.jsonl"
    lines = [batch_line(f"req-{i}", f"{marker} {i}") for i in range(5)]
    lines.insert(2, batch_line("bad", marker, temperature=5))
    source.write_text("\n".join(lines) + "\n")
    output = tmp_path / "results.jsonl"

    done = run_cli(worker_env, source, "-o", output)

    assert done.returncode == 1, done.stderr  # one request failed: exit 1, the rest written
    answers = {line["custom_id"]: line for line in read_jsonl(output)}
    assert set(answers) == {f"req-{i}" for i in range(5)}
    for line in answers.values():
        assert line["id"].startswith("batch_req_")
        assert line["error"] is None
        assert line["response"]["status_code"] == 200
        assert line["response"]["body"]["object"] == "chat.completion"
        assert line["response"]["body"]["usage"]["total_tokens"] > 0
    (error,) = read_jsonl(tmp_path / "results.errors.jsonl")
    assert error["custom_id"] == "bad"
    assert error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["param"] == "temperature"


def test_a_malformed_file_is_refused_whole_and_nothing_runs(
    tmp_path: Path,
    worker_env: dict[str, str],
    workers: dict[str, ManagedProcess],
    simulator: Simulator,
) -> None:
    marker = nonce()
    source = tmp_path / "requests.jsonl"
    source.write_text(
        "\n".join([batch_line("a", marker), "{not json", batch_line("a", marker)]) + "\n"
    )
    output = tmp_path / "results.jsonl"

    refused = run_cli(worker_env, source, "-o", output)

    assert refused.returncode == 2
    assert "the input file is refused (2 problems):" in refused.stderr
    assert "line 2" in refused.stderr
    assert "line 3" in refused.stderr  # the repeated custom_id
    assert not output.exists()

    # The same line, in a file without the faults, run next on the same queue, reaches the
    # API: had the refused run queued anything, the workers would have taken it first
    after = nonce()
    control = tmp_path / "control.jsonl"
    control.write_text(batch_line("a", after) + "\n")
    assert run_cli(worker_env, control, "-o", tmp_path / "control-results.jsonl").returncode == 0
    assert len(simulator.requests_with(after)) == 1
    assert simulator.requests_with(marker) == []


def test_a_file_refused_for_one_problem_says_one_problem(
    tmp_path: Path, worker_env: dict[str, str]
) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text("{not json\n")

    refused = run_cli(worker_env, source, "-o", tmp_path / "results.jsonl")

    assert refused.returncode == 2
    assert "the input file is refused (1 problem):" in refused.stderr


def test_an_interrupted_run_resumes_without_paying_twice(
    tmp_path: Path,
    worker_env: dict[str, str],
    workers: dict[str, ManagedProcess],
    simulator: Simulator,
) -> None:
    marker = nonce()
    source = tmp_path / "requests.jsonl"
    source.write_text(
        "\n".join(batch_line(f"r{i}", f"{marker} {i} [sim latency_ms=1500]") for i in range(6))
        + "\n"
    )
    output = tmp_path / "results.jsonl"
    first = subprocess.Popen(
        [sys.executable, "-m", "tierq", "batch", "run", str(source), "-o", str(output),
         "--no-progress"],
        env=worker_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    eventually(
        lambda: simulator.requests_with(marker),
        what="the first run calling the API",
        timeout=30,
        interval=0.1,
    )
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=30)
    assert first.returncode == 130, stderr
    assert not output.exists()

    resumed = run_cli(worker_env, source, "-o", output)

    assert resumed.returncode == 0, resumed.stderr
    assert sorted(line["custom_id"] for line in read_jsonl(output)) == [f"r{i}" for i in range(6)]
    assert len(simulator.requests_with(marker)) == 6  # one call per request, across both runs
