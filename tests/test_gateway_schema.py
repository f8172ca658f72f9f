"""The gateway against its own OpenAPI document, over real HTTP, with the session's workers behind.

Schemathesis reads /openapi.json from the running gateway and generates requests from it:

- negative data (each request breaks the document somewhere) is refused with a status the
  document declares for the route, in the API's error shape, and enqueues nothing;
- positive data on the submit routes is accepted (202) or refused as documented, never 5xx, and
  the tenant's jobs in flight are exactly the ones answered 202;
- every /v1 route refuses a request without a live key with 401, in the error shape.

Bounded in time: every property runs a fixed number of derandomized examples (the same run each
time, no example database), and every request has a timeout.

Schemathesis's pytest integration (`schemathesis.pytest.from_fixture(...).parametrize()`) fails
under pytest 9.2 (it reads `Node._nodeid`, which pytest renamed), so these tests draw cases from
`APIOperation.as_strategy` under Hypothesis's `@given`. The checks are schemathesis's own, chosen
in its config, plus the two defined here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import hypothesis
import pytest
import redis
import redis.asyncio
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, CheckContext, CheckFunction, GenerationMode, Response

from tests.support import TenantKey, bearer, unique_tenant
from tierq.core.keys import Keys
from tierq.core.results import JobResult
from tierq.core.settings import Settings
from tierq.producers.gateway.auth import KeyStore

# Negative examples per operation: in a longer run (400, 150 and 200) these routes showed
# nothing these do not; generating job batches is the slow part.
NEGATIVE_EXAMPLES = {
    ("POST", "/v1/jobs"): 60,
    ("POST", "/v1/jobs:batch"): 25,
    ("GET", "/v1/jobs/{job_id}"): 30,
}
# Valid submissions; each job accepted is enqueued, then cancelled at once.
POSITIVE_EXAMPLES = 20
# Generated ids read and cancelled, per route.
UNKNOWN_ID_EXAMPLES = 10
# Requests per /v1 route and kind of missing or dead credentials.
UNAUTHENTICATED_EXAMPLES = 3
REQUEST_TIMEOUT_SECONDS = 10
# What a refused request may answer: schemathesis's default list, plus 413 for a body over a
# size limit. status_code_conformance holds each answer to the statuses its own route declares.
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]

CHECKS = {
    "enabled": False,  # only the checks named here
    "not_a_server_error": {"enabled": True},
    "status_code_conformance": {"enabled": True},
    "content_type_conformance": {"enabled": True},
    "response_schema_conformance": {"enabled": True},
    # Acts on negative data only: such a request must be refused (a 5xx is not_a_server_error's).
    "negative_data_rejection": {"enabled": True, "expected-statuses": [*REFUSALS, "5xx"]},
}


def bounded(max_examples: int) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        # Generating nested job bodies is slow on a loaded 2-core machine; that is no failure.
        suppress_health_check=[hypothesis.HealthCheck.too_slow],
    )


# --- checks ------------------------------------------------------------------------------------


def error_shape(ctx: CheckContext, response: Response, case: Case) -> None:
    """Every error answer is the API's: {"error": {"message", "type", "param", "code"}}."""
    if response.status_code < 400:
        return
    body = response.json()
    assert isinstance(body, dict), f"error body is not an object: {body!r}"
    assert set(body) == {"error"}, f"error body keys {sorted(body)}, expected ['error']"
    error = body["error"]
    assert isinstance(error, dict), f"'error' is not an object: {error!r}"
    assert set(error) == {"message", "type", "param", "code"}, f"error keys {sorted(error)}"
    assert isinstance(error["message"], str), f"message: {error['message']!r}"
    assert error["message"], "empty error message"
    assert isinstance(error["type"], str), f"type: {error['type']!r}"
    assert error["type"], "empty error type"
    assert error["param"] is None or isinstance(error["param"], str), f"param: {error['param']!r}"
    assert error["code"] is None or isinstance(error["code"], str), f"code: {error['code']!r}"


def nothing_in_flight(client: redis.Redis, keys: Keys, tenant: str) -> CheckFunction:
    """A check: after the response, `tenant` has no job in flight (its quota's sorted set)."""

    def tenant_has_nothing_in_flight(ctx: CheckContext, response: Response, case: Case) -> None:
        in_flight = client.zrange(keys.tenant_in_flight(tenant), 0, -1)
        assert not in_flight, f"answered {response.status_code} and enqueued {in_flight}"

    return tenant_has_nothing_in_flight


# --- what Redis holds for a tenant -------------------------------------------------------------


def in_flight_of(client: redis.Redis, keys: Keys, tenant: str) -> set[str]:
    job_ids = cast(list[bytes], client.zrange(keys.tenant_in_flight(tenant), 0, -1))
    return {job_id.decode() for job_id in job_ids}


def jobs_of(client: redis.Redis, keys: Keys, tenant: str) -> set[str]:
    """Ids of the job records in the database that carry `tenant`."""
    names = list(client.scan_iter(match=keys.job("*"), count=1_000))
    with client.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hget(name, "record")
        records = pipe.execute()
    jobs = [JobResult.model_validate_json(raw) for raw in records if raw is not None]
    return {job.job_id for job in jobs if job.tenant == tenant}


def idempotency_keys_of(client: redis.Redis, keys: Keys, tenant: str) -> list[bytes]:
    """Idempotency keys reserved under `tenant` (the gateway scopes each key by its tenant)."""
    return list(client.scan_iter(match=keys.idempotency(f"*{tenant}*"), count=1_000))


def revoked_key(settings: Settings) -> str:
    """A key of a fresh tenant, revoked as `tierq keys revoke` does."""

    async def create_and_revoke() -> str:
        client = redis.asyncio.Redis.from_url(settings.redis_url.get_secret_value())
        try:
            store = KeyStore(client, Keys(settings.key_prefix))
            secret, record = await store.create(unique_tenant())
            await store.revoke(record.key_id)
            return secret
        finally:
            await client.aclose()

    return asyncio.run(create_and_revoke())


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_schema(gateway_url: str) -> BaseSchema:
    config = schemathesis.Config.from_dict(
        {
            "base-url": gateway_url,
            "checks": CHECKS,
            # Each test sends the credentials under test itself, and only those.
            "generation": {"with-security-parameters": False},
        }
    )
    return schemathesis.openapi.from_url(
        f"{gateway_url}/openapi.json", config=config, timeout=REQUEST_TIMEOUT_SECONDS
    )


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    """One connection pool for every request of the module."""
    with requests.Session() as session:
        yield session


@pytest.fixture
def models(settings: Settings) -> st.SearchStrategy[str | None]:
    """A model the gateway serves, or None (one draw in five) to keep the generated name.

    A generated name is unknown to the gateway (a fine 422); a served one lets the contract's
    rules beyond the JSON schema be reached (no sampling parameters for the o-series, no
    reasoning_effort for the others, an assistant message needs content or tool_calls).
    """
    return st.sampled_from([*settings.known_models(), None])


# --- bad requests ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"), list(NEGATIVE_EXAMPLES), ids=[" ".join(op) for op in NEGATIVE_EXAMPLES]
)
def test_invalid_requests_are_refused_as_documented_and_enqueue_nothing(
    method: str,
    path: str,
    gateway_schema: BaseSchema,
    http: requests.Session,
    tenant_key: TenantKey,
    redis_client: redis.Redis,
    settings: Settings,
) -> None:
    # Given a tenant of its own, with nothing submitted yet
    tenant, key = tenant_key()
    keys = Keys(settings.key_prefix)
    operation = gateway_schema[path][method]
    enqueued_nothing = nothing_in_flight(redis_client, keys, tenant)

    @bounded(NEGATIVE_EXAMPLES[method, path])
    @hypothesis.given(case=operation.as_strategy(generation_mode=GenerationMode.NEGATIVE))
    def refused(case: Case) -> None:
        # When it sends a request that breaks the document, then the answer is a refusal its
        # route declares, in the error shape, and the tenant still has nothing in flight
        case.call_and_validate(
            session=http,
            headers=bearer(key),
            additional_checks=[error_shape, enqueued_nothing],
            timeout=REQUEST_TIMEOUT_SECONDS,
        )

    refused()
    # And no job record and no idempotency key carry the tenant
    assert jobs_of(redis_client, keys, tenant) == set()
    assert idempotency_keys_of(redis_client, keys, tenant) == []


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/jobs:batch"])
def test_a_body_not_in_utf8_is_refused_like_any_malformed_json(
    path: str,
    gateway_schema: BaseSchema,
    http: requests.Session,
    tenant_key: TenantKey,
) -> None:
    _, key = tenant_key()
    # Given a body in Latin-1, which JSON does not allow (RFC 8259: UTF-8)
    job = '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "café"}]}'
    body = job if path == "/v1/jobs" else f'{{"jobs": [{job}]}}'
    case = gateway_schema[path]["POST"].Case(
        body=body.encode("latin-1"), media_type="application/json"
    )

    # When it is submitted
    response = case.call_and_validate(
        session=http,
        headers=bearer(key),
        additional_checks=[error_shape],
        timeout=REQUEST_TIMEOUT_SECONDS,
    )

    # Then it is refused as any body that is not JSON is (b"\x00" answers this)
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_unknown_job_ids_answer_404_in_the_error_shape(
    method: str,
    gateway_schema: BaseSchema,
    http: requests.Session,
    tenant_key: TenantKey,
) -> None:
    # Given a tenant with no jobs, to which every id is unknown (the id, any string, cannot be
    # made invalid: these are the bad requests of the id routes)
    _, key = tenant_key()
    operation = gateway_schema["/v1/jobs/{job_id}"][method]

    @bounded(UNKNOWN_ID_EXAMPLES)
    @hypothesis.given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
    def not_found(case: Case) -> None:
        response = case.call_and_validate(
            session=http,
            headers=bearer(key),
            additional_checks=[error_shape],
            timeout=REQUEST_TIMEOUT_SECONDS,
        )
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "job_not_found"

    not_found()


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_routes_answer_without_a_key_as_documented(
    path: str, gateway_schema: BaseSchema, http: requests.Session
) -> None:
    # A health route takes no input at all, so there is no bad request to make of it.
    case = gateway_schema[path]["GET"].Case()
    response = case.call_and_validate(session=http, timeout=REQUEST_TIMEOUT_SECONDS)
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- valid jobs --------------------------------------------------------------------------------


def accepted_or_refused_as_documented(response: Response) -> None:
    """A submission the document allows is accepted, or refused for a rule the schema cannot
    state (422, naming the parameter) or for an idempotency key generated twice (409)."""
    assert response.status_code in {202, 409, 422}, response.text
    if response.status_code == 422:
        assert response.json()["error"]["param"], response.text


@dataclass
class Submissions:
    """One fresh tenant's accepted jobs, cancelled as they come (no worker pays for them)."""

    tenant: str
    key: str
    keys: Keys
    redis: redis.Redis
    cancel: Any
    http: requests.Session
    accepted: set[str] = field(default_factory=set)

    def submit(self, case: Case) -> Response:
        return case.call_and_validate(
            session=self.http,
            headers=bearer(self.key),
            additional_checks=[error_shape],
            timeout=REQUEST_TIMEOUT_SECONDS,
        )

    def accept(self, job_ids: list[str]) -> None:
        self.accepted.update(job_ids)
        for job_id in set(job_ids):
            # The tenant owns it (another's id answers 404); cancelled, it costs no call.
            self.cancel.Case(path_parameters={"job_id": job_id}).call_and_validate(
                session=self.http, headers=bearer(self.key), timeout=REQUEST_TIMEOUT_SECONDS
            )

    def nothing_left_in_flight(self) -> bool:
        # Each accepted job was cancelled, which takes it out of the tenant's jobs in flight;
        # a job a refusal enqueued and counted would still be there.
        return not in_flight_of(self.redis, self.keys, self.tenant)

    def jobs_are_what_was_accepted(self) -> bool:
        return jobs_of(self.redis, self.keys, self.tenant) == self.accepted


@pytest.fixture
def submissions(
    gateway_schema: BaseSchema,
    http: requests.Session,
    tenant_key: TenantKey,
    redis_client: redis.Redis,
    settings: Settings,
) -> Submissions:
    tenant, key = tenant_key()
    cancel = gateway_schema["/v1/jobs/{job_id}"]["DELETE"]
    return Submissions(tenant, key, Keys(settings.key_prefix), redis_client, cancel, http)


def test_valid_jobs_are_accepted_or_refused_as_documented(
    gateway_schema: BaseSchema, submissions: Submissions, models: st.SearchStrategy[str | None]
) -> None:
    @bounded(POSITIVE_EXAMPLES)
    @hypothesis.given(
        case=gateway_schema["/v1/jobs"]["POST"].as_strategy(GenerationMode.POSITIVE),
        model=models,
    )
    def submitted(case: Case, model: str | None) -> None:
        # Given a job the document allows
        if model is not None:
            case.body = {**case.body, "model": model}
        # When it is submitted
        response = submissions.submit(case)
        # Then it is accepted or refused as documented
        accepted_or_refused_as_documented(response)
        if response.status_code == 202:
            submissions.accept([response.json()["id"]])
        # And nothing is left in flight: a refusal enqueued nothing
        assert submissions.nothing_left_in_flight()

    submitted()
    assert submissions.jobs_are_what_was_accepted()


def test_a_batch_of_valid_jobs_is_accepted_whole_or_refused_whole(
    gateway_schema: BaseSchema, submissions: Submissions, models: st.SearchStrategy[str | None]
) -> None:
    @bounded(POSITIVE_EXAMPLES)
    @hypothesis.given(
        case=gateway_schema["/v1/jobs:batch"]["POST"].as_strategy(GenerationMode.POSITIVE),
        model=models,
    )
    def submitted(case: Case, model: str | None) -> None:
        # Given jobs the document allows, some of which may break a rule it cannot state
        if model is not None:
            jobs: list[dict[str, Any]] = case.body["jobs"]
            case.body = {**case.body, "jobs": [{**job, "model": model} for job in jobs]}
        # When they are submitted in one request
        response = submissions.submit(case)
        # Then all are accepted, one id per job, or none is
        accepted_or_refused_as_documented(response)
        if response.status_code == 202:
            job_ids = [job["id"] for job in response.json()["data"]]
            assert len(job_ids) == len(case.body["jobs"])
            submissions.accept(job_ids)
        # And a refused batch enqueued none of its jobs
        assert submissions.nothing_left_in_flight()

    submitted()
    assert submissions.jobs_are_what_was_accepted()


# --- missing or dead keys ----------------------------------------------------------------------

CREDENTIALS: dict[str, Callable[[Settings], dict[str, str]]] = {
    "no Authorization header": lambda settings: {},
    "a key never issued": lambda settings: bearer("tq-" + "x" * 43),
    "a bearer token that is no tierq key": lambda settings: bearer("sk-not-a-tierq-key"),
    "another scheme": lambda settings: {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
    "a revoked key": lambda settings: bearer(revoked_key(settings)),
}


@pytest.mark.parametrize("credentials", list(CREDENTIALS))
def test_every_v1_route_refuses_a_missing_or_dead_key_with_401(
    credentials: str,
    gateway_schema: BaseSchema,
    http: requests.Session,
    settings: Settings,
    subtests: pytest.Subtests,
) -> None:
    headers = CREDENTIALS[credentials](settings)
    # Every /v1 route of the document, so a route added later is held to this too
    operations = [op.ok() for op in gateway_schema.get_all_operations()]
    operations = [op for op in operations if op.path.startswith("/v1/")]
    assert operations, "the document lists no /v1 route"
    for operation in operations:

        @bounded(UNAUTHENTICATED_EXAMPLES)
        @hypothesis.given(case=operation.as_strategy(generation_mode=GenerationMode.POSITIVE))
        def unauthorized(case: Case) -> None:
            response = case.call_and_validate(
                session=http,
                headers=headers,
                additional_checks=[error_shape],
                timeout=REQUEST_TIMEOUT_SECONDS,
            )
            assert response.status_code == 401, f"{case.operation.label}: {response.text}"
            assert response.json()["error"]["code"] == "invalid_api_key", response.text

        # Each route on its own, so one route's failure does not hide the next one's
        with subtests.test(operation.label):
            unauthorized()
