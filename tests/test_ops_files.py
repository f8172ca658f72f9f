"""The deployment files agree with the code: a worker per tier, persistent Redis, grace periods."""

from __future__ import annotations

import re
import subprocess
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
        .replace("${REDIS_PASSWORD:?REDIS_PASSWORD unset, run ops/compose-env.sh}", "pw")
        .replace("${OPENAI_API_KEY:-sk-simulator}", "sk-x")
        .replace("${OPENAI_BASE_URL-http://simulator:8711/v1}", "http://simulator:8711/v1")
        for name, value in compose["services"]["worker-fast"]["environment"].items()
    }

    settings = settings_for(environment)

    assert settings.redis_url.get_secret_value() == "redis://:pw@redis:6379/0"


def test_compose_is_closed_by_default(compose: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    services = compose["services"]

    # No password falls back to a default: compose refuses to start without one.
    assert "REDIS_PASSWORD:-" not in text
    assert "tierq-local" not in text
    assert text.count("${REDIS_PASSWORD:?") >= 4
    # Every published port listens on loopback unless the operator opts out.
    published = [port for service in services.values() for port in service.get("ports", [])]
    assert published
    assert all(str(port).startswith("${PUBLISH_ADDRESS:-127.0.0.1}:") for port in published)
    # Flower's control API wants a login.
    assert any(
        arg.startswith("--basic-auth=${FLOWER_BASIC_AUTH:?")
        for arg in services["flower"]["command"]
    )


def test_compose_env_writes_random_secrets_once_and_never_prints_them(tmp_path: Path) -> None:
    (tmp_path / "ops").mkdir()
    script = tmp_path / "ops" / "compose-env.sh"
    script.write_bytes((ROOT / "ops" / "compose-env.sh").read_bytes())
    script.chmod(0o755)

    first = subprocess.run([str(script)], capture_output=True, text=True, check=True)
    written = (tmp_path / ".env").read_text()
    again = subprocess.run([str(script)], capture_output=True, text=True, check=True)

    values = dict(line.split("=", 1) for line in written.splitlines())
    assert set(values) == {"REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "GATEWAY_METRICS_KEY"}
    assert len(values["REDIS_PASSWORD"]) >= 24
    assert len(values["GATEWAY_METRICS_KEY"]) >= 24
    assert values["FLOWER_BASIC_AUTH"].startswith("admin:")
    assert (tmp_path / ".env").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / ".env").read_text() == written  # kept on a second run
    assert first.stdout.count("written") == 3
    assert again.stdout.count("kept") == 3
    for value in values.values():
        assert value not in first.stdout + first.stderr


def test_the_image_runs_as_a_user_and_holds_no_secret() -> None:
    dockerfile = (ROOT / "ops" / "Dockerfile").read_text()

    assert "\nUSER tierq\n" in dockerfile
    assert "OPENAI_API_KEY" not in dockerfile
    assert "requirepass" not in dockerfile


def test_prometheus_scrapes_the_gateway_with_its_metrics_key(compose: dict[str, Any]) -> None:
    # The gateway serves /metrics only to the key compose refuses to start without...
    gateway_env = compose["services"]["gateway"]["environment"]
    assert gateway_env["TIERQ_GATEWAY__METRICS_KEY"].startswith("${GATEWAY_METRICS_KEY:?")
    # ...which Prometheus gets as a secret from the same variable, readable by its user only
    assert compose["secrets"]["gateway-metrics-key"] == {"environment": "GATEWAY_METRICS_KEY"}
    (mounted,) = compose["services"]["prometheus"]["secrets"]
    assert mounted["source"] == "gateway-metrics-key"
    assert (mounted["uid"], mounted["mode"]) == ("65534", 0o400)  # the image's user, nobody
    # ...and sends as its bearer token on every gateway scrape.
    prometheus = yaml.safe_load((ROOT / "ops" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prometheus["scrape_configs"]}
    assert jobs["tierq-gateway"]["authorization"] == {
        "type": "Bearer",
        "credentials_file": f"/run/secrets/{mounted['target']}",
    }
    assert jobs["tierq-gateway"]["static_configs"] == [{"targets": ["gateway:8700"]}]


def test_variables_only_compose_reads_are_not_named_like_settings() -> None:
    # TIERQ_* names are tierq's settings (get_settings refuses unknown ones); compose's own
    # variables (${NAME...}) stay out of that namespace.
    for name in ("docker-compose.yml", "docker-compose.sentinel.yml"):
        text = (ROOT / name).read_text()
        interpolated = re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)
        assert interpolated, name
        assert not [v for v in interpolated if v.startswith("TIERQ_")], name
