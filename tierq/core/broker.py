"""kombu's Redis transport, with one fault fixed: a worker must survive a Redis restart.

When the broker connection drops, Celery's consumer collects the broken connection (which
detaches the transport from it) and then closes it. Closing the channel asks the transport for
connection parameters to restore unacknowledged messages, and with the transport detached kombu
raises `AttributeError` ('NoneType' object has no attribute 'hostname'), which is not among the
connection errors Celery ignores there, so the worker exits with "Unrecoverable error"
instead of reconnecting (seen here in 3 of 6 Redis restarts with jobs in flight; reported to
kombu for years in other forms, e.g. celery/kombu#582). Raising kombu's own connection error
in that state lets Celery ignore it and reconnect as it means to; the unacknowledged messages
stay in Redis and are restored later by the transport, and tierq's job claims keep a job that
comes back while it is still running from being called twice.

Selected with Celery's `broker_transport` setting; URLs stay `redis://` (or `sentinel://`, with
`SentinelTransport`, when tierq is configured with Sentinels).
"""

from __future__ import annotations

from typing import Any

import redis
from kombu.transport import redis as kombu_redis

from tierq.core.redis_clients import FollowingConnection


class Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(kombu_redis.SentinelChannel):
    """kombu's Sentinel channel (the primary looked up through Sentinels, again after a
    failover), with the same fix: a failover is exactly when the transport gets detached.
    Its connections look the primary up on every reconnect (see `FollowingConnection`)."""

    connection_class = FollowingConnection

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection is closed")
        return super()._connparams(asynchronous=asynchronous)  # type: ignore[misc]


class SentinelTransport(kombu_redis.SentinelTransport):
    """Selected for `sentinel://` broker URLs (tierq.core.redis_clients.broker_connection)."""

    Channel = SentinelChannel
