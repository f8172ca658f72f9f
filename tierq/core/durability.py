"""How long a write waits before tierq trusts it: `TIERQ_DURABILITY`.

Redis acknowledges a write once it is in the primary's memory. What survives a crash or a
failover after that depends on the deployment: a single Redis with `appendfsync everysec`
can lose about the last second, and a replica promoted by Sentinel lacks whatever the old
primary had not yet streamed to it. Redis's own answer is to wait after the write:

- `WAIT n timeout` returns once `n` replicas have received everything this connection wrote;
- `WAITAOF local n timeout` (Redis 7.2+) returns once the primary (`local` = 1) and `n`
  replicas have written it to their append-only files and fsynced them.

Both measure the *connection's* last write, so the wait is sent in the same pipeline as the
write it vouches for (`JobStore` does this). Everything the primary received before that write
(a Celery publish made on kombu's own connection, say) is covered too: the replication stream
is one ordered log, and a replica that has an offset has everything before it.

A shortfall is not an error Redis raises: the wait returns how many confirmed, and the caller
decides. A submission raises `NotDurableError` (the app may resend with its idempotency key); a
worker logs and goes on, since holding a paid answer back would not make it safer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

from tierq.core.errors import ConfigurationError
from tierq.core.settings import Settings


@dataclass(frozen=True, slots=True)
class Confirmation:
    """What a wait reported: how many confirmed, out of how many were asked for."""

    replicas: int
    replicas_wanted: int
    local_fsynced: bool = True

    @property
    def durable(self) -> bool:
        return self.local_fsynced and self.replicas >= self.replicas_wanted

    def describe(self) -> str:
        disk = "" if self.local_fsynced else "the primary had not fsynced it, and "
        return f"{disk}{self.replicas} of {self.replicas_wanted} replicas confirmed it"


@dataclass(frozen=True, slots=True)
class Durability:
    """One deployment's durability setting, turned into the Redis command that waits for it."""

    mode: str
    replicas: int
    timeout_seconds: float

    @classmethod
    def from_settings(cls, settings: Settings) -> Durability:
        return cls(
            settings.durability, settings.durability_replicas, settings.durability_timeout_seconds
        )

    @property
    def waits(self) -> bool:
        """Whether writes are followed by a wait (`memory` trusts Redis's acknowledgement)."""
        return self.mode != "memory"

    def queue_wait(self, pipe: Any) -> None:
        """Append the wait to `pipe`, after the write it vouches for."""
        timeout_ms = max(1, round(self.timeout_seconds * 1000))
        if self.mode == "aof":
            pipe.execute_command("WAITAOF", 1, self.replicas, timeout_ms)
        else:
            pipe.execute_command("WAIT", self.replicas, timeout_ms)

    def read(self, reply: Any) -> Confirmation:
        """The wait's reply (what `queue_wait` appended) as a `Confirmation`."""
        if isinstance(reply, redis.ResponseError):
            raise self.unsupported(reply)
        if self.mode == "aof":
            local, replicas = (int(part) for part in reply)
            return Confirmation(replicas, self.replicas, local_fsynced=local >= 1)
        return Confirmation(int(reply), self.replicas)

    def unsupported(self, error: redis.ResponseError) -> ConfigurationError:
        command = "WAITAOF (Redis 7.2 or newer)" if self.mode == "aof" else "WAIT"
        return ConfigurationError(
            f"TIERQ_DURABILITY={self.mode} needs {command}, which Redis refused: {error}"
        )


# Trust Redis's acknowledgement: no wait (the default).
MEMORY = Durability("memory", 0, 1.0)
