"""tierq: OpenAI Chat Completions calls as durable, rate-limited Celery jobs, one queue per
model tier.

The public face for apps is this module: `from tierq import TierqClient`. Everything else is
organised by role (docs/architecture.md):

- `tierq.core`: what both sides share: settings, the job contract, tiers, Redis keys and Lua
  scripts, the job store, results and errors.
- `tierq.producers`: what apps run: the Python clients, the `tierq` job commands, the gateway.
- `tierq.worker`: what runs the jobs: the Celery worker, its API calls, limits and recovery.
- `tierq.devkit`: the demo and the helpers that start local processes for tests.

Names are imported lazily (PEP 562), so `import tierq.worker...` in a worker process does not
load the producer side. Every error a producer can meet (docs/jobs.md, "Errors a caller sees")
is exported here, beside the clients that raise it; tests/test_public_api.py checks the page
against this list.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tierq.core.contract import JobRequest
    from tierq.core.errors import (
        BrokerUnavailableError,
        ConfigurationError,
        IdempotencyConflictError,
        InvalidJobError,
        JobNotFoundError,
        JobNotSucceededError,
        JobWaitTimeout,
        NotDurableError,
        PayloadTooLargeError,
        RequestTooLargeError,
        StoreFullError,
        StructuredOutputError,
        StructuredOutputInvalid,
        StructuredOutputRefusal,
        StructuredOutputTruncated,
        TierqError,
        UnknownModelError,
    )
    from tierq.core.results import JobResult, JobStatus
    from tierq.producers.aio import AsyncTierqClient
    from tierq.producers.client import TierqClient

_EXPORTS = {
    "AsyncTierqClient": "tierq.producers.aio",
    "TierqClient": "tierq.producers.client",
    "JobRequest": "tierq.core.contract",
    "JobResult": "tierq.core.results",
    "JobStatus": "tierq.core.results",
    "TierqError": "tierq.core.errors",
    "BrokerUnavailableError": "tierq.core.errors",
    "ConfigurationError": "tierq.core.errors",
    "IdempotencyConflictError": "tierq.core.errors",
    "InvalidJobError": "tierq.core.errors",
    "JobNotFoundError": "tierq.core.errors",
    "JobWaitTimeout": "tierq.core.errors",
    "NotDurableError": "tierq.core.errors",
    "StoreFullError": "tierq.core.errors",
    "PayloadTooLargeError": "tierq.core.errors",
    "RequestTooLargeError": "tierq.core.errors",
    "UnknownModelError": "tierq.core.errors",
    "JobNotSucceededError": "tierq.core.errors",
    "StructuredOutputError": "tierq.core.errors",
    "StructuredOutputInvalid": "tierq.core.errors",
    "StructuredOutputRefusal": "tierq.core.errors",
    "StructuredOutputTruncated": "tierq.core.errors",
}

__all__ = [
    "AsyncTierqClient",
    "BrokerUnavailableError",
    "ConfigurationError",
    "IdempotencyConflictError",
    "InvalidJobError",
    "JobNotFoundError",
    "JobNotSucceededError",
    "JobRequest",
    "JobResult",
    "JobStatus",
    "JobWaitTimeout",
    "NotDurableError",
    "PayloadTooLargeError",
    "RequestTooLargeError",
    "StoreFullError",
    "StructuredOutputError",
    "StructuredOutputInvalid",
    "StructuredOutputRefusal",
    "StructuredOutputTruncated",
    "TierqClient",
    "TierqError",
    "UnknownModelError",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tierq' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
