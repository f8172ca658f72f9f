"""The gateway under misuse and faults: Redis away, no key, bodies too big, connections held."""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import httpx2
import pytest

from tests.support import (
    GatewayFactory,
    TenantKey,
    bearer,
    create_api_key,
    eventually,
    gateway_client,
    job,
    key_id_of,
    nonce,
    refused_with,
    run_tierq,
    unique_tenant,
)
from tierq.devkit.local_redis import EmbeddedRedis
from tierq.producers.client import TierqClient


@pytest.fixture
def private_gateway(
    # First, so it is set up first and stopped last: the gateway stops before its Redis.
    private_redis: EmbeddedRedis,
    start_gateway_with: GatewayFactory,
) -> tuple[str, str, EmbeddedRedis]:
    """A gateway on a Redis of its own (no workers), allowing one open wait per tenant."""
    root, settings = start_gateway_with(
        TIERQ_REDIS_URL=private_redis.url, TIERQ_GATEWAY__MAX_WAITING_PER_TENANT="1"
    )
    return root, create_api_key(settings, unique_tenant()), private_redis


def test_redis_away_is_a_503_in_the_apis_shape_on_every_kind_of_route(
    private_gateway: tuple[str, str, EmbeddedRedis],
) -> None:
    root, key, server = private_gateway
    server.stop()
    with gateway_client(root, key, timeout=5) as http:
        for response in (
            http.get("/v1/batches"),
            http.get("/v1/files/file-x"),
            http.get(f"/v1/jobs/{uuid.uuid4()}"),
            http.post("/v1/jobs", json=job()),
        ):
            assert refused_with(response, 503)["code"] == "broker_unavailable"
            assert response.headers["retry-after"]
        not_ready = http.get("/readyz")
    # Readiness says no to anyone, without the Redis address or error text
    assert not_ready.status_code == 503
    assert not_ready.json() == {"status": "unavailable"}


def test_a_request_without_a_key_hears_401_whatever_its_body(gateway_url: str) -> None:
    with gateway_client(gateway_url, timeout=5) as http:
        broken = http.post(
            "/v1/jobs", content=b'{"model":', headers={"content-type": "application/json"}
        )
        assert refused_with(broken, 401)["code"] == "invalid_api_key"
        wrong = http.post(
            "/v1/jobs:batch", json={"jobs": []}, headers={"Authorization": "Basic eDp5"}
        )
        assert refused_with(wrong, 401)["code"] == "invalid_api_key"


def test_a_chunked_body_over_the_limit_is_refused_413(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, key = tenant_key()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows only while reading
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 65_536
        yield b'"}]}'

    with gateway_client(gateway_url, key, timeout=5) as http:
        refused = http.post(
            "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
        )
    assert refused_with(refused, 413)["code"] == "request_too_large"


def test_odd_digits_in_numbers_are_a_400_not_a_crash(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, key = tenant_key()
    with gateway_client(gateway_url, key, timeout=5) as http:
        assert refused_with(http.get("/v1/batches", params={"limit": "²"}), 400)["param"] == "limit"
        upload = http.post(
            "/v1/files",
            files={"file": ("in.jsonl", b"{}\n")},
            data={"purpose": "batch", "expires_after[anchor]": "created_at",
                  "expires_after[seconds]": "²"},
        )  # fmt: skip
        assert refused_with(upload, 400)["param"] == "expires_after.seconds"
        huge = http.get(
            f"/v1/jobs/{uuid.uuid4()}/events",
            headers={"Last-Event-ID": "99999999999999999999-0"},
        )
        assert refused_with(huge, 422)["param"] == "Last-Event-ID"


def test_a_tenant_holds_only_its_share_of_open_waits_and_a_gone_client_frees_it(
    private_gateway: tuple[str, str, EmbeddedRedis],
) -> None:
    root, key, _ = private_gateway
    headers = bearer(key)
    with gateway_client(root, key) as http:
        job_id = http.post("/v1/jobs", json=job()).json()["id"]  # no worker: it stays queued
    url = f"{root}/v1/jobs/{job_id}"

    def hold() -> None:  # a long-poll whose client gives up after 1.5 s
        with (
            httpx2.Client(headers=headers, timeout=1.5) as client,
            contextlib.suppress(httpx2.TimeoutException),
        ):
            client.get(url, params={"wait": 60})

    holder = threading.Thread(target=hold)
    holder.start()
    time.sleep(0.7)
    with httpx2.Client(headers=headers, timeout=30) as http:
        assert refused_with(http.get(url, params={"wait": 5}), 429)["code"] == "too_many_waiting"
        holder.join()
        # The first client left: within a couple of seconds its slot is free again.
        answer = eventually(
            lambda: http.get(url, params={"wait": 0.5}),
            until=lambda response: response.status_code != 429,
            what="the gone client's slot freed",
            timeout=10,
            interval=0.5,
        )
        assert answer.json()["status"] == "queued"


def test_revoking_a_key_ends_the_event_streams_it_opened(
    gateway_url: str, tenant_key: TenantKey, worker_env: dict[str, str], client: TierqClient
) -> None:
    _, key = tenant_key()
    with gateway_client(gateway_url, key, timeout=60) as http:
        job_id = http.post("/v1/jobs", json=job(f"{nonce()} [sim latency_ms=15000]")).json()["id"]
        listed = run_tierq(worker_env, "keys", "list", "--json")
        assert listed.returncode == 0, listed.stderr
        key_id = key_id_of(listed.stdout, key)
        events: list[str] = []
        with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    events.append(line.split(":", 1)[1].strip())
                    if len(events) == 1:
                        revoked = run_tierq(worker_env, "keys", "revoke", key_id)
                        assert revoked.returncode == 0, revoked.stderr
        # The stream ended with the key, not with the job: its 15 s call is still running
        assert not client.get(job_id).status.is_final, "the stream lasted until the job ended"
    assert "result" not in events
