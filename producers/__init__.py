"""tierq's producer side: submit Chat Completions jobs and read their results.

Imports the shared job contract and settings from `worker`, never `openai` or the task bodies.
"""

from producers.aio import AsyncTierqClient
from producers.client import TierqClient
from worker.contract import JobRequest
from worker.errors import (
    BrokerUnavailableError,
    InvalidJobError,
    JobNotFoundError,
    JobWaitTimeout,
    TierqError,
    UnknownModelError,
)
from worker.results import JobResult, JobStatus

__all__ = [
    "AsyncTierqClient",
    "BrokerUnavailableError",
    "InvalidJobError",
    "JobNotFoundError",
    "JobRequest",
    "JobResult",
    "JobStatus",
    "JobWaitTimeout",
    "TierqClient",
    "TierqError",
    "UnknownModelError",
]
