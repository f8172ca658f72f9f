"""The deployment files agree with the code: a worker per tier, persistent Redis, grace periods."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tierq.core.settings import default_tiers
from tierq.devkit.processes import settings_for

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


def test_every_default_tier_has_a_worker_service(compose: dict[str, Any]) -> None:
    services = compose["services"]

    for tier in default_tiers():
        assert services[f"worker-{tier}"]["command"] == ["worker", "--tier", tier]


def test_redis_keeps_accepted_jobs_across_a_restart_and_wants_a_password(
    compose: dict[str, Any],
) -> None:
    command = compose["services"]["redis"]["command"]

    assert command[command.index("--appendonly") + 1] == "yes"
    assert "--requirepass" in command
    assert "redis-data:/data" in compose["services"]["redis"]["volumes"]


def test_workers_finish_their_grace_period_before_docker_stops_waiting(
    compose: dict[str, Any],
) -> None:
    worker = compose["services"]["worker-fast"]
    grace = float(worker["environment"]["TIERQ_SHUTDOWN_GRACE_SECONDS"])
    docker_grace = float(worker["stop_grace_period"].rstrip("s"))

    assert grace + 5 <= docker_grace


def test_the_workers_environment_is_valid_settings(compose: dict[str, Any]) -> None:
    environment = {
        name: str(value)
        .replace("${REDIS_PASSWORD:-tierq-local}", "pw")
        .replace("${OPENAI_API_KEY:-sk-simulator}", "sk-x")
        .replace("${OPENAI_BASE_URL-http://simulator:8711/v1}", "http://simulator:8711/v1")
        for name, value in compose["services"]["worker-fast"]["environment"].items()
    }

    settings = settings_for(environment)

    assert settings.redis_url.get_secret_value() == "redis://:pw@redis:6379/0"


def test_the_image_runs_as_a_user_and_holds_no_secret() -> None:
    dockerfile = (ROOT / "ops" / "Dockerfile").read_text()

    assert "\nUSER tierq\n" in dockerfile
    assert "OPENAI_API_KEY" not in dockerfile
    assert "requirepass" not in dockerfile
