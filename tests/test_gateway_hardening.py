"""The gateway under misuse and faults: Redis away, no key, bodies too big, connections held."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support import create_api_key, nonce, unique_tenant
from tierq.devkit.local_redis import EmbeddedRedis
from tierq.devkit.processes import ManagedProcess, settings_for, start_gateway

TenantKey = Callable[..., tuple[str, str]]


def job(text: str | None = None) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text or nonce()}]}


def error_of(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.fixture
def private_gateway(
    worker_env: dict[str, str], logs_dir: Path
) -> Iterator[tuple[str, str, EmbeddedRedis]]:
    """A gateway on a Redis of its own (no workers), allowing one open wait per tenant."""
    server = EmbeddedRedis().start()
    env = {
        **worker_env,
        "TIERQ_REDIS_URL": server.url,
        "TIERQ_GATEWAY__MAX_WAITING_PER_TENANT": "1",
    }
    process: ManagedProcess
    process, root = start_gateway(logs_dir / f"gateway-private-{nonce()}.log", env)
    key = create_api_key(settings_for(env), unique_tenant())
    yield root, key, server
    process.stop()
    server.stop()


def test_redis_away_is_a_503_in_the_apis_shape_on_every_kind_of_route(
    private_gateway: tuple[str, str, EmbeddedRedis],
) -> None:
    root, key, server = private_gateway
    server.stop()
    with httpx2.Client(base_url=root, headers={"Authorization": f"Bearer {key}"}) as http:
        for response in (
            http.get("/v1/batches"),
            http.get("/v1/files/file-x"),
            http.get(f"/v1/jobs/{uuid.uuid4()}"),
            http.post("/v1/jobs", json=job()),
        ):
            assert error_of(response, 503)["code"] == "broker_unavailable"
            assert response.headers["retry-after"]
        assert http.get("/readyz").status_code == 503


def test_a_request_without_a_key_hears_401_whatever_its_body(gateway_url: str) -> None:
    with httpx2.Client(base_url=gateway_url) as http:
        broken = http.post(
            "/v1/jobs", content=b'{"model":', headers={"content-type": "application/json"}
        )
        assert error_of(broken, 401)["code"] == "invalid_api_key"
        wrong = http.post(
            "/v1/jobs:batch", json={"jobs": []}, headers={"Authorization": "Basic eDp5"}
        )
        assert error_of(wrong, 401)["code"] == "invalid_api_key"


def test_a_chunked_body_over_the_limit_is_refused_413(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, key = tenant_key()

    def chunks() -> Iterator[bytes]:  # no Content-Length: the size shows only while reading
        yield b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
        for _ in range(40):
            yield b"x" * 65_536
        yield b'"}]}'

    with httpx2.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}) as http:
        refused = http.post(
            "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
        )
    assert error_of(refused, 413)["code"] == "request_too_large"


def test_odd_digits_in_numbers_are_a_400_not_a_crash(
    gateway_url: str, tenant_key: TenantKey
) -> None:
    _, key = tenant_key()
    with httpx2.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}) as http:
        assert error_of(http.get("/v1/batches", params={"limit": "²"}), 400)["param"] == "limit"
        upload = http.post(
            "/v1/files",
            files={"file": ("in.jsonl", b"{}\n")},
            data={"purpose": "batch", "expires_after[anchor]": "created_at",
                  "expires_after[seconds]": "²"},
        )  # fmt: skip
        assert error_of(upload, 400)["param"] == "expires_after.seconds"
        huge = http.get(
            f"/v1/jobs/{uuid.uuid4()}/events",
            headers={"Last-Event-ID": "99999999999999999999-0"},
        )
        assert error_of(huge, 422)["param"] == "Last-Event-ID"


def test_a_tenant_holds_only_its_share_of_open_waits_and_a_gone_client_frees_it(
    private_gateway: tuple[str, str, EmbeddedRedis],
) -> None:
    root, key, _ = private_gateway
    headers = {"Authorization": f"Bearer {key}"}
    with httpx2.Client(base_url=root, headers=headers, timeout=30) as http:
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
        assert error_of(http.get(url, params={"wait": 5}), 429)["code"] == "too_many_waiting"
        holder.join()
        # The first client left: within a couple of seconds its slot is free again.
        deadline = time.monotonic() + 10
        while (answer := http.get(url, params={"wait": 0.5})).status_code == 429:
            assert time.monotonic() < deadline, "the gone client's slot was never freed"
            time.sleep(0.5)
        assert answer.json()["status"] == "queued"


def test_revoking_a_key_ends_the_event_streams_it_opened(
    gateway_url: str, tenant_key: TenantKey, worker_env: dict[str, str]
) -> None:
    _, key = tenant_key()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx2.Client(base_url=gateway_url, headers=headers, timeout=60) as http:
        job_id = http.post("/v1/jobs", json=job(f"{nonce()} [sim latency_ms=15000]")).json()["id"]
        listed = subprocess.run(
            [sys.executable, "-m", "tierq", "keys", "list", "--json"],
            env=worker_env, capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        key_id = next(
            line.split('"key_id": "')[1].split('"')[0]
            for line in listed.splitlines()
            if f'"hint": "{key[:7]}"' in line
        )
        events: list[str] = []
        began = time.monotonic()
        with http.stream("GET", f"/v1/jobs/{job_id}/events") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    events.append(line.split(":", 1)[1].strip())
                    if len(events) == 1:
                        subprocess.run(
                            [sys.executable, "-m", "tierq", "keys", "revoke", key_id],
                            env=worker_env, check=True, capture_output=True,
                        )  # fmt: skip
        ended_after = time.monotonic() - began
    assert "result" not in events
    assert ended_after < 14, "the stream ended with the key, not with the job"
