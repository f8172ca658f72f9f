"""The gateway's job API over real HTTP, with the session's real workers behind it."""

from __future__ import annotations

from collections.abc import Callable

import httpx2

from tests.support import nonce


def test_a_job_submitted_over_http_is_run_by_a_worker_and_read_back(
    gateway_url: str, tenant_key: Callable[..., tuple[str, str]]
) -> None:
    _, key = tenant_key()
    with httpx2.Client(base_url=gateway_url, headers={"Authorization": f"Bearer {key}"}) as http:
        accepted = http.post(
            "/v1/jobs",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": nonce()}]},
        )
        assert accepted.status_code == 202
        body = accepted.json()
        assert accepted.headers["location"] == body["status_url"] == f"/v1/jobs/{body['id']}"
        record = http.get(body["status_url"], params={"wait": 30}, timeout=40).json()
    assert record["status"] == "succeeded"
    assert record["usage"]["total_tokens"] > 0
    assert record["response"]["object"] == "chat.completion"
