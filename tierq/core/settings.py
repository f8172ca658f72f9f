"""Every tunable of tierq, read once from the environment (and an optional `.env`).

Producers and workers share this module, so it must not import `openai` or Celery. Names carry
their unit; the docstring under each field says why it exists and is the field's description,
from which docs/configuration.md is generated (`python -m tierq.devkit.config_reference`).
Variables are `TIERQ_*`, except the provider's key and base URL, which keep the SDK's own names
so an existing deployment's environment works unchanged. Nested groups are set as JSON
(`TIERQ_RETRY='{"max_attempts": 8}'`) or field by field with `__`
(`TIERQ_RETRY__MAX_ATTEMPTS=8`). `TIERQ_TIERS` replaces the tier table;
`TIERQ_TIERS__<TIER>__<FIELD>` changes one field of a default tier, or adds a tier.
`TIERQ_MODELS` extends or corrects the model catalog (`tierq.core.catalog`), entry by entry.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
import re
from collections.abc import Callable, Iterable
from typing import Annotated, Any

from dotenv import dotenv_values
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from tierq.core.catalog import ModelInfo, ModelSpec, resolve, shipped_models
from tierq.core.errors import ConfigurationError, UnknownModelError
from tierq.core.pricing import ModelPrice, price_for
from tierq.core.validation import FieldRuleError

ENV_PREFIX = "TIERQ_"
# Variables of tierq's own tooling (the test suite's and the benchmarks' Redis URLs), not
# settings.
IGNORED_PREFIXES = ("TIERQ_TEST_", "TIERQ_BENCH_")
TIER_NAME_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
# Celery's rate-limit grammar: a number, optionally per second, minute or hour.
RATE_LIMIT_PATTERN = re.compile(r"^\d+(\.\d+)?(/[smh])?$")


class TierSettings(BaseModel):
    """One tier: a set of models served by one Celery queue and its own pool of workers."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    models: list[str] = []
    """Model names as the API knows them, served here besides those whose catalog entry
    (`TIERQ_MODELS`) names this tier; a model listed here is served here whatever its entry
    says. A job's model picks its tier."""
    reasoning: bool = False
    """Models of this tier whose catalog entry does not say whether they reason follow the
    o-series rules: sampling knobs only at their defaults, no `stop`; `max_tokens` is sent as
    `max_completion_tokens`."""
    concurrency: Annotated[int, Field(ge=1, le=1000)] = 100
    """Calls in flight per worker process (the threads pool's size)."""
    rate_limit: str | None = None
    """Celery's per-process cap, in its own grammar (`600/m`, `10/s`); unset leaves it uncapped.
    It counts per worker process: the provider's limits are kept fleet-wide by the limiter."""
    request_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] | None = None
    """Soft limit: one call's timeout for this tier (a call past it is retried); unset: the
    global `TIERQ_REQUEST_TIMEOUT_SECONDS`. Reasoning models think for minutes."""
    time_limit_seconds: Annotated[float, Field(gt=0, le=3600)] | None = None
    """Hard limit: one attempt, streaming included, may not run longer; past it the job fails
    (`time_limit_exceeded`) and frees its slot. Unset: no limit beyond the soft one."""
    flex: bool = True
    """Whether this tier's jobs with a deadline may run at `flex` (`TIERQ_SPEND` says when);
    false keeps the tier at the default service level."""
    fair_dispatch: bool = True
    """Submitted jobs wait in per-priority, per-tenant backlogs, and the tier's workers move
    them to its Celery queue by weighted fair share in tokens (`TIERQ_FAIR_SHARE`), keeping the
    queue short; off, jobs go straight to the queue in submission order and priority and
    tenant weights have no effect. Producers and workers must agree."""

    @field_validator("models")
    @classmethod
    def _a_given_list_names_a_model(cls, value: list[str]) -> list[str]:
        # Runs only on a list given explicitly (defaults are not validated): an empty one is
        # a mistake, since leaving `models` out already means "the catalog's models only".
        if not value:
            raise ValueError(
                "list at least one model, or leave `models` out to serve the catalog's models "
                "that name this tier"
            )
        return value

    @field_validator("rate_limit")
    @classmethod
    def _celery_rate_limit_grammar(cls, value: str | None) -> str | None:
        if value is not None and not RATE_LIMIT_PATTERN.match(value):
            raise ValueError(f"{value!r} is not a Celery rate limit such as '600/m' or '10/s'")
        return value


def default_tiers() -> dict[str, TierSettings]:
    """The product's tier table: cheap and fast, the standard model, and reasoning models.

    Which models each serves is the catalog's `tier` (`tierq.core.catalog.SHIPPED_MODELS`)."""
    return {
        "fast": TierSettings(),
        "standard": TierSettings(),
        "reasoning": TierSettings(reasoning=True, concurrency=50, request_timeout_seconds=600),
    }


class RetrySettings(BaseModel):
    """How Celery retries transient API faults (the SDK's own retries are off)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    max_attempts: Annotated[int, Field(ge=1, le=100)] = 6
    """Attempts in all, the first included; a job that exhausts them fails with its last error."""
    backoff_base_seconds: Annotated[int, Field(ge=1, le=3600)] = 1
    """Back-off before retry k is drawn from `[0, base * 2^k]` (full jitter), Celery's formula."""
    backoff_max_seconds: Annotated[int, Field(ge=1, le=3600)] = 60
    """Cap on the back-off draw; keeps a long outage from parking jobs for hours."""
    retry_after_max_seconds: Annotated[float, Field(gt=0, le=3600)] = 120.0
    """A server's retry-after is honoured up to this; past it the wait is capped here."""


class RateLimitGroup(BaseModel):
    """The provider's per-minute limits for a model, or for models that share one limit."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    models: list[str] = []
    """Models sharing this budget; empty means the one model the group is named after."""
    rpm: Annotated[int, Field(ge=1)] | None = None
    """Requests per minute; unset leaves it to be learned from the API's headers."""
    tpm: Annotated[int, Field(ge=1)] | None = None
    """Tokens per minute; unset leaves it to be learned from the API's headers."""


class FairShareSettings(BaseModel):
    """How a tier with fair dispatch shares its dispatches (tierq/core/dispatch.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    priority_weights: dict[str, Annotated[float, Field(gt=0)]] = {
        "interactive": 100.0,
        "default": 10.0,
        "bulk": 1.0,
    }
    """Each priority class's share of a busy tier, in tokens: with every class waiting,
    `interactive` gets 100 tokens' worth of jobs for each 10 of `default` and 1 of `bulk`. No
    class is starved: `bulk` still moves at its share. A class with nothing waiting leaves its
    share to the others."""
    tenant_weights: dict[str, Annotated[float, Field(gt=0)]] = {}
    """Within a class, each tenant's share in proportion to its weight, in tokens; a tenant not
    listed weighs 1 (jobs without a tenant, from the Python client, are tenant `-`)."""
    queue_target_per_slot: Annotated[float, Field(gt=0, le=100)] = 2.0
    """Each worker's dispatcher tops the tier's shared Celery queue up to about this many jobs
    per slot of its own worker (its concurrency), so a worker never waits for work while the
    rest waits in backlogs, where it can still be reordered."""

    @field_validator("priority_weights")
    @classmethod
    def _every_priority_weighed(cls, value: dict[str, float]) -> dict[str, float]:
        from tierq.core.priority import PRIORITIES

        unknown = sorted(set(value) - set(PRIORITIES))
        if unknown:
            raise ValueError(f"unknown priorities {unknown}; they are {list(PRIORITIES)}")
        return {priority: value.get(priority, 1.0) for priority in PRIORITIES}


class SpendSettings(BaseModel):
    """Which service level a job with a deadline runs at (tierq/core/spend.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    flex: bool = True
    """A job whose deadline leaves time runs at `service_tier="flex"` (half price, slower
    answers, sometimes "resource unavailable") where the model catalog prices flex for its
    model; off, such jobs run at the default tier. A caller's own `service_tier` always wins."""
    tenant_flex: dict[str, bool] = {}
    """Per gateway tenant: `false` keeps that tenant's jobs off flex whatever their deadline
    (`{"acme": false}`); a tenant not listed follows `flex`."""
    flex_min_seconds: Annotated[float, Field(ge=0)] = 900.0
    """A job runs at flex only while its deadline is at least this far when its call starts:
    time for a slow flex answer and, should flex be unavailable, a default one."""
    flex_timeout_seconds: Annotated[float, Field(gt=0)] = 900.0
    """The timeout of a flex call (OpenAI advises 15 minutes: flex answers come slower)."""
    batch: bool = True
    """A job whose deadline is at least `batch_min_seconds` away goes to the provider's Batch
    API (half price, answers within its 24 h window) instead of the queue; off, it runs on the
    queue (at flex where it can)."""
    batch_min_seconds: Annotated[float, Field(gt=0)] = 86_400.0
    """The nearest deadline a job may have to go into a provider batch."""
    batch_margin_seconds: Annotated[float, Field(gt=0)] = 3_600.0
    """A provider batch not finished this long before its earliest job's deadline is cancelled,
    and its jobs without an answer run on the queue instead, in time for their deadlines."""
    batch_collect_seconds: Annotated[float, Field(gt=0)] = 60.0
    """Jobs waiting for a provider batch are sent at least this often (sooner once
    `batch_max_lines` are waiting)."""
    batch_max_lines: Annotated[int, Field(ge=1, le=50_000)] = 5_000
    """Lines per provider batch (the API takes up to 50,000)."""
    batch_poll_seconds: Annotated[float, Field(gt=0)] = 30.0
    """How often a provider batch in flight is asked whether it has ended."""
    priority_within_seconds: Annotated[float, Field(gt=0)] | None = None
    """Unset: never. Set: a job whose deadline is nearer than this when its call starts runs at
    `service_tier="priority"` (billed above the default) where its model offers it."""


class LimiterSettings(BaseModel):
    """The fleet-wide limiter shared through Redis (`tierq.core.ratelimit`)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    enabled: bool = True
    """Off: only Celery's per-process `rate_limit` applies (for comparison; not for production)."""
    headroom: Annotated[float, Field(ge=0, le=0.5)] = 0.02
    """Fraction of each limit left unused, a margin for network jitter between admission and
    the API's clock; 0.02 paces at 98% of the limit."""
    burst_seconds: Annotated[float, Field(gt=0, le=60)] = 0.5
    """Seconds of budget that may be spent at once; the API enforces limits over about a second."""
    max_wait_in_slot_seconds: Annotated[float, Field(ge=0, le=300)] = 5.0
    """A job that can start within this many seconds waits in its worker slot; a later one goes
    back to the queue with a countdown, freeing the slot (and not counting as an attempt)."""
    default_output_tokens: Annotated[int, Field(ge=1)] = 16
    """Output tokens reserved for a job that sets no `max_tokens`/`max_completion_tokens`."""


class GatewaySettings(BaseModel):
    """The HTTP gateway (`tierq gateway`): its address, input limits and tenant quotas."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    host: str = "127.0.0.1"
    """Address `tierq gateway` binds (its `--host` overrides it); `0.0.0.0` listens on all."""
    port: Annotated[int, Field(ge=1, le=65_535)] = 8700
    """Port `tierq gateway` binds (its `--port` overrides it); `/metrics` is served there too."""
    max_body_bytes: Annotated[int, Field(ge=1_024, le=256 * 1024 * 1024)] = 2 * 1024 * 1024
    """Largest JSON body accepted (413 beyond); a job's own limit is `TIERQ_MAX_REQUEST_BYTES`."""
    max_file_bytes: Annotated[int, Field(ge=1_024, le=512 * 1024 * 1024)] = 100 * 1024 * 1024
    """Largest uploaded batch input file (413 beyond); the API's own cap is 200 MB."""
    max_batch_lines: Annotated[int, Field(ge=1, le=1_000_000)] = 50_000
    """Requests per batch input file; the API's own cap is 50,000."""
    max_jobs_per_request: Annotated[int, Field(ge=1, le=100_000)] = 1_000
    """Jobs per `POST /v1/jobs:batch` request."""
    tenant_max_in_flight: Annotated[int, Field(ge=1)] = 10_000
    """Jobs of one tenant queued or running at once; submissions beyond answer 429."""
    max_waiting_per_tenant: Annotated[int, Field(ge=1, le=10_000)] = 50
    """Long-polls and event streams one tenant may hold open at once in one gateway process
    (each holds a Redis connection of the process's pool); 429 beyond."""
    max_wait_seconds: Annotated[float, Field(gt=0, le=600)] = 60.0
    """Longest long-poll of `GET /v1/jobs/{id}?wait=SECONDS`, and how long the drop-in
    `POST /v1/chat/completions` holds a request for its job."""
    redis_max_connections: Annotated[int, Field(ge=10, le=100_000)] = 1_000
    """Redis connections one gateway process may open (redis-py's default is 100). Held
    drop-in calls and long-polls share one subscription; each open event stream holds one
    connection, and every other request borrows one briefly."""
    max_queue_wait_seconds: Annotated[float, Field(gt=0, le=3600)] | None = None
    """The drop-in route answers 429 with `Retry-After` (which the SDK's own retry waits)
    when its tier's expected queue wait (queue depth over the tier's recent finish rate) is
    longer than this; unset, every request is held."""
    batches_via_provider: bool = False
    """The jobs of a batch created through the gateway's `/v1/batches` go to the provider's
    Batch API (half price, within its window), under tierq's keys, tenants and accounting;
    off, they run on the queues (at flex where they can)."""
    file_ttl_seconds: Annotated[int, Field(ge=60)] = 30 * 86_400
    """How long uploaded and result files are kept (the API keeps batch output 30 days)."""
    tenant_max_files: Annotated[int, Field(ge=1, le=1_000_000)] = 1_000
    """Uploaded files one tenant may keep at once (live, not expired or deleted); an upload
    beyond answers 429. Batch output files are the gateway's and do not count."""
    tenant_max_file_bytes: Annotated[int, Field(ge=1_024)] = 2 * 1024 * 1024 * 1024
    """Bytes of uploaded files one tenant may keep at once; an upload that would pass it is
    refused with 429 as soon as it does, and what it wrote is removed."""
    max_concurrent_uploads: Annotated[int, Field(ge=1, le=1_000)] = 8
    """Uploads one gateway process receives at once; one more answers 429 at once. Uploads
    are streamed into Redis as they arrive, so each holds at most one part in memory."""
    metrics_key: SecretStr | None = None
    """Bearer key that `GET /metrics` requires (`Authorization: Bearer <key>`); unset, the
    gateway does not serve `/metrics` (404), so its figures are never open to whoever reaches
    the port."""


class Settings(BaseSettings):
    """The whole configuration; build it with `get_settings()`, never at import time."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        # Unknown TIERQ_* names are refused by `get_settings` (pydantic-settings would only
        # see those in .env); other tools' variables in a shared .env are none of our business.
        extra="ignore",
        frozen=True,
        populate_by_name=True,
        # The docstring under each field is its description (docs/configuration.md).
        use_attribute_docstrings=True,
    )

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:6379/0")
    """Broker and job records live here (by default database 0 of a local server); a password
    goes in the URL (`redis://:pw@host:6379/0`). A `redis://`, `rediss://` or `unix://` URL."""
    redis_sentinels: list[str] = []
    """Sentinels as `host:port` (`TIERQ_REDIS_SENTINELS='["s1:26379","s2:26379"]'`). When
    set, producers, workers and the gateway ask them for the current primary of
    `TIERQ_REDIS_SENTINEL_MASTER` and follow it through a failover; `TIERQ_REDIS_URL` then
    gives only the password and database number (its host is not used)."""
    redis_sentinel_master: str = "tierq"
    """The primary's name as the Sentinels know it (`sentinel monitor <name> ...`)."""
    redis_sentinel_password: SecretStr | None = None
    """Password of the Sentinels themselves (`requirepass` in sentinel.conf), if they have one;
    the primary's password stays in `TIERQ_REDIS_URL`."""
    durability: str = Field(default="memory", pattern="^(memory|replica|aof)$")
    """When a submission returns, and a worker trusts its own writes. `memory`: once Redis has
    the job in memory (a crash loses what its persistence had not written: about a second with
    `appendfsync everysec`; a failover loses what the replica had not received). `replica`:
    once `TIERQ_DURABILITY_REPLICAS` replicas have it (Redis `WAIT`); a worker waits the same
    for its claim before calling the API and for the result before acknowledging the message.
    `aof`: once the primary's append-only file has it on disk and as many replicas' files
    (Redis `WAITAOF`, Redis 7.2 or newer). docs/reliability.md says what each can lose."""
    durability_replicas: Annotated[int, Field(ge=0, le=16)] = 1
    """Replicas that must confirm a write under `TIERQ_DURABILITY=replica` (at least 1) or
    `aof` (0: the primary's own disk only)."""
    durability_timeout_seconds: Annotated[float, Field(gt=0, le=60)] = 2.0
    """Longest wait for those confirmations; a submission not confirmed in time raises
    `NotDurableError` (HTTP 503): the job may run, and may be lost if the primary fails now."""
    redis_memory_guard_fraction: Annotated[float, Field(gt=0, le=1)] = 0.9
    """Submissions and uploads are refused (HTTP 507) once Redis uses this fraction of its
    `maxmemory`, so queued jobs, results and acknowledgements still fit; 1 turns the guard
    off. A Redis without `maxmemory` is not guarded (set one in production)."""
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_API_KEY", "TIERQ_OPENAI_API_KEY")
    )
    """The provider's key under the SDK's own name; workers need it. Unset: no key (the demo
    then uses the simulator)."""
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("OPENAI_BASE_URL", "TIERQ_OPENAI_BASE_URL")
    )
    """The provider's base URL under the SDK's own name (the simulator, a proxy); unset means
    the SDK's default (api.openai.com). An `http://` or `https://` URL."""
    models: dict[str, ModelSpec] = Field(default_factory=shipped_models)
    """The model catalog: per model its tier, whether it reasons, context window, maximum
    output, accepted `reasoning_effort` values, refused parameters and prices. Entries given
    here are laid over the shipped ones field by field (`TIERQ_MODELS='{"gpt-4o":
    {"max_output_tokens": 8192}, "my-model": {"tier": "fast", "price": {"input": 1,
    "cached_input": 0.5, "output": 4}}}'`); `{"tier": null}` takes a shipped model out of
    service. The shipped entries cover the seed models (gpt-4o, gpt-4o-mini, o4-mini, o3)
    and the GPT-4.1 and GPT-5 families."""
    tiers: dict[str, TierSettings] = Field(default_factory=default_tiers)
    """Model tiers, each its own queue. A tier serves the catalog's models that name it
    (`TIERQ_MODELS`) and those its own `models` lists. `TIERQ_TIERS` given whole replaces the
    table (an entry without `models` adjusts the default tier of that name);
    `TIERQ_TIERS__<TIER>__<FIELD>` changes one field of a default tier, or adds a tier beside
    the defaults."""
    retry: RetrySettings = Field(default_factory=RetrySettings)
    """How Celery retries transient API faults."""
    rate_limits: dict[str, RateLimitGroup] = {}
    """Provider limits per model or group of models sharing one limit
    (`TIERQ_RATE_LIMITS='{"gpt-4o": {"rpm": 500, "tpm": 30000}}'`); models not listed are
    limited by what the API's headers teach."""
    limiter: LimiterSettings = Field(default_factory=LimiterSettings)
    """The fleet-wide RPM/TPM limiter shared through Redis."""
    fair_share: FairShareSettings = Field(default_factory=FairShareSettings)
    """Priority and tenant weights of the tiers with fair dispatch."""
    spend: SpendSettings = Field(default_factory=SpendSettings)
    """The service level (flex, default, priority) of jobs with a deadline."""
    context_windows: dict[str, Annotated[int, Field(ge=1)]] = {}
    """Older spelling of the catalog's `context_window_tokens`: each entry overrides its
    model's window (prompt plus output, in tokens). Prefer `TIERQ_MODELS`."""
    prices: dict[str, ModelPrice] = {}
    """Older spelling of the catalog's `price` (USD per 1M tokens: input, cached_input,
    output): each entry overrides its model's standard-tier price; models not listed keep the
    catalog's (this table no longer replaces it). Prefer `TIERQ_MODELS`."""
    request_timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 120.0
    """One API call's budget; a call past it is a retryable timeout (a tier's own
    `request_timeout_seconds` overrides it)."""
    result_ttl_seconds: Annotated[int, Field(ge=1)] = 86_400
    """How long job records (and their results) stay readable in Redis after their last
    change."""
    usage_ttl_seconds: Annotated[int, Field(ge=3_600)] = 90 * 86_400
    """How long the hourly usage ledger (tokens and cost per tenant and model) is kept."""
    lease_seconds: Annotated[int, Field(ge=5, le=600)] = 30
    """A running job's claim lasts this long unless its worker renews it (every third of it);
    a job whose worker died is re-queued about this long after (`tierq.worker.recovery`)."""
    shutdown_grace_seconds: Annotated[float, Field(ge=0, le=3600)] = 25.0
    """After SIGTERM (an orchestrator scaling down), running jobs get this long to finish; the
    rest are handed back to the queue and run elsewhere. Keep it under the orchestrator's own
    grace (Kubernetes: `terminationGracePeriodSeconds`, 30 by default)."""
    visibility_timeout_seconds: Annotated[int, Field(ge=60)] = 3_600
    """Redis's redelivery delay for a job whose worker died; must exceed the longest call
    timeout plus the longest retry wait (checked at start-up)."""
    max_request_bytes: Annotated[int, Field(ge=1_024, le=64 * 1024 * 1024)] = 1024 * 1024
    """Largest accepted job request, as JSON; bigger ones are refused before enqueueing."""
    max_messages_per_job: Annotated[int, Field(ge=1, le=100_000)] = 2_048
    """Most messages in one job request; longer conversations are refused before enqueueing."""
    gateway: GatewaySettings = Field(default_factory=GatewaySettings)
    """The HTTP gateway: its address, input limits and tenant quotas."""
    queue_prefix: str = "tierq."
    """Prefix of every Celery queue name; the tier name follows (`tierq.fast`)."""
    key_prefix: str = "tierq:"
    """Prefix of every Redis key tierq writes besides Celery's own."""
    metrics_port: Annotated[int, Field(ge=0, le=65_535)] = 0
    """Port of a worker's `/metrics` and `/healthz` (0: not served); the gateway serves both on
    its own port."""
    metrics_host: str = "0.0.0.0"  # noqa: S104 (a probe and a scraper reach it from outside)
    """Address a worker's `/metrics` and `/healthz` bind."""
    celery_events: bool = False
    """Celery task events (for Flower): off by default, they cost three Redis publishes per
    job."""
    liveness_grace_seconds: Annotated[float, Field(ge=1, le=3600)] = 60.0
    """A worker's `/healthz` fails once its broker (Redis) has been unreachable this long; shorter
    outages it rides out by itself."""
    log_content: bool = False
    """Logs carry prompts and completions only when an operator opts in."""
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$")
    """Log lines as `json` for machines, `console` for people, or `auto` (console on a
    terminal)."""
    log_level: str = Field(default="INFO", pattern="^(DEBUG|INFO|WARNING|ERROR)$")
    """The least severe level logged."""

    @field_validator("redis_url")
    @classmethod
    def _a_redis_url(cls, value: SecretStr) -> SecretStr:
        scheme = value.get_secret_value().partition("://")[0]
        if scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("openai_api_key", mode="before")
    @classmethod
    def _empty_key_is_no_key(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("openai_base_url", mode="before")
    @classmethod
    def _empty_url_is_the_default(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("openai_base_url")
    @classmethod
    def _an_http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("tiers", mode="before")
    @classmethod
    def _adjust_default_tiers(cls, value: Any) -> Any:
        """Lay field-by-field variables over the default tier table.

        `TIERQ_TIERS__FAST__CONCURRENCY=300` or `TIERQ_TIERS__FAST__MODELS='[...]'` change one
        field of a default tier, `TIERQ_TIERS__BULK__MODELS='[...]'` adds a tier beside the
        defaults. A table given whole (`TIERQ_TIERS`) replaces the defaults, except that its
        entries without `models` adjust the default tier of that name.
        """
        if not isinstance(value, dict):
            return value
        defaults = {
            name: tier.model_dump(exclude_defaults=True) for name, tier in default_tiers().items()
        }
        entries = {name: entry for name, entry in value.items() if name != _FIELD_BY_FIELD}
        if value.get(_FIELD_BY_FIELD):
            table = dict(defaults)
        else:
            partial = [
                name
                for name, entry in entries.items()
                if isinstance(entry, dict) and "models" not in entry and name in defaults
            ]
            if not partial:
                return entries
            table = dict(defaults) if len(partial) == len(entries) else {}
        for name, entry in entries.items():
            if isinstance(entry, dict):
                table[name] = {**defaults.get(name, {}), **table.get(name, {}), **entry}
            else:
                table[name] = entry
        return table

    @field_validator("models", mode="before")
    @classmethod
    def _over_the_shipped_models(cls, value: Any) -> Any:
        """Lay the given entries over the shipped catalog, field by field."""
        if not isinstance(value, dict):
            return value
        catalog: dict[str, Any] = {
            name: spec.model_dump(exclude_unset=True) for name, spec in shipped_models().items()
        }
        for name, entry in value.items():
            shipped = catalog.get(name)
            if isinstance(entry, ModelSpec):
                entry = entry.model_dump(exclude_unset=True)
            catalog[name] = {**shipped, **entry} if shipped and isinstance(entry, dict) else entry
        return catalog

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            _MarkFieldByFieldTiers(settings_cls, env_settings, lambda: list(os.environ)),
            _MarkFieldByFieldTiers(settings_cls, dotenv_settings, _dotenv_names),
            file_secret_settings,
        )

    @field_validator("tiers")
    @classmethod
    def _tiers_are_well_formed(
        cls, tiers: dict[str, TierSettings], info: ValidationInfo
    ) -> dict[str, TierSettings]:
        """Check the table, then add to each tier the catalog's models that name it (and no
        tier lists), so `tiers[name].models` is the whole of what a tier serves."""
        if not tiers:
            raise ValueError("at least one tier is needed")
        owner: dict[str, str] = {}
        for name, tier in tiers.items():
            if not re.match(TIER_NAME_PATTERN, name):
                raise ValueError(f"tier name {name!r} must match {TIER_NAME_PATTERN}")
            for model in tier.models:
                if model in owner:
                    raise ValueError(f"model {model!r} is in tiers {owner[model]!r} and {name!r}")
                owner[model] = name
        catalog: dict[str, ModelSpec] = info.data.get("models", {})
        joining: dict[str, list[str]] = {name: [] for name in tiers}
        for model, spec in catalog.items():
            if spec.tier in joining and model not in owner:
                joining[spec.tier].append(model)
        filled = {
            name: tier.model_copy(update={"models": [*tier.models, *joining[name]]})
            for name, tier in tiers.items()
        }
        idle = [name for name, tier in filled.items() if not tier.models]
        if idle and "models" in info.data:
            raise ValueError(
                f"tier {idle[0]!r} serves no model: list some in its `models`, or name it as "
                "the `tier` of catalog entries (TIERQ_MODELS)"
            )
        return filled

    @field_validator("redis_sentinels")
    @classmethod
    def _sentinels_are_host_port(cls, value: list[str]) -> list[str]:
        for entry in value:
            host, _, port = entry.strip().rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65_536:
                raise ValueError(f"{entry!r} is not host:port (e.g. 'sentinel-1:26379')")
        return [entry.strip() for entry in value]

    @model_validator(mode="after")
    def _durability_names_its_witnesses(self) -> Settings:
        if self.durability == "replica" and self.durability_replicas < 1:
            raise ValueError(
                "TIERQ_DURABILITY=replica needs TIERQ_DURABILITY_REPLICAS of 1 or more (the "
                "replicas that must confirm each write); use 'aof' with 0 for the primary's "
                "own disk"
            )
        return self

    @model_validator(mode="after")
    def _redelivery_cannot_overlap_a_live_job(self) -> Settings:
        # Redis hands an unacked message to another worker after the visibility timeout; a
        # call or a retry countdown longer than that would run the same job twice.
        longest = max(self.attempt_timeout_for(tier) for tier in self.tiers) + max(
            self.retry.backoff_max_seconds, self.retry.retry_after_max_seconds
        )
        if longest >= self.visibility_timeout_seconds:
            raise FieldRuleError(
                "visibility_timeout_seconds",
                f"{self.visibility_timeout_seconds} must exceed the longest attempt's calls "
                f"(TIERQ_REQUEST_TIMEOUT_SECONDS, or a tier's, plus TIERQ_SPEND__FLEX_TIMEOUT_"
                f"SECONDS where the tier runs flex) + the longest retry wait "
                f"({longest:g}), or Redis delivers a job twice",
            )
        return self

    def flex_timeout_for(self, tier: str) -> float | None:
        """A flex call's timeout in `tier`, capped by its hard limit; None when the tier's
        jobs never run at flex (flex off, or no model of the tier priced for it)."""
        settings = self.tiers[tier]
        if not (self.spend.flex and settings.flex):
            return None
        if not any("flex" in self.model_info(m).service_tier_prices for m in settings.models):
            return None
        timeout = self.spend.flex_timeout_seconds
        if settings.time_limit_seconds is not None:
            timeout = min(timeout, settings.time_limit_seconds)
        return timeout

    def attempt_timeout_for(self, tier: str) -> float:
        """The longest one attempt in `tier` can call for: a flex call, then its fallback."""
        return self.call_timeout_for(tier) + (self.flex_timeout_for(tier) or 0.0)

    def call_timeout_for(self, tier: str) -> float:
        """One call's timeout in `tier`: the tier's own, capped by its hard limit."""
        settings = self.tiers[tier]
        timeout = settings.request_timeout_seconds or self.request_timeout_seconds
        if settings.time_limit_seconds is not None:
            timeout = min(timeout, settings.time_limit_seconds)
        return timeout

    @field_validator("rate_limits")
    @classmethod
    def _each_model_in_one_group(
        cls, groups: dict[str, RateLimitGroup]
    ) -> dict[str, RateLimitGroup]:
        owner: dict[str, str] = {}
        for name, group in groups.items():
            for model in group.models or [name]:
                if model in owner:
                    raise ValueError(
                        f"model {model!r} is in limit groups {owner[model]!r} and {name!r}"
                    )
                owner[model] = name
        return groups

    def limit_group_for(self, model: str) -> str:
        """The rate-limit group whose budget `model` spends (its own name when in none)."""
        for name, group in self.rate_limits.items():
            if model in (group.models or [name]):
                return name
        return model

    def queue_for(self, tier: str) -> str:
        """The Celery queue (and Redis list) that carries a tier's jobs."""
        return f"{self.queue_prefix}{tier}"

    def tier_of(self, model: str) -> str | None:
        """The tier serving `model` (its catalog entry's, unless a tier lists it), or None."""
        for name, tier in self.tiers.items():
            if model in tier.models:
                return name
        return None

    def known_models(self) -> list[str]:
        return sorted(model for tier in self.tiers.values() for model in tier.models)

    def model_info(self, model: str) -> ModelInfo:
        """A served model's catalog facts, defaults filled in; raises `UnknownModelError`."""
        tier = self.tier_of(model)
        if tier is None:
            raise UnknownModelError(model, self.known_models())
        info = resolve(model, tier, self.tiers[tier].reasoning, self.models.get(model))
        window = self.context_windows.get(model, info.context_window_tokens)
        price = self.prices.get(model, info.price)
        return dataclasses.replace(info, context_window_tokens=window, price=price)

    def context_window_of(self, model: str) -> int | None:
        """`model`'s context window in tokens; None when unknown (then unchecked)."""
        if model in self.context_windows:
            return self.context_windows[model]
        spec = self.models.get(model)
        return spec.context_window_tokens if spec is not None else None

    def price_of(self, model: str, service_tier: str | None = None) -> ModelPrice | None:
        """What `model` costs at `service_tier` (the one the API reports on the answer); a
        dated snapshot ("gpt-4o-2024-08-06") is priced as its model. None: unknown."""
        table = {name: spec.price for name, spec in self.models.items() if spec.price}
        table.update(self.prices)
        for name, spec in self.models.items():
            if service_tier is not None and service_tier in spec.service_tier_prices:
                table[name] = spec.service_tier_prices[service_tier]
        return price_for(table, model)


# Marks a tier table built only from TIERQ_TIERS__<TIER>__<FIELD> variables.
_FIELD_BY_FIELD = "__field_by_field__"


class _MarkFieldByFieldTiers(PydanticBaseSettingsSource):
    """Wraps a source so the tier validator can tell field-by-field variables from a table."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        inner: PydanticBaseSettingsSource,
        names: Callable[[], list[str]],
    ) -> None:
        super().__init__(settings_cls)
        self._inner = inner
        self._names = names

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._inner.get_field_value(field, field_name)

    def __call__(self) -> dict[str, Any]:
        data = self._inner()
        names = {name.upper() for name in self._names()}
        whole = f"{ENV_PREFIX}TIERS"
        if (
            isinstance(data.get("tiers"), dict)
            and whole not in names
            and any(name.startswith(f"{whole}__") for name in names)
        ):
            data["tiers"] = {_FIELD_BY_FIELD: True, **data["tiers"]}
        return data


def _dotenv_names() -> list[str]:
    path = Settings.model_config.get("env_file")
    return list(dotenv_values(str(path))) if path and os.path.exists(str(path)) else []


def _variable(location: str) -> str:
    upper = location.upper()
    return upper if upper.startswith(("OPENAI_", ENV_PREFIX)) else f"{ENV_PREFIX}{upper}"


def _describe(error: ValidationError) -> str:
    lines = []
    for item in error.errors(include_url=False):
        location = "__".join(str(part) for part in item["loc"])
        message = item["msg"]
        rule = item.get("ctx", {}).get("error")
        if isinstance(rule, FieldRuleError):
            location, message = rule.field, str(rule)
        lines.append(f"{_variable(location) if location else 'settings'}: {message}")
    return "invalid settings:\n  " + "\n  ".join(lines)


def unknown_variables(names: Iterable[str]) -> list[str]:
    """`TIERQ_*` names that set nothing (a typo would otherwise leave a default in force)."""
    known = {name.upper() for name in Settings.model_fields} | {"OPENAI_API_KEY", "OPENAI_BASE_URL"}
    problems = []
    for name in names:
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper.startswith(IGNORED_PREFIXES):
            continue
        head = upper.removeprefix(ENV_PREFIX).split("__")[0]
        if head in known:
            continue
        close = difflib.get_close_matches(head, known, n=1)
        hint = f" (did you mean {ENV_PREFIX}{close[0]}?)" if close else ""
        problems.append(f"{name}: unknown setting{hint}")
    return problems


@functools.cache
def get_settings() -> Settings:
    """Read the settings once per process; a bad value raises `ConfigurationError` naming it."""
    unknown = unknown_variables([*os.environ, *_dotenv_names()])
    if unknown:
        raise ConfigurationError("invalid settings:\n  " + "\n  ".join(unknown))
    try:
        return Settings()
    except ValidationError as error:
        raise ConfigurationError(_describe(error)) from None
    except SettingsError as error:
        # Raised before validation, e.g. for a nested variable that is not valid JSON.
        field = re.search(r'field "([^"]+)"', str(error))
        variable = _variable(field.group(1)) if field else "a TIERQ_ variable"
        raise ConfigurationError(
            f"invalid settings:\n  {variable}: not valid JSON ({error.__cause__ or error})"
        ) from None
