"""The gateway's /metrics and /metrics/queues: served only with a metrics key set, and only
to that key.

Real gateway processes on the session's Redis (no workers needed: the metrics are read from the
gateway's own counters and from Redis at each scrape).
"""

from __future__ import annotations

import secrets

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from tests.support import GatewayFactory, TenantKey, gateway_client, refused_with
from tierq.producers.gateway.errors import APIError
from tierq.producers.gateway.observability import check_metrics_key

# Every route the metrics key guards (tests/test_ops_manifests.py reads /metrics/queues' figures).
GUARDED = ["/metrics", "/metrics/queues"]


@pytest.fixture
def metrics_key() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def keyed_gateway(start_gateway_with: GatewayFactory, metrics_key: str) -> str:
    """A gateway started with TIERQ_GATEWAY__METRICS_KEY set; its root URL."""
    root, _ = start_gateway_with(TIERQ_GATEWAY__METRICS_KEY=metrics_key)
    return root


def test_without_a_metrics_key_the_gateway_does_not_serve_metrics(
    start_gateway_with: GatewayFactory, tenant_key: TenantKey
) -> None:
    # Given a gateway with no metrics key set
    root, _ = start_gateway_with()
    _, tenant = tenant_key()

    with gateway_client(root) as http:
        # When anyone asks for /metrics, with or without a key, then it is not there (404),
        # and the answer says which setting serves it
        for path in GUARDED:
            for headers in ({}, {"Authorization": f"Bearer {tenant}"}):
                error = refused_with(http.get(path, headers=headers), 404)
                assert error["code"] == "metrics_disabled"
                assert "TIERQ_GATEWAY__METRICS_KEY" in error["message"]
        # And the gateway is otherwise up
        assert http.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer not-the-key",
        "Basic bWV0cmljczprZXk=",
        "Bearer",
        "Bearer tq-\xe9".encode("latin-1"),  # a byte the key's ASCII never holds
    ],
    ids=["none", "wrong-key", "basic-scheme", "bearer-without-key", "non-ascii"],
)
@pytest.mark.parametrize("path", GUARDED)
def test_metrics_refuse_a_caller_without_the_metrics_key_with_401(
    keyed_gateway: str, authorization: str | bytes | None, path: str
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    with gateway_client(keyed_gateway) as http:
        response = http.get(path, headers=headers)

    error = refused_with(response, 401)
    assert error["code"] == "invalid_metrics_key"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "tierq_" not in response.text
    assert "waiting" not in response.text


def test_a_tenants_api_key_does_not_open_metrics(keyed_gateway: str, tenant_key: TenantKey) -> None:
    # Given a live tenant key, which opens the tenant's routes
    _, key = tenant_key()
    with gateway_client(keyed_gateway, key) as http:
        assert http.get("/v1/models").status_code == 200

        # When it is sent to /metrics, then it is refused like any wrong key
        responses = [http.get(path) for path in GUARDED]

    assert [refused_with(r, 401)["code"] for r in responses] == ["invalid_metrics_key"] * 2


def test_the_metrics_key_opens_metrics_with_the_gateways_figures(
    keyed_gateway: str, metrics_key: str
) -> None:
    # Given a refused scrape, which the request counter records
    with gateway_client(keyed_gateway) as http:
        assert http.get("/metrics").status_code == 401

    # When Prometheus scrapes with the metrics key
    with gateway_client(keyed_gateway, metrics_key) as http:
        response = http.get("/metrics")

    # Then it gets the exposition: the queues read from Redis, and the gateway's own requests
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }
    assert any(name == "tierq_queue_depth" for name, _ in samples)
    refused = (
        "tierq_gateway_requests_total",
        (("method", "GET"), ("route", "/metrics"), ("status", "401")),
    )
    assert samples[refused] >= 1


def test_the_openapi_document_says_metrics_need_their_own_key(keyed_gateway: str) -> None:
    with gateway_client(keyed_gateway) as http:
        document = http.get("/openapi.json").json()

    operation = document["paths"]["/metrics"]["get"]
    assert {"401", "404"} <= set(operation["responses"])
    assert operation["security"] == [{"MetricsKey": []}]
    assert document["components"]["securitySchemes"]["MetricsKey"]["scheme"] == "bearer"


@pytest.mark.parametrize("configured", [None, ""], ids=["unset", "empty"])
def test_an_unset_or_empty_metrics_key_never_opens_metrics(configured: str | None) -> None:
    # An empty key would match a request with no key at all: it counts as no key.
    expected = None if configured is None else SecretStr(configured)
    with pytest.raises(APIError) as refused:
        check_metrics_key(expected, None)
    assert refused.value.status_code == 404
