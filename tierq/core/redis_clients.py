"""Every Redis connection tierq makes, in one place: to `TIERQ_REDIS_URL`, or through Sentinel.

With `TIERQ_REDIS_SENTINELS` set, clients ask the Sentinels for the primary named
`TIERQ_REDIS_SENTINEL_MASTER` and follow it through a failover: redis-py's Sentinel-managed
connections notice a lost or demoted primary (a `READONLY` answer becomes a connection error)
and look the primary up again on the next connection, so a client with retries (the job
store's) rides a failover out, and one without raises `redis.ConnectionError`, which every
caller already treats as "Redis is away for now". The URL then gives only what the primary
needs besides its address: password, user name, database, TLS.

Celery's broker connection is kombu's, not these: `broker_connection` gives the URL and
transport options that make kombu do the same (`sentinel://` URLs, `master_name`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.connection import parse_url

from tierq.core.settings import Settings


@dataclass(frozen=True, slots=True)
class BrokerConnection:
    """What Celery needs to reach the broker: URL, kombu transport, extra transport options."""

    url: str
    transport: str
    transport_options: dict[str, Any]


class FollowingConnection(redis.sentinel.SentinelManagedConnection):
    """A Sentinel-managed connection that asks for the primary's address on every socket it
    opens, retries included.

    redis-py's own looks the primary up only in `connect()`; a command that finds its socket
    dead reconnects through `connect_check_health()`, at the address the connection had, so
    its retries all went to the dead primary long after a failover had named the new one
    (redis/redis-py#3874; a job's claim failed about 9 s after the kill, 7 s after the
    failover ended). Looked up here, a retry goes to whichever primary the Sentinels name.
    """

    def _connect(self) -> Any:
        if self.connection_pool.is_master:
            self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()  # type: ignore[no-untyped-call]


class AsyncFollowingConnection(redis.asyncio.sentinel.SentinelManagedConnection):
    """`FollowingConnection` for asyncio."""

    async def _connect(self) -> None:
        if self.connection_pool.is_master:
            self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()  # type: ignore[no-untyped-call]


def sentinel_addresses(settings: Settings) -> list[tuple[str, int]]:
    """The Sentinels as (host, port) (the settings checked each is host:port)."""
    addresses = []
    for entry in settings.redis_sentinels:
        host, _, port = entry.rpartition(":")
        addresses.append((host.strip("[]"), int(port)))
    return addresses


def _primary_options(settings: Settings) -> dict[str, Any]:
    """The URL's connection options except the address (which the Sentinels give)."""
    options: dict[str, Any] = parse_url(  # type: ignore[no-untyped-call]
        settings.redis_url.get_secret_value()
    )
    for address_part in ("host", "port", "path"):
        options.pop(address_part, None)
    return options


def _sentinel_options(settings: Settings, options: dict[str, Any]) -> dict[str, Any]:
    """Options for talking to the Sentinels themselves: their own password, short timeouts."""
    sentinel_options: dict[str, Any] = {
        name: value for name, value in options.items() if name.startswith("socket_")
    }
    if settings.redis_sentinel_password is not None:
        sentinel_options["password"] = settings.redis_sentinel_password.get_secret_value()
    return sentinel_options


def sync_client(settings: Settings, **options: Any) -> redis.Redis:
    """A pooled blocking client to the primary; `options` as for `redis.Redis` (timeouts,
    retry, decoding)."""
    if not settings.redis_sentinels:
        return redis.Redis.from_url(settings.redis_url.get_secret_value(), **options)
    merged = {**_primary_options(settings), **options}
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        sentinel_addresses(settings),
        sentinel_kwargs=_sentinel_options(settings, merged),
        **merged,
    )
    if "connection_class" not in merged:  # TLS keeps redis-py's own
        merged["connection_class"] = FollowingConnection
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_master, **merged
    )
    return client


def async_client(
    settings: Settings, *, wait_for_connection_seconds: float | None = None, **options: Any
) -> redis.asyncio.Redis:
    """As `sync_client`, for asyncio. With `wait_for_connection_seconds` (and
    `max_connections`), a command that finds the pool's connections all in use waits that
    long for one instead of failing at once ("Too many connections"): a burst of requests
    queues for the pool. (Through Sentinels, redis-py has no waiting pool: it fails at once.)"""
    if not settings.redis_sentinels:
        url = settings.redis_url.get_secret_value()
        if wait_for_connection_seconds is None:
            return redis.asyncio.Redis.from_url(url, **options)
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url, timeout=wait_for_connection_seconds, **options
        )
        return redis.asyncio.Redis.from_pool(pool)  # owns the pool: aclose() closes it
    merged = {**_primary_options(settings), **options}
    if "connection_class" in merged:  # TLS: the asyncio variant of parse_url's class
        merged.pop("connection_class")
        merged["ssl"] = True
    sentinel = redis.asyncio.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        sentinel_addresses(settings),
        sentinel_kwargs=_sentinel_options(settings, merged),
        **merged,
    )
    if not merged.get("ssl"):
        merged["connection_class"] = AsyncFollowingConnection
    client: redis.asyncio.Redis = sentinel.master_for(settings.redis_sentinel_master, **merged)
    return client


def broker_connection(settings: Settings) -> BrokerConnection:
    """Celery's broker URL, transport and Sentinel options for these settings."""
    url = settings.redis_url.get_secret_value()
    if not settings.redis_sentinels:
        return BrokerConnection(url, "tierq.core.broker:Transport", {})
    options = _primary_options(settings)
    credentials = ""
    if options.get("password") is not None:
        user = options.get("username") or ""
        credentials = f"{quote(user, safe='')}:{quote(options['password'], safe='')}@"
    database = options.get("db", 0)
    # kombu reads the first URL's credentials and database, and every URL's address.
    urls = ";".join(
        f"sentinel://{credentials}{host}:{port}/{database}"
        for host, port in sentinel_addresses(settings)
    )
    transport_options: dict[str, Any] = {"master_name": settings.redis_sentinel_master}
    sentinel_options = _sentinel_options(settings, {})
    if sentinel_options:
        transport_options["sentinel_kwargs"] = sentinel_options
    return BrokerConnection(urls, "tierq.core.broker:SentinelTransport", transport_options)
