"""A worker's own view for operators: a heartbeat in Redis, /metrics and a liveness probe.

- Heartbeat: every few seconds the worker writes its tier, concurrency and jobs in flight to
  one Redis hash (`Keys.workers`), which `tierq stats` reads; an entry not refreshed for
  `tierq.core.heartbeats.STALE_AFTER_SECONDS` is a worker that is gone.
- Liveness: /healthz answers 200 while the worker has its broker, 503 once Redis has not
  answered for `liveness_grace_seconds` or Celery's consumer has lost its connection for as
  long. The grace lets the worker ride out a Redis restart on its own (it reconnects), so an
  orchestrator restarts only a worker that stays cut off.
- /metrics: the Prometheus registry (worker/metrics.py).

The HTTP server is the standard library's WSGI server, a thread per request (a slow scrape
never holds up a probe): two routes need no framework, and prometheus-client's own server
cannot answer /healthz.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
import structlog

from tierq.core.errors import ConfigurationError
from tierq.core.exposition import exposed_registry, render
from tierq.core.heartbeats import HEARTBEAT_SECONDS
from tierq.core.keys import Keys
from tierq.core.settings import Settings
from tierq.worker.metrics import IN_FLIGHT

log = structlog.get_logger("tierq.worker")
StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _QuietHandler(WSGIRequestHandler):
    # A client that connects and says nothing is dropped after this long.
    timeout = 5

    def log_message(self, format: str, *args: Any) -> None:
        """Probes every few seconds would flood the log."""


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow scrape or a silent client never holds up /healthz."""

    daemon_threads = True


class WorkerMonitor:
    def __init__(
        self,
        settings: Settings,
        client: redis.Redis,
        *,
        tier: str,
        concurrency: int,
        in_flight: Callable[[], int],
        broker_connected: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.node = f"{tier}-{os.getpid()}@{socket.gethostname()}"
        # Not the job store's client: its retries ride out outages for minutes, while a probe
        # and a scrape must answer in seconds.
        self._client = client
        self._keys = Keys(settings.key_prefix)
        self._tier = tier
        self._concurrency = concurrency
        self._in_flight = in_flight
        self._broker_connected = broker_connected
        self._started = time.time()
        self._broker_ok_at = time.monotonic()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: WSGIServer | None = None

    # --- liveness ---------------------------------------------------------------------------

    def check(self) -> bool:
        """Ping Redis and look at the consumer; remember when both were last fine."""
        try:
            self._client.ping()
            ok = self._broker_connected()
        except (redis.RedisError, OSError):
            ok = False
        if ok:
            self._broker_ok_at = time.monotonic()
        return ok

    def alive(self) -> bool:
        return time.monotonic() - self._broker_ok_at < self.settings.liveness_grace_seconds

    # --- heartbeat --------------------------------------------------------------------------

    def beat(self) -> None:
        heartbeat = {
            "node": self.node,
            "tier": self._tier,
            "concurrency": self._concurrency,
            "in_flight": self._in_flight(),
            "pid": os.getpid(),
            "started_at": self._started,
            "seen_at": time.time(),
        }
        self._client.hset(self._keys.workers, self.node, json.dumps(heartbeat))

    def _loop(self) -> None:
        while True:
            if self.check():
                try:
                    self.beat()
                except redis.RedisError as error:
                    log.warning("worker.heartbeat_failed", error=str(error))
            if self._stop.wait(HEARTBEAT_SECONDS):
                return

    # --- HTTP ------------------------------------------------------------------------------

    def app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            alive = self.alive()
            body = json.dumps({"status": "ok" if alive else "broker_lost", "node": self.node})
            start_response(
                "200 OK" if alive else "503 Service Unavailable",
                [("Content-Type", "application/json")],
            )
            return [body.encode()]
        if path == "/metrics":
            IN_FLIGHT.labels(self._tier).set(self._in_flight())
            start_response("200 OK", [("Content-Type", "text/plain; version=0.0.4")])
            return [render(exposed_registry(self._client, self.settings))]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics and /healthz are served here\n"]

    def start(self) -> None:
        """Bind the port (a port in use is a `ConfigurationError`), then start the threads."""
        self._threads = [threading.Thread(target=self._loop, name="tierq-monitor", daemon=True)]
        port = self.settings.metrics_port
        if port:
            try:
                self._server = make_server(
                    self.settings.metrics_host,
                    port,
                    self.app,
                    server_class=_ThreadingServer,
                    handler_class=_QuietHandler,
                )
            except OSError as error:
                raise ConfigurationError(
                    f"cannot serve /metrics on {self.settings.metrics_host}:{port} "
                    f"(TIERQ_METRICS_PORT): {error}"
                ) from None
            self._threads.append(
                threading.Thread(
                    target=self._server.serve_forever, name="tierq-metrics", daemon=True
                )
            )
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Never blocks for long: request threads are daemons, Redis calls time out quickly."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with contextlib.suppress(redis.RedisError):  # readers treat a stale heartbeat as gone
            self._client.hdel(self._keys.workers, self.node)
