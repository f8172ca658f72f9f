"""One RPM and TPM budget per model (or group of models), shared by every worker through Redis.

Celery's `rate_limit` is per worker process, so N workers offer N times the limit. Here each
admission runs one Lua script that checks and spends both budgets atomically, whatever the
number of workers. The algorithm is GCRA (the generic cell rate algorithm, a leaky bucket kept as
one "theoretical arrival time" per budget): it paces calls evenly, as the API enforces its
per-minute limits over sub-second windows, and allows a burst of `burst_seconds` of budget.
Admission *reserves* the earliest start time instead of answering yes/no, so waiting callers
are served in order and never stampede when the budget refills. The scripts are
lua/ratelimit_acquire.lua, lua/ratelimit_adjust.lua, lua/ratelimit_pause.lua and
lua/ratelimit_count.lua.

Why hand-written: `limits` (PyPI) keeps one counter per limit with no atomic check of two limits
together and no even pacing; `redis-cell` does GCRA but is a Redis module that managed Redis
services and the stock server do not load. The script is short and its behaviour is tested
against real Redis and the simulator.

The API's own view tightens the shared budget for every worker at once: a 429 or
`x-ratelimit-remaining-*` headers saying the budget is spent pause the group until the API
says it refills; `x-ratelimit-limit-*` headers teach the limits when none are configured, and
lower a configured limit that is higher than what the API allows.

Use is counted for every group, limited or not, in per-minute counters that `tierq limits` and
`tierq stats` read (never used to admit a call). A group with no limit known is admitted
without a script call (see `SharedRateLimiter`), so its counts are held in the process and
added to Redis in one write a second later (`USAGE_FLUSH_SECONDS`): a reader sees them that
much later, and a process that stops or dies loses at most its last second's counts.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import redis

from tierq.core import scripts
from tierq.core.keys import Keys
from tierq.core.ratelimit_headers import RateLimitHeaders
from tierq.core.settings import LimiterSettings, Settings

# Limits of -1 tell the script to use the limits learned from the API's headers, if any.
LEARNED = -1
# Seconds a usage counter (per group and minute) is kept, for `tierq limits`.
USAGE_TTL_SECONDS = 180
# How long a process trusts that a group has no limit at all before asking Redis again.
OPEN_GROUP_RECHECK_SECONDS = 1.0
# How long a process holds the use counted for groups with no limit before adding it to Redis:
# one write a second per process, instead of one round trip per call.
USAGE_FLUSH_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Admission:
    """The limiter's answer: start after `wait_seconds`, or (not reserved) come back later."""

    reserved: bool
    wait_seconds: float
    too_large: bool = False
    tpm: int = 0


@dataclass(frozen=True, slots=True)
class GroupUsage:
    """One group's limits and use, for `tierq limits`."""

    group: str
    models: list[str]
    rpm: int | None
    tpm: int | None
    source: str
    requests_this_minute: int
    tokens_this_minute: int
    requests_last_minute: int
    tokens_last_minute: int
    paused_for_seconds: float
    next_start_in_seconds: float


class SharedRateLimiter:
    """Admits calls within each group's RPM and TPM; thread-safe, one per process is enough.

    A group with no limit configured, none learned and no pause has nothing to admit against;
    after one script call says so, the process skips the script for that group for
    `OPEN_GROUP_RECHECK_SECONDS` (a limit learned or a 429 seen by any worker is picked up
    within that time; one seen by this process, at once). The calls it admits that way are still
    counted: held here and added to the group's usage counters by `flush`, which a timer runs
    `USAGE_FLUSH_SECONDS` after the first call held. Skipping the round trip is what keeps a
    worker's cost per job at 0 ms latency level with a bare Celery task
    (docs/performance.md); one write a second keeps it so.
    """

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._settings = settings
        self._config: LimiterSettings = settings.limiter
        self._keys = Keys(settings.key_prefix)
        self._acquire = scripts.register(client, "ratelimit_acquire")
        self._adjust = scripts.register(client, "ratelimit_adjust")
        self._pause = scripts.register(client, "ratelimit_pause")
        self._count = scripts.register(client, "ratelimit_count")
        self._learned: dict[str, tuple[int | None, int | None]] = {}
        self._open_until: dict[str, float] = {}
        self._lock = threading.Lock()
        # Use of groups admitted without the script, by group: [requests, tokens].
        self._held: dict[str, list[int]] = {}
        self._flusher: threading.Timer | None = None

    def _script_keys(self, group: str) -> list[str]:
        """The acquire and adjust scripts' KEYS: the group's state, and its usage keys' prefix
        (the scripts add the minute by Redis's clock)."""
        return [self._keys.ratelimit(group), self._keys.ratelimit_usage_prefix(group)]

    def _limits(self, group: str) -> tuple[int, int]:
        configured = self._settings.rate_limits.get(group)
        rpm = configured.rpm if configured and configured.rpm is not None else LEARNED
        tpm = configured.tpm if configured and configured.tpm is not None else LEARNED
        return rpm, tpm

    def acquire(self, group: str, cost_tokens: int) -> Admission:
        """Reserve a start time for one call costing `cost_tokens` (prompt + output reserved)."""
        if self.is_open(group):
            self._hold(group, 1, cost_tokens)
            return Admission(reserved=True, wait_seconds=0.0)
        rpm, tpm = self._limits(group)
        status, wait, limit = self._acquire(
            keys=self._script_keys(group),
            args=[
                rpm,
                tpm,
                cost_tokens,
                self._config.burst_seconds,
                self._config.headroom,
                self._config.max_wait_in_slot_seconds,
                USAGE_TTL_SECONDS,
            ],
        )
        if int(status) == 2:
            self._open_until[group] = time.monotonic() + OPEN_GROUP_RECHECK_SECONDS
            return Admission(reserved=True, wait_seconds=0.0)
        return Admission(
            reserved=int(status) == 1,
            wait_seconds=max(0.0, float(wait)),
            too_large=int(status) == -1,
            tpm=int(float(limit)),
        )

    def is_open(self, group: str) -> bool:
        """Whether this process believes `group` has no limit (no budget to correct)."""
        return self._open_until.get(group, 0.0) > time.monotonic()

    def adjust(self, group: str, delta_tokens: int) -> None:
        """Correct a call's spent tokens by `delta_tokens` once its real usage is known."""
        if not delta_tokens:
            return
        if self.is_open(group):
            self._hold(group, 0, delta_tokens)  # no budget to correct, only the count
        else:
            _, tpm = self._limits(group)
            self._adjust(
                keys=self._script_keys(group),
                args=[tpm, delta_tokens, self._config.headroom, USAGE_TTL_SECONDS],
            )

    def _hold(self, group: str, requests: int, tokens: int) -> None:
        """Count use admitted without a script call; `flush` adds it to Redis shortly."""
        with self._lock:
            held = self._held.setdefault(group, [0, 0])
            held[0] += requests
            held[1] += tokens
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        """Start the timer that flushes the held use, unless one is running (lock held)."""
        if self._flusher is None:
            self._flusher = threading.Timer(USAGE_FLUSH_SECONDS, self._flush_later)
            self._flusher.daemon = True
            self._flusher.start()

    def flush(self) -> None:
        """Add the use held for groups with no limit to their usage counters now (one pipelined
        round trip); `tierq limits` and `tierq stats` then show it. Raises `redis.RedisError`
        with the counts kept, to be added by the next flush."""
        with self._lock:
            held, self._held = self._held, {}
        if not held:
            return
        pipe = self._redis.pipeline(transaction=False)
        for group, (requests, tokens) in held.items():
            self._count(
                keys=[self._keys.ratelimit_usage_prefix(group)],
                args=[requests, tokens, USAGE_TTL_SECONDS],
                client=pipe,
            )
        try:
            pipe.execute()
        except redis.RedisError:
            with self._lock:
                for group, (requests, tokens) in held.items():
                    kept = self._held.setdefault(group, [0, 0])
                    kept[0] += requests
                    kept[1] += tokens
            raise

    def _flush_later(self) -> None:
        """The timer's flush: a Redis fault keeps the counts and tries again a second later."""
        with self._lock:
            self._flusher = None
        try:
            self.flush()
        except redis.RedisError:
            with self._lock:
                self._schedule_flush()

    def pause(self, group: str, seconds: float) -> float:
        """Hold every worker's calls in `group` for `seconds` (a 429, or the API says "spent"),
        then let them resume at the steady rate, not in a burst."""
        self._open_until.pop(group, None)
        rpm, tpm = self._limits(group)
        paused = self._pause(
            keys=[self._keys.ratelimit(group)],
            args=[max(0.0, seconds), rpm, tpm, self._config.burst_seconds, self._config.headroom],
        )
        return float(paused)

    def paused_for(self, group: str) -> float:
        """Seconds `group` stays paused, by Redis's clock (the scripts'); 0 when it is not."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.time()
        pipe.hget(self._keys.ratelimit(group), "pause_until")
        (seconds, micros), until = pipe.execute()
        now = float(seconds) + float(micros) / 1_000_000
        return max(0.0, float(until or 0) - now)

    def learn(self, group: str, headers: RateLimitHeaders) -> None:
        """Remember the API's per-minute limits; written only when they change."""
        learned = (headers.limit_requests, headers.limit_tokens)
        if learned == (None, None):
            return
        with self._lock:
            if self._learned.get(group) == learned:
                return
            self._learned[group] = learned
        self._open_until.pop(group, None)
        items: list[str | int] = []
        for name, value in (("learned_rpm", learned[0]), ("learned_tpm", learned[1])):
            if value is not None:
                items += [name, value]
        self._redis.hset(self._keys.ratelimit(group), items=items)

    def usage(self, group: str, models: list[str]) -> GroupUsage:
        """`group`'s limits and its use this minute and last (by Redis's clock), counted for
        every call admitted by any worker, whether or not the group has a limit."""
        now_seconds, micros = self._redis.time()
        now = now_seconds + micros / 1_000_000
        minute = int(now // 60)
        pipe = self._redis.pipeline(transaction=False)
        pipe.hgetall(self._keys.ratelimit(group))
        pipe.hgetall(self._keys.ratelimit_usage(group, minute))
        pipe.hgetall(self._keys.ratelimit_usage(group, minute - 1))
        state, current, previous = (_decode(raw) for raw in pipe.execute())
        configured = self._settings.rate_limits.get(group)
        rpm = configured.rpm if configured and configured.rpm is not None else None
        tpm = configured.tpm if configured and configured.tpm is not None else None
        source = "configured" if rpm is not None or tpm is not None else "none"
        learned_rpm = int(state["learned_rpm"]) if "learned_rpm" in state else None
        learned_tpm = int(state["learned_tpm"]) if "learned_tpm" in state else None
        if learned_rpm is not None and (rpm is None or learned_rpm < rpm):
            rpm, source = learned_rpm, "learned"
        if learned_tpm is not None and (tpm is None or learned_tpm < tpm):
            tpm, source = learned_tpm, "learned"
        tat = max(float(state.get("tat_r", 0)), float(state.get("tat_t", 0)))
        return GroupUsage(
            group=group,
            models=models,
            rpm=rpm,
            tpm=tpm,
            source=source,
            requests_this_minute=int(current.get("requests", 0)),
            tokens_this_minute=int(current.get("tokens", 0)),
            requests_last_minute=int(previous.get("requests", 0)),
            tokens_last_minute=int(previous.get("tokens", 0)),
            paused_for_seconds=max(0.0, float(state.get("pause_until", 0)) - now),
            next_start_in_seconds=max(0.0, tat - self._config.burst_seconds - now),
        )


def _decode(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in raw.items()}
