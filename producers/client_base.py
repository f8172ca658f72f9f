"""The core both clients are thin faces of: everything about a call that needs no I/O.

openai-python writes a request's logic once in `_base_client.py` (building it, reading the
answer, deciding on errors) and keeps two shells, sync and async, that only send it. tierq's
clients do the same. `BaseClient` holds the settings and the key names (`tierq.core.keys`),
starts waits (`Waiter`, waiting.py), decodes what Redis answers, and turns Redis and kombu
faults into tierq's errors; `Submission` (submission.py) validates and builds what a submit
writes. `TierqClient` (client.py) does the I/O with redis-py and Celery's producer;
`AsyncTierqClient` (aio.py) with `redis.asyncio`, handing the blocking Celery publish to a
thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import redis
from kombu.exceptions import OperationalError

from tierq.core.errors import BrokerUnavailableError, InvalidJobError, JobNotFoundError
from tierq.core.keys import Keys, as_text
from tierq.core.results import JobResult, JobStatus
from tierq.core.settings import Settings, get_settings
from tierq.producers.waiting import Waiter

# A producer's Redis commands give up in seconds, so deadlines (wait's timeout) hold.
PRODUCER_SOCKET_TIMEOUT_SECONDS = 2.0
PRODUCER_REDIS_RETRIES = 3
# A retried dead letter is re-queued by a worker's reaper if its publish never arrives.
RETRY_REQUEUE_AFTER_SECONDS = 60.0
# What a publish through Celery's producer raises when the broker is out of reach (kombu's
# error, redis-py's, a socket's), and Ctrl-C, which is cleaned up after the same way.
PUBLISH_FAULTS = (OperationalError, redis.RedisError, OSError, KeyboardInterrupt)


def redis_unreachable(error: Exception, doing: str = "") -> BrokerUnavailableError:
    """tierq's error for a Redis fault; `doing` (" to record the job") says what failed."""
    return BrokerUnavailableError(f"cannot reach Redis{doing}: {error}")


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """Raise `BrokerUnavailableError` for a Redis fault in the block (sync or async calls)."""
    try:
        yield
    except redis.RedisError as error:
        raise redis_unreachable(error) from None


def decode_record(raw: bytes | str | None) -> JobResult | None:
    """A job hash's `record` field as a `JobResult`; None for an unknown or expired job."""
    return JobResult.from_json(raw) if raw else None


def decode_status(raw: bytes | str | None) -> JobStatus | None:
    """A job hash's `status` field; None for an unknown or expired job."""
    return JobStatus(as_text(raw)) if raw else None


class BaseClient:
    """Settings, key names, and the steps of each call that both faces share."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._keys = Keys(self.settings.key_prefix)

    def _waiter(self, job_ids: Sequence[str], timeout: float) -> Waiter:
        return Waiter(job_ids, timeout, self._keys)

    @staticmethod
    def _found(job_id: str, record: JobResult | None) -> JobResult:
        """The record read for `job_id`; raises `JobNotFoundError` for an unknown or expired id."""
        if record is None:
            raise JobNotFoundError(job_id)
        return record

    @staticmethod
    def _not_a_dead_letter(record: JobResult) -> InvalidJobError:
        return InvalidJobError(
            f"job {record.job_id!r} is not a dead letter (status: {record.status.value}); "
            "only jobs that failed after their attempts (tierq dead) can be retried",
            [{"field": "job_id", "message": "not a dead letter"}],
        )

    @staticmethod
    def _republish_failed(job_id: str, error: BaseException) -> BrokerUnavailableError:
        return BrokerUnavailableError(
            f"job {job_id} is queued again but could not be published ({error}); a worker's "
            f"reaper will publish it within {RETRY_REQUEUE_AFTER_SECONDS:.0f}s"
        )
