"""The README's demo command runs end to end on the simulator and prints its table."""

from __future__ import annotations

import pytest

from tests.support import run_tierq, settings_for

pytestmark = pytest.mark.slow


def test_the_demo_runs_every_tier_and_prints_a_table_of_results(
    worker_env: dict[str, str],
) -> None:
    # No key: the demo starts its own simulator. Its Redis is the tests' one (a fresh queue
    # and key prefix keep its workers off the session's queues).
    env = {
        key: value
        for key, value in worker_env.items()
        if key not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")
    }
    env.update(TIERQ_QUEUE_PREFIX="tierq-demo.", TIERQ_KEY_PREFIX="tierq-demo:", COLUMNS="200")
    assert settings_for(env).openai_api_key is None

    done = run_tierq(env, "demo", timeout=240)

    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout
    assert "tierq demo" in table
    for tier in ("fast", "standard", "reasoning"):
        assert tier in table
    assert "simulator" in table
    assert table.count("succeeded") >= 7
    assert "429 then retried" in table
    assert "failed" in table
    assert "API refuses: bad_request:" in table
    assert "refused" in table
