"""ops/k8s and docker-compose.yml checked against their schemas, offline, and against the code.

Kubernetes' own kinds are validated with kubernetes-validate (the API's schemas, shipped in the
package), KEDA's kinds with its CRD schemas from npm (@kubernetes-models/keda, installed by
`ops/bootstrap.sh dev` into ops/tools), docker-compose.yml with the Compose specification's
schema (shipped in check-jsonschema): the check `docker compose config` makes, without Docker.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import redis
import yaml

from tests.support import (
    TEST_REDIS_URL,
    GatewayFactory,
    clean_environment,
    gateway_client,
    nonce,
    settings_for,
    user,
    without_fair_dispatch,
)
from tierq.core.keys import Keys
from tierq.core.settings import Settings
from tierq.producers.client import TierqClient

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "ops" / "k8s"
TOOLS = ROOT / "ops" / "tools"
KUBERNETES_VERSION = "1.30"


def build(root: Path) -> list[tuple[str, dict[str, Any]]]:
    """What `kubectl kustomize root` renders, for the features ops/k8s uses: resources (files,
    or directories holding a kustomization), then JSON 6902 patches by kind and label selector.
    (Offline and without kubectl; `test_the_python_build_matches_kustomize` holds it to the
    real thing where kubectl is installed.)"""
    kustomization = yaml.safe_load((root / "kustomization.yaml").read_text())
    docs: list[tuple[str, dict[str, Any]]] = []
    for name in kustomization.get("resources", []):
        path = (root / name).resolve()
        if path.is_dir():
            docs.extend(build(path))
        else:
            rel = str(path.relative_to(K8S))
            docs.extend((rel, doc) for doc in yaml.safe_load_all(path.read_text()) if doc)
    for patch in kustomization.get("patches", []):
        target = patch["target"]
        wanted = dict(
            pair.split("=", 1) for pair in target.get("labelSelector", "").split(",") if pair
        )
        for _, doc in docs:
            labels = doc["metadata"].get("labels", {})
            if doc["kind"] == target["kind"] and wanted.items() <= labels.items():
                for operation in yaml.safe_load(patch["patch"]):
                    apply_json_patch(doc, operation)
    return docs


def apply_json_patch(doc: dict[str, Any], operation: dict[str, Any]) -> None:
    """One RFC 6902 add, replace or remove (the operations ops/k8s uses) on `doc`, in place."""
    *parents, last = operation["path"].lstrip("/").split("/")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    key: Any = int(last) if isinstance(node, list) else last
    if operation["op"] == "remove":
        del node[key]
    elif operation["op"] in ("add", "replace"):
        if operation["op"] == "replace":
            assert key in node if isinstance(node, dict) else key < len(node), operation
        node[key] = operation["value"]
    else:
        raise AssertionError(f"unsupported patch operation: {operation}")


def manifests(root: Path = K8S) -> list[tuple[str, dict[str, Any]]]:
    return build(root)


def of_kind(kind: str, root: Path = K8S) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for _, doc in manifests(root) if doc["kind"] == kind}


def default_settings() -> Settings:
    return settings_for(clean_environment())


def test_kubernetes_objects_validate_against_the_api_schemas() -> None:
    checked = 0
    for _, doc in manifests():
        if doc["apiVersion"].startswith("keda.sh/"):
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        checked += 1
    assert checked >= 9, "namespace, 4 deployments, 4 disruption budgets, a service"


def check_crds(docs: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the KEDA schemas come from npm)")
    assert (TOOLS / "node_modules" / "@kubernetes-models" / "keda").is_dir(), (
        "run ops/bootstrap.sh dev: it installs KEDA's schemas into ops/tools"
    )
    return subprocess.run(
        [node, str(TOOLS / "validate-crds.mjs")],
        input=json.dumps(docs), capture_output=True, text=True, cwd=TOOLS, timeout=60,
    )  # fmt: skip


def test_keda_objects_validate_against_kedas_crd_schemas() -> None:
    keda = [doc for _, doc in manifests() if doc["apiVersion"].startswith("keda.sh/")]
    checked = check_crds(keda)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count(": valid") == len(keda) >= 4


def test_a_broken_scaled_object_is_caught_by_the_keda_check() -> None:
    broken = next(iter(of_kind("ScaledObject").values()))
    broken = {**broken, "spec": {**broken["spec"], "minReplicaCount": "one"}}
    checked = check_crds([broken])
    assert checked.returncode == 1
    assert "minReplicaCount" in checked.stdout


def test_every_tier_has_a_deployment_a_scaler_and_a_disruption_budget() -> None:
    tiers = set(default_settings().tiers)
    deployments, scalers, budgets = (
        of_kind("Deployment"), of_kind("ScaledObject"), of_kind("PodDisruptionBudget"),
    )  # fmt: skip
    for tier in tiers:
        name = f"tierq-worker-{tier}"
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert container["args"] == ["worker", "--tier", tier]
        assert scalers[name]["spec"]["scaleTargetRef"]["name"] == name
        assert budgets[name]["spec"]["selector"]["matchLabels"]["tierq/tier"] == tier


def trigger(scaler: dict[str, Any], kind: str) -> dict[str, Any]:
    found: dict[str, Any] = next(t for t in scaler["spec"]["triggers"] if t["type"] == kind)
    return found


def value_at(document: Any, location: str) -> Any:
    """KEDA's metrics-api `valueLocation` for JSON (a GJSON path; tierq's are dotted keys)."""
    for part in location.split("."):
        document = document[part]
    return document


def test_each_scaler_reads_where_its_tiers_jobs_really_wait(
    start_gateway_with: GatewayFactory,
) -> None:
    """Submit a job per tier with no worker running (a Redis database of its own, the
    manifests' queue names): the count each trigger reads rises by one. The redis trigger's
    list holds it when fair dispatch is off; the metrics-api trigger's value, read from a real
    gateway at the trigger's path and value location, counts it either way."""
    base = TEST_REDIS_URL.rsplit("/", 1)[0]
    url = f"{base}/12"  # a database of its own: no worker consumes from it
    try:
        redis.Redis.from_url(url).ping()
    except redis.RedisError:
        pytest.skip(f"no Redis at {url}")
    metrics_key = f"metrics-{nonce()}"
    root, fair = start_gateway_with(
        TIERQ_REDIS_URL=url,
        TIERQ_QUEUE_PREFIX="tierq.",
        TIERQ_KEY_PREFIX="tierq:",
        TIERQ_GATEWAY__METRICS_KEY=metrics_key,
    )
    scalers = of_kind("ScaledObject")

    def read(scaler: dict[str, Any]) -> int:
        api = trigger(scaler, "metrics-api")["metadata"]
        assert api["authMode"] == "bearer"
        assert api["format"] == "json"
        path = "/" + api["url"].split("/", 3)[3]
        with gateway_client(root, metrics_key) as http:
            answer = http.get(path)
        assert answer.status_code == 200, answer.text
        return int(value_at(answer.json(), api["valueLocation"]))

    unfair = without_fair_dispatch(fair)
    keys = Keys(fair.key_prefix)
    with (
        TierqClient(fair) as client,
        TierqClient(unfair) as publishing,
        redis.Redis.from_url(url) as raw,
    ):
        for tier, tier_settings in fair.tiers.items():
            scaler = scalers[f"tierq-worker-{tier}"]
            list_name = trigger(scaler, "redis")["metadata"]["listName"]
            request = {"model": tier_settings.models[0], "messages": user("x")}
            listed, counted = raw.llen(list_name), read(scaler)

            client.submit(**request)  # fair dispatch: into the tier's backlog
            assert read(scaler) == counted + 1, f"{tier}: the metrics-api trigger missed it"
            assert raw.llen(list_name) == listed

            publishing.submit(**request)  # straight onto the queue
            assert raw.llen(list_name) == listed + 1, f"{tier}: the job is not in {list_name!r}"
            assert read(scaler) == counted + 2
            raw.delete(list_name, keys.backlog_costs(list_name), keys.backlog_entries(list_name))
            for prefix in (keys.backlog_prefix(list_name), keys.backlog_tenants_prefix(list_name)):
                for key in raw.scan_iter(match=f"{prefix}*"):
                    raw.delete(key)


def test_workers_get_longer_to_stop_than_they_take_to_drain() -> None:
    for name, deployment in of_kind("Deployment").items():
        if not name.startswith("tierq-worker-"):
            continue
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        drain = float(env["TIERQ_SHUTDOWN_GRACE_SECONDS"])
        # The drain, then handing the rest back to the queue and exiting.
        assert pod["terminationGracePeriodSeconds"] >= drain + 5


def test_worker_probes_and_scrape_port_match_the_metrics_port() -> None:
    for name, deployment in of_kind("Deployment").items():
        if not name.startswith("tierq-worker-"):
            continue
        template = deployment["spec"]["template"]
        container = template["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container["env"]}
        port = int(env["TIERQ_METRICS_PORT"])
        assert container["ports"][0]["containerPort"] == port
        assert container["livenessProbe"]["httpGet"]["port"] == container["ports"][0]["name"]
        assert template["metadata"]["annotations"]["prometheus.io/port"] == str(port)


def test_no_secret_is_written_into_a_manifest() -> None:
    for name, doc in manifests():
        assert doc["kind"] != "Secret", name
        text = json.dumps(doc)
        assert "sk-" not in text, name
        assert "redis://:" not in text, name


def test_docker_compose_file_follows_the_compose_specification() -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json"
    )
    schema = json.loads(schema_file.read_text())
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    jsonschema.validate(compose, schema, cls=jsonschema.Draft202012Validator)
    broken = {**compose, "services": {"x": {"image": 5, "ports": "8700"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)


def test_the_dashboard_charts_only_metrics_tierq_exports() -> None:
    from prometheus_client import REGISTRY

    import tierq.worker.metrics  # noqa: F401 (registers the metrics)

    exported = set()
    for metric in REGISTRY.collect():
        exported.update(sample.name for sample in metric.samples)
        exported.add(metric.name)
        exported.update(
            f"{metric.name}{suffix}" for suffix in ("_total", "_bucket", "_count", "_sum")
        )
    # read from Redis at scrape time (tierq/core/exposition.py)
    exported |= {"tierq_queue_depth", "tierq_queue_oldest_age_seconds", "tierq_waiting"}
    dashboard = json.loads((ROOT / "ops" / "grafana" / "tierq-dashboard.json").read_text())
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\btierq_[a-z_]+", target["expr"])
    }
    assert used, "the dashboard charts tierq's metrics"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
