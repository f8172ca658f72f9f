"""A streamed job's deltas, published to its Redis Stream as the worker receives them.

The gateway's `GET /v1/jobs/{id}/events` reads the stream (`Keys.deltas`) and forwards each
entry as a Server-Sent Event. Each entry has one field, `delta`, whose JSON the gateway sends
unchanged as the event's data::

    {"attempt": 2, "index": 0, "content": "Hel"}
    {"attempt": 2, "index": 0, "tool_calls": [{"index": 0, "function": {"arguments": "{\\"a"}}]}
    {"attempt": 2, "index": 0, "content": "lo", "finish_reason": "stop"}

with `content`, `refusal`, `tool_calls` (the API's fragments) and `finish_reason` present only
when the chunk carried them. A retried job streams again from scratch: an attempt's first write
deletes the stream, and the attempt number tells a client still connected to start over.

Best-effort by design: the whole answer lands in the job record anyway, so a delta lost to a
Redis fault costs a watcher some liveliness, never the job. The first publishing error of an
attempt is logged once and the rest of that attempt publishes nothing (a Redis that failed one
write would slow every chunk after it), and the client used has no retries of its own.

Round trips: entries are buffered and written in one pipeline (XADD each, EXPIRE) for the first
chunk after a quiet spell, then at most every `FLUSH_INTERVAL_SECONDS` or `FLUSH_CHUNKS` chunks,
and once when the stream ends. Text fragments of one choice buffered together are joined into
one entry, so a fast stream costs about 20 entries a second per choice, not one per token. A
chunk that arrives just after a write and is followed by a long silence waits for the next
chunk or the end of the stream: the price of having no timer thread per job.
"""

from __future__ import annotations

import json
import math
import time
from typing import TYPE_CHECKING, Any

import redis
import structlog

from tierq.core.jobstore import connect
from tierq.core.keys import DELTA_FIELD, Keys
from tierq.core.settings import Settings

if TYPE_CHECKING:
    # For annotations only: importing this module needs no SDK.
    from openai.types.chat import ChatCompletionChunk

log = structlog.get_logger("tierq.worker")

# Entries kept per job (trimmed approximately, which is cheap): a late watcher of a very long
# answer misses its start, and reads the whole answer in the final record.
MAX_ENTRIES = 20_000
# Longest a buffered chunk waits for the next write while chunks keep coming.
FLUSH_INTERVAL_SECONDS = 0.05
# Chunks buffered before a write even within the interval (a burst arriving all at once).
FLUSH_CHUNKS = 64
# Socket timeout of the publishing client: a hung Redis costs one attempt this much, once.
PUBLISH_TIMEOUT_SECONDS = 1.0

_TEXT_ONLY = frozenset({"attempt", "index", "content", "refusal"})


def delta_entries(chunk: ChatCompletionChunk, attempt: int) -> list[dict[str, Any]]:
    """The entries a chunk gives, one per choice that carries something a watcher shows.

    The role-only opening delta and the usage chunk (no choices) give none.
    """
    entries: list[dict[str, Any]] = []
    for choice in chunk.choices:
        delta = choice.delta
        entry: dict[str, Any] = {"attempt": attempt, "index": choice.index}
        if delta.content:
            entry["content"] = delta.content
        if delta.refusal:
            entry["refusal"] = delta.refusal
        if delta.tool_calls:
            entry["tool_calls"] = [
                call.model_dump(mode="json", exclude_none=True) for call in delta.tool_calls
            ]
        if choice.finish_reason:
            entry["finish_reason"] = choice.finish_reason
        if len(entry) > 2:
            entries.append(entry)
    return entries


def coalesce(buffer: list[dict[str, Any]], entry: dict[str, Any]) -> None:
    """Append `entry`, or join it to the last buffered entry of the same choice.

    Joined only onto text (content, refusal) and only without tool-call fragments, whose merge
    rules belong to the client: joining keeps every field's text in order.
    """
    last = buffer[-1] if buffer else None
    if (
        last is None
        or last["index"] != entry["index"]
        or last["attempt"] != entry["attempt"]
        or not last.keys() <= _TEXT_ONLY
        or "tool_calls" in entry
    ):
        buffer.append(entry)
        return
    for field in ("content", "refusal"):
        if field in entry:
            last[field] = last.get(field, "") + entry[field]
    if "finish_reason" in entry:
        last["finish_reason"] = entry["finish_reason"]


def encode(entry: dict[str, Any]) -> str:
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False)


# A write slower than this stops the attempt's publishing (see DeltaPublisher._write).
SLOW_WRITE_SECONDS = 0.25
# How long a finished call's deltas stay readable.
ENDED_TTL_SECONDS = 3_600


class DeltaStreams:
    """The worker process's side of the delta streams; shared by the pool's threads."""

    def __init__(self, client: redis.Redis, keys: Keys, ttl_seconds: int) -> None:
        self._redis = client
        self._keys = keys
        self._ttl_seconds = ttl_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> DeltaStreams:
        # A client of its own, without the job store's retries: a delta is not worth waiting
        # out an outage for, while the stream it came from keeps running against its limit.
        client = connect(settings, socket_timeout_seconds=PUBLISH_TIMEOUT_SECONDS, retries=0)
        return cls(client, Keys(settings.key_prefix), settings.result_ttl_seconds)

    def publisher(self, job_id: str, attempt: int) -> DeltaPublisher:
        return DeltaPublisher(self, self._keys.deltas(job_id), attempt)

    def write(
        self, key: str, entries: list[dict[str, Any]], *, restart: bool, ended: bool = False
    ) -> None:
        """One round trip: (the earlier attempts' entries deleted,) the entries, the TTL.

        While the call runs the stream lives as long as the job's record; once it has ended
        only `ENDED_TTL_SECONDS`, for watchers reconnecting late: the record holds the answer.
        """
        pipe = self._redis.pipeline(transaction=False)
        if restart:
            pipe.delete(key)
        for entry in entries:
            pipe.xadd(key, {DELTA_FIELD: encode(entry)}, maxlen=MAX_ENTRIES, approximate=True)
        pipe.expire(key, min(self._ttl_seconds, ENDED_TTL_SECONDS) if ended else self._ttl_seconds)
        pipe.execute()


class DeltaPublisher:
    """One attempt's publisher: `publish` is the call's per-chunk callback, `flush` its end.

    Used by the one thread running the attempt, so it holds no lock.
    """

    def __init__(self, streams: DeltaStreams, key: str, attempt: int) -> None:
        self._streams = streams
        self._key = key
        self._attempt = attempt
        self._buffer: list[dict[str, Any]] = []
        self._chunks = 0
        self._written_at = -math.inf
        self._restarted = False
        self._broken = False

    def publish(self, chunk: ChatCompletionChunk) -> None:
        if self._broken:
            return
        try:
            entries = delta_entries(chunk, self._attempt)
        except Exception as error:  # an odd chunk must not fail the answer it belongs to
            self._give_up(f"{type(error).__name__}: {error}")
            return
        if not entries:
            return
        for entry in entries:
            coalesce(self._buffer, entry)
        self._chunks += 1
        now = time.monotonic()
        if self._chunks >= FLUSH_CHUNKS or now - self._written_at >= FLUSH_INTERVAL_SECONDS:
            self._write(now)

    def flush(self) -> None:
        """Write what is buffered; called when the stream ends, however it ends."""
        self._write(time.monotonic(), ended=True)

    def _write(self, now: float, *, ended: bool = False) -> None:
        if self._broken or not (self._buffer or (ended and self._restarted)):
            return
        entries, self._buffer, self._chunks = self._buffer, [], 0
        try:
            self._streams.write(self._key, entries, restart=not self._restarted, ended=ended)
        except Exception as error:  # publishing must never fail a paid answer
            self._give_up(f"{type(error).__name__}: {error}")
            return
        self._restarted = True
        # The interval runs from the end of the write: a slow Redis is written to less often,
        # not once per chunk.
        self._written_at = time.monotonic()
        if self._written_at - now > SLOW_WRITE_SECONDS:
            # A Redis this slow would hold up the thread reading the API's stream, and could
            # push a long answer past its tier's time limit: the watchers lose the rest.
            self._give_up(f"a write took {self._written_at - now:.2f}s")

    def _give_up(self, reason: str) -> None:
        self._broken = True
        log.warning("deltas.publish_failed", error=reason)
