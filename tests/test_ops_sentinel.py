"""The Sentinel variants agree with tierq's settings and with each other: compose's override
(docker-compose.sentinel.yml over docker-compose.yml) and the Kubernetes overlay
(ops/k8s/sentinel), checked offline against their schemas, and the Sentinel configuration the
compose file writes is one a real Redis Sentinel starts with and uses to find the primary.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml

from tests.support import clean_environment, settings_for
from tests.test_ops_manifests import KUBERNETES_VERSION, check_crds, manifests, of_kind
from tierq.devkit.processes import ManagedProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
SENTINEL_OVERLAY = ROOT / "ops" / "k8s" / "sentinel"
TIERQ_SERVICES = ("gateway", "worker-fast", "worker-standard", "worker-reasoning")
PASSWORD = "pw-for-tests"


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text())
    return loaded


def merged(base: Any, override: Any) -> Any:
    """Compose's merge of an override file, for what ours uses: mappings merge key by key;
    anything else (a command, an image) is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {
            key: merged(base[key], value) if key in base else value
            for key, value in {**base, **override}.items()
        }
    return override


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    combined: dict[str, Any] = merged(
        load("docker-compose.yml"), load("docker-compose.sentinel.yml")
    )
    return combined


def interpolated(value: str) -> str:
    """A compose value as compose would pass it with .env written by ops/compose-env.sh."""
    value = re.sub(r"\$\{REDIS_PASSWORD:\?[^}]*\}", PASSWORD, value)
    value = re.sub(r"\$\{OPENAI_API_KEY:-[^}]*\}", "sk-x", value)
    value = re.sub(r"\$\{OPENAI_BASE_URL-([^}]*)\}", r"\1", value)
    value = re.sub(r"\$\{GATEWAY_METRICS_KEY:\?[^}]*\}", "metrics-key", value)
    return value.replace("$$", "$")


def compose_schema() -> dict[str, Any]:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json"
    )
    loaded: dict[str, Any] = json.loads(schema_file.read_text())
    return loaded


def sentinel_conf(service: dict[str, Any]) -> list[str]:
    """The lines of the sentinel.conf a Sentinel service's command writes at start."""
    script = service["command"][-1]
    body = script.split("<<EOF\n", 1)[1].split("\nEOF\n", 1)[0]
    return body.splitlines()


# --- compose -----------------------------------------------------------------------------------


def test_the_override_and_the_stack_it_makes_follow_the_compose_specification(
    stack: dict[str, Any],
) -> None:
    schema = compose_schema()
    jsonschema.validate(load("docker-compose.sentinel.yml"), schema)
    jsonschema.validate(stack, schema, cls=jsonschema.Draft202012Validator)


def test_every_tierq_process_finds_the_primary_through_the_sentinels(
    stack: dict[str, Any],
) -> None:
    services = stack["services"]
    sentinels = sorted(name for name in services if name.startswith("sentinel-"))
    assert len(sentinels) == 3

    for name in TIERQ_SERVICES:
        environment = {k: interpolated(str(v)) for k, v in services[name]["environment"].items()}
        settings = settings_for({**clean_environment(), **environment})
        assert sorted(settings.redis_sentinels) == [f"{s}:26379" for s in sentinels], name
        assert settings.durability == "replica", name
        assert settings.durability_replicas == 1, name
        # The URL still gives the password and database the primary wants
        assert settings.redis_url.get_secret_value() == f"redis://:{PASSWORD}@redis:6379/0"
        assert set(services[name]["depends_on"]) >= {"redis", *sentinels}, name


def test_the_sentinels_watch_the_primary_tierq_looks_for_with_a_quorum_of_two(
    stack: dict[str, Any],
) -> None:
    master = settings_for(clean_environment()).redis_sentinel_master
    services = stack["services"]
    for name in (n for n in services if n.startswith("sentinel-")):
        lines = sentinel_conf(services[name])
        directives = [line.split()[:2] for line in lines]
        # Hostnames are accepted only once resolve-hostnames is on: it comes first.
        assert directives.index(["sentinel", "resolve-hostnames"]) < directives.index(
            ["sentinel", "monitor"]
        )
        assert f"sentinel monitor {master} redis 6379 2" in lines
        assert f"sentinel auth-pass {master} $$REDIS_PASSWORD" in lines
        assert "sentinel announce-hostnames yes" in lines
        assert "sentinel announce-ip $$SENTINEL_HOSTNAME" in lines
        assert services[name]["environment"]["SENTINEL_HOSTNAME"] == name
        assert "ports" not in services[name]  # reached inside the network only


def test_the_replica_follows_the_primary_and_both_keep_an_append_only_file(
    stack: dict[str, Any],
) -> None:
    services = stack["services"]
    replica = " ".join(services["redis-replica"]["command"])
    primary = " ".join(services["redis"]["command"])

    assert "--replicaof redis 6379" in replica
    for command in (replica, primary):
        assert "--appendonly yes" in command
        assert "--requirepass ${REDIS_PASSWORD:?" in command
        # A replica, and a primary demoted after a failover, log in to the new primary.
        assert "--masterauth ${REDIS_PASSWORD:?" in command
    assert "--replica-announce-ip redis-replica" in replica
    assert "--replica-announce-ip redis" in primary
    assert "redis-replica-data:/data" in services["redis-replica"]["volumes"]


def test_the_sentinel_stack_stays_closed_by_default(stack: dict[str, Any]) -> None:
    text = (ROOT / "docker-compose.sentinel.yml").read_text()
    assert "REDIS_PASSWORD:-" not in text
    published = [p for service in stack["services"].values() for p in service.get("ports", [])]
    assert published
    assert all(str(port).startswith("${PUBLISH_ADDRESS:-127.0.0.1}:") for port in published)
    flower = stack["services"]["flower"]
    assert '--basic-auth="$$FLOWER_BASIC_AUTH"' in flower["command"][-1]
    assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")


def test_flower_follows_the_primary_through_every_sentinel(stack: dict[str, Any]) -> None:
    flower = stack["services"]["flower"]
    urls = interpolated(flower["environment"]["CELERY_BROKER_URL"]).split(";")
    assert urls == [f"sentinel://:{PASSWORD}@sentinel-{i}:26379/0" for i in (1, 2, 3)]
    assert '{"master_name": "tierq"}' in flower["command"][-1]


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[redis.Redis]:
    """A password-protected Redis standing in for the compose service `redis`."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = free_port()
    process = ManagedProcess(
        "primary",
        [binary, "--port", str(port), "--requirepass", PASSWORD, "--save", "",
         "--dir", str(tmp_path)],
        tmp_path / "primary.log",
        clean_environment(),
    ).start()  # fmt: skip
    client = redis.Redis(port=port, password=PASSWORD)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "the stand-in primary did not start"
            time.sleep(0.1)
    yield client
    client.close()
    process.stop()


def test_the_generated_sentinel_config_starts_a_sentinel_that_finds_the_primary(
    stack: dict[str, Any], primary: redis.Redis, tmp_path: Path
) -> None:
    # Given the script sentinel-1 runs at start, pointed at a local stand-in for `redis`
    primary_port = primary.connection_pool.connection_kwargs["port"]
    sentinel_port = free_port()
    script = (
        stack["services"]["sentinel-1"]["command"][-1]
        .replace("$$", "$")
        .replace("/data/", f"{tmp_path}/")
        .replace("port 26379", f"port {sentinel_port}")
        .replace("tierq redis 6379 2", f"tierq localhost {primary_port} 1")  # quorum of one
        .replace("exec docker-entrypoint.sh redis-server", "exec redis-server")
    )
    environment = {
        **clean_environment(),
        "REDIS_PASSWORD": PASSWORD,
        "SENTINEL_HOSTNAME": "localhost",
    }

    # When it runs
    sentinel = ManagedProcess(
        "sentinel", ["sh", "-c", script], tmp_path / "sentinel.log", environment
    ).start()
    try:
        client = redis.Redis(port=sentinel_port, decode_responses=True)
        deadline = time.monotonic() + 15
        while True:
            try:
                master = client.sentinel_master("tierq")
                # Connected and logged in: neither subjectively down nor disconnected
                if master["is_master"] and not (master["is_sdown"] or master["is_disconnected"]):
                    break
            except redis.ConnectionError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "sentinel.log").read_text()
            time.sleep(0.2)
        # Then it names the primary by the host name it was given, and has rewritten its file
        assert client.sentinel_get_master_addr_by_name("tierq") == ("localhost", primary_port)
        assert "# Generated by CONFIG REWRITE" in (tmp_path / "sentinel.conf").read_text()
        client.close()
    finally:
        sentinel.stop()


# --- Kubernetes --------------------------------------------------------------------------------


def test_the_sentinel_overlay_validates_against_the_api_schemas() -> None:
    checked = 0
    for _, doc in manifests(SENTINEL_OVERLAY):
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 9 + 6, "the base, two StatefulSets, two Services, two budgets, a ConfigMap"


def test_the_sentinel_overlays_scalers_validate_against_kedas_crd_schemas() -> None:
    keda = [
        doc for _, doc in manifests(SENTINEL_OVERLAY) if doc["apiVersion"].startswith("keda.sh/")
    ]
    checked = check_crds(keda)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    for scaler in of_kind("ScaledObject", SENTINEL_OVERLAY).values():
        # The list trigger reads through the Sentinels; the metrics-api one asks the gateway
        trigger, gateway = scaler["spec"]["triggers"]
        assert gateway["type"] == "metrics-api"
        assert trigger["type"] == "redis-sentinel"
        assert trigger["metadata"]["sentinelMaster"] == "tierq"
        assert "address" not in trigger["metadata"]
        assert len(trigger["metadata"]["addresses"].split(",")) == 3


def test_every_tierq_deployment_reads_the_sentinel_settings() -> None:
    (config,) = of_kind("ConfigMap", SENTINEL_OVERLAY).values()
    settings = settings_for({**clean_environment(), **config["data"]})
    statefulsets = of_kind("StatefulSet", SENTINEL_OVERLAY)
    sentinel_count = statefulsets["sentinel"]["spec"]["replicas"]
    assert sentinel_count == 3
    assert statefulsets["redis"]["spec"]["replicas"] == 2  # a primary and a replica
    assert settings.redis_sentinels == [
        f"sentinel-{i}.sentinel:26379" for i in range(sentinel_count)
    ]
    assert settings.durability == "replica"

    deployments = of_kind("Deployment", SENTINEL_OVERLAY)
    assert set(deployments) == set(of_kind("Deployment"))  # every one of the base's
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        assert "TIERQ_REDIS_URL" in {e["name"] for e in container["env"]}, name


def test_the_python_build_matches_kustomize() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    for root in (ROOT / "ops" / "k8s", SENTINEL_OVERLAY):
        rendered = subprocess.run(
            [kubectl, "kustomize", str(root)], capture_output=True, text=True, check=True
        ).stdout
        real = {
            (doc["kind"], doc["metadata"]["name"]): doc
            for doc in yaml.safe_load_all(rendered)
            if doc
        }
        ours = {(doc["kind"], doc["metadata"]["name"]): doc for _, doc in manifests(root)}
        assert set(real) == set(ours)
        for key, doc in ours.items():
            namespaced = dict(doc, metadata={**doc["metadata"]})
            if key[0] != "Namespace":
                namespaced["metadata"]["namespace"] = "tierq"
            assert real[key] == namespaced, key
