"""The gateway's job API over real HTTP, with the session's real workers behind it.

Each test uses fresh tenants (`tenant_key`), so quotas and ownership never leak between tests.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.support import (
    GatewayFactory,
    Simulator,
    TenantKey,
    create_api_key,
    gateway_client,
    in_flight,
    job,
    key_id_of,
    nonce,
    refused_with,
    run_tierq,
    unique_tenant,
    user,
)
from tierq.core.settings import Settings


def test_a_job_submitted_over_http_is_run_by_a_worker_and_read_back(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, key = tenant_key()
    with gateway_client(gateway_url, key) as http:
        accepted = http.post("/v1/jobs", json=job())
        assert accepted.status_code == 202
        body = accepted.json()
        # The status read just after enqueueing: a free worker may already have taken the job.
        assert body["status"] in ("queued", "running", "succeeded")
        assert accepted.headers["location"] == body["status_url"] == f"/v1/jobs/{body['id']}"
        record = http.get(body["status_url"], params={"wait": 30}, timeout=40).json()
    assert record["status"] == "succeeded"
    assert record["usage"]["total_tokens"] > 0
    assert record["response"]["object"] == "chat.completion"


def test_many_jobs_in_one_request_all_run(gateway_url: str, tenant_key: TenantKey) -> None:
    _, key = tenant_key()
    with gateway_client(gateway_url, key) as http:
        accepted = http.post("/v1/jobs:batch", json={"jobs": [job() for _ in range(5)]})
        assert accepted.status_code == 202
        ids = [entry["id"] for entry in accepted.json()["data"]]
        records = [http.get(f"/v1/jobs/{i}", params={"wait": 30}, timeout=40).json() for i in ids]
    assert len(set(ids)) == 5
    assert [r["status"] for r in records] == ["succeeded"] * 5


def test_one_bad_job_in_a_batch_is_named_and_nothing_is_enqueued(
    gateway_url: str, tenant_key: TenantKey, settings: Settings, simulator: Simulator
) -> None:
    tenant, key = tenant_key()
    marker = nonce()
    with gateway_client(gateway_url, key) as http:
        answer = http.post(
            "/v1/jobs:batch", json={"jobs": [job(marker), job(marker, temperature=5)]}
        )
    refused_with(answer, 422, "jobs.1.temperature")
    assert in_flight(settings, tenant) == 0
    assert simulator.requests_with(marker) == []


# Jobs each refused for one parameter: by the contract (a range, a missing or unknown field, a
# rule between fields) or by the model and tier rules checked after it (an unknown model, a
# parameter the model does not take, the messages limit).
BAD_JOBS = pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        (job(temperature=2.5), 422, "temperature"),
        ({"model": "gpt-4o-mini"}, 422, "messages"),
        ({**job(), "unknown_parameter": 1}, 422, "unknown_parameter"),
        (job(top_logprobs=2), 422, "top_logprobs"),
        (job(model="gpt-5-nonexistent"), 422, "model"),
        ({**job(model="o3"), "temperature": 0.2}, 422, "temperature"),
        ({**job(), "messages": user("x") * 2_049}, 422, "messages"),
        ({**job(), "tierq": {"labels": {"k": 1}}}, 422, "tierq.labels.k"),
        ({**job(), "labels": {"team": "search"}}, 422, "labels"),
    ],
    ids=["range", "no-messages", "unknown-field", "fields-disagree", "unknown-model",
         "o-series-temperature", "too-many-messages", "bad-label", "labels-beside-the-body"],
)  # fmt: skip


@BAD_JOBS
def test_a_bad_job_is_refused_naming_the_parameter(
    gateway_url: str,
    tenant_key: TenantKey,
    settings: Settings,
    body: dict[str, Any],
    status: int,
    param: str,
) -> None:
    tenant, key = tenant_key()
    with gateway_client(gateway_url, key) as http:
        refused_with(http.post("/v1/jobs", json=body), status, param)
    assert in_flight(settings, tenant) == 0


@BAD_JOBS
def test_a_bad_job_among_many_is_named_by_its_index_and_nothing_is_enqueued(
    gateway_url: str,
    tenant_key: TenantKey,
    settings: Settings,
    simulator: Simulator,
    body: dict[str, Any],
    status: int,
    param: str,
) -> None:
    tenant, key = tenant_key()
    marker = nonce()
    jobs = [job(marker), body, job(marker)]
    with gateway_client(gateway_url, key) as http:
        error = refused_with(http.post("/v1/jobs:batch", json={"jobs": jobs}), status)
    assert error["param"] == f"jobs.1.{param}"
    assert error["message"].startswith("jobs.1: "), error["message"]
    assert in_flight(settings, tenant) == 0
    assert simulator.requests_with(marker) == []


def test_bodies_over_the_size_limit_and_broken_json_are_refused(
    gateway_url: str, tenant_key: TenantKey, settings: Settings
) -> None:
    tenant, key = tenant_key()
    too_big = "x" * (settings.gateway.max_body_bytes + 1)
    with gateway_client(gateway_url, key) as http:
        refused_with(http.post("/v1/jobs", json=job(too_big)), 413)
        refused_with(
            http.post(
                "/v1/jobs", content=b'{"model":', headers={"content-type": "application/json"}
            ),
            422,
        )
        many = {"jobs": [job()] * (settings.gateway.max_jobs_per_request + 1)}
        refused_with(http.post("/v1/jobs:batch", json=many), 413, "jobs")
    assert in_flight(settings, tenant) == 0


def test_a_tenant_cannot_see_or_cancel_another_tenants_job(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, owner_key = tenant_key()
    _, other_key = tenant_key()
    with (
        gateway_client(gateway_url, owner_key) as owner,
        gateway_client(gateway_url, other_key) as other,
    ):
        job_id = owner.post("/v1/jobs", json=job()).json()["id"]
        refused_with(other.get(f"/v1/jobs/{job_id}"), 404)
        refused_with(other.delete(f"/v1/jobs/{job_id}"), 404)
        # The same answer as for an id that never existed: nothing tells the two apart.
        unknown = other.get(f"/v1/jobs/{uuid.uuid4()}").json()["error"]
        assert other.get(f"/v1/jobs/{job_id}").json()["error"]["code"] == unknown["code"]
        assert (
            owner.get(f"/v1/jobs/{job_id}", params={"wait": 30}, timeout=40).json()["status"]
            == "succeeded"
        )


def test_requests_without_a_live_key_are_refused(
    gateway_url: str, tenant_key: TenantKey, worker_env: dict[str, str]
) -> None:
    _, key = tenant_key()
    with (
        gateway_client(gateway_url, None) as anonymous,
        gateway_client(gateway_url, "tq-not-a-key") as wrong,
    ):
        refused_with(anonymous.post("/v1/jobs", json=job()), 401)
        refused_with(wrong.get(f"/v1/jobs/{uuid.uuid4()}"), 401)
    listed = run_tierq(worker_env, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert key not in listed.stdout, "keys are never shown again after creation"
    key_id = key_id_of(listed.stdout, key)
    with gateway_client(gateway_url, key) as http:
        assert http.post("/v1/jobs", json=job()).status_code == 202
        revoked = run_tierq(worker_env, "keys", "revoke", key_id)
        assert revoked.returncode == 0, revoked.stderr
        refused_with(http.post("/v1/jobs", json=job()), 401)


def test_an_idempotency_key_returns_the_first_job_per_tenant(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, key = tenant_key()
    _, other_key = tenant_key()
    body = job()
    headers = {"Idempotency-Key": f"order-{nonce()}"}
    with gateway_client(gateway_url, key) as http, gateway_client(gateway_url, other_key) as other:
        first = http.post("/v1/jobs", json=body, headers=headers).json()["id"]
        assert http.post("/v1/jobs", json=body, headers=headers).json()["id"] == first
        conflict = http.post("/v1/jobs", json=job(), headers=headers)
        refused_with(conflict, 409, "Idempotency-Key")
        # Keys are scoped to their tenant: another tenant's same key is another job.
        assert other.post("/v1/jobs", json=body, headers=headers).json()["id"] != first


def test_a_long_poll_returns_when_the_wait_runs_out(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, key = tenant_key()
    with gateway_client(gateway_url, key) as http:
        job_id = http.post("/v1/jobs", json=job(f"{nonce()} [sim latency_ms=3000]")).json()["id"]
        early = http.get(f"/v1/jobs/{job_id}", params={"wait": 0.5})
        assert early.status_code == 200
        assert early.json()["status"] in {"queued", "running"}
        refused_with(http.get(f"/v1/jobs/{job_id}", params={"wait": -1}), 422, "wait")
        cancelled = http.delete(f"/v1/jobs/{job_id}").json()
    assert cancelled["status"] == "cancelled"


@pytest.fixture
def idle_gateway(
    start_gateway_with: GatewayFactory,
) -> tuple[str, Settings]:
    """A gateway with a quota of 2 jobs in flight, on queues no worker reads."""
    prefix = f"quota-{uuid.uuid4().hex[:6]}"
    return start_gateway_with(
        TIERQ_GATEWAY__TENANT_MAX_IN_FLIGHT="2",
        TIERQ_QUEUE_PREFIX=f"{prefix}.",
        TIERQ_KEY_PREFIX=f"{prefix}:",
    )


def test_a_tenant_over_its_quota_is_told_to_come_back(
    idle_gateway: tuple[str, Settings],
) -> None:
    root, settings = idle_gateway
    key = create_api_key(settings, unique_tenant())
    with gateway_client(root, key) as http:
        first = http.post("/v1/jobs", json=job()).json()["id"]
        assert http.post("/v1/jobs", json=job()).status_code == 202
        refused = http.post("/v1/jobs", json=job())
        refused_with(refused, 429)
        assert refused.headers["retry-after"]
        assert refused.json()["error"]["code"] == "tenant_quota_exceeded"
        # A finished (here: cancelled) job frees its place.
        assert http.delete(f"/v1/jobs/{first}").json()["status"] == "cancelled"
        assert http.post("/v1/jobs", json=job()).status_code == 202


def test_health_and_readiness_answer_without_a_key(gateway_url: str) -> None:
    with gateway_client(gateway_url, None) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ok"}
        spec = http.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs:batch", "/v1/jobs/{job_id}"} <= set(spec["paths"])


def test_a_json_schema_response_format_reaches_the_api_and_its_answer_fits_the_schema(
    gateway_url: str, tenant_key: TenantKey, simulator: Simulator
) -> None:
    # Given a structured-output job as any HTTP client writes it: the API's own response_format
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["name", "tags"],
        "additionalProperties": False,
    }
    response_format = {
        "type": "json_schema",
        "json_schema": {"name": "Person", "strict": True, "schema": schema},
    }
    marker = nonce()
    _, key = tenant_key()

    # When it is submitted over HTTP and waited for
    with gateway_client(gateway_url, key) as http:
        accepted = http.post("/v1/jobs", json=job(marker, response_format=response_format))
        assert accepted.status_code == 202
        record = http.get(accepted.json()["status_url"], params={"wait": 30}, timeout=40).json()

    # Then the API received it unchanged, and the answer is JSON of that shape
    assert record["status"] == "succeeded"
    [call] = simulator.requests_with(marker)
    assert call["body"]["response_format"] == response_format
    answer = json.loads(record["response"]["choices"][0]["message"]["content"])
    assert set(answer) == {"name", "tags"}


def test_the_apis_metadata_is_sent_and_tierqs_labels_stay_on_the_record(
    gateway_url: str, tenant_key: TenantKey, simulator: Simulator
) -> None:
    # Given a job whose body sets the API's `metadata`, with tierq's labels in `tierq`
    marker = nonce()
    body = job(marker, store=True, metadata={"run": "7"})
    _, key = tenant_key()

    # When it is submitted over HTTP, alone and in a batch, and waited for
    with gateway_client(gateway_url, key) as http:
        one = http.post("/v1/jobs", json={**body, "tierq": {"labels": {"team": "search"}}})
        many = http.post(
            "/v1/jobs:batch", json={"jobs": [{**body, "tierq": {"labels": {"team": "ads"}}}]}
        )
        assert (one.status_code, many.status_code) == (202, 202), (one.text, many.text)
        urls = [one.json()["status_url"], many.json()["data"][0]["status_url"]]
        records = [http.get(url, params={"wait": 30}, timeout=40).json() for url in urls]

    # Then the API received the body unchanged, and the labels only the records carry
    assert [record["status"] for record in records] == ["succeeded", "succeeded"]
    assert [call["body"] for call in simulator.requests_with(marker)] == [body, body]
    assert [record["labels"] for record in records] == [{"team": "search"}, {"team": "ads"}]
