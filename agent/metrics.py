"""Prometheus /metrics and /healthz on a loopback port (prometheus-client, own registry)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from agent.derive.sample_columns import MAX_SOURCE_SKEW_S

StartResponse = Callable[..., Any]


class AgentMetrics:
    """All agent metrics in one registry (no global state, so tests can make several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.samples = Counter("tieragent_samples", "Samples committed to the store.",
                               ["device"], registry=r)
        self.samples_bad = Counter("tieragent_samples_bad", "Committed samples of bad quality.",
                                   ["device"], registry=r)
        self.samples_skewed = Counter(
            "tieragent_samples_skewed",
            f"Committed samples whose source timestamp shows a wrong clock: more than "
            f"{MAX_SOURCE_SKEW_S:.0f} s ahead of the receive time, or behind it for a change "
            f"(a held, unchanged value may be older); kept, flagged uncertain, derived on the "
            f"receive time.",
            ["device"], registry=r)
        self.source_skew = Gauge(
            "tieragent_source_skew_seconds",
            "Source minus receive time of the most skewed sample in the last batch that had "
            "skewed samples (positive: the device clock is ahead).",
            ["device"], registry=r)
        self.samples_dropped = Counter(
            "tieragent_samples_dropped",
            "Samples not stored, counted as gaps: disk_full_or_io_error, raw_quota_full.",
            ["reason"], registry=r)
        self.connection_up = Gauge("tieragent_connection_up", "1 while the connection is up.",
                                   ["connection"], registry=r)
        self.reconnects = Counter("tieragent_reconnects", "Link losses seen per connection.",
                                  ["connection"], registry=r)
        self.connector_restarts = Counter(
            "tieragent_connector_restarts", "Connector tasks restarted after a crash.",
            ["connection"], registry=r)
        self.queue_depth = Gauge("tieragent_queue_depth", "Items waiting for the store writer.",
                                 registry=r)
        self.queue_capacity = Gauge("tieragent_queue_capacity", "Queue bound in items.",
                                    registry=r)
        self.store_lag = Gauge("tieragent_store_lag_seconds",
                               "Age of the oldest item in the last batch when it was committed.",
                               registry=r)
        self.commit_seconds = Histogram("tieragent_store_commit_seconds",
                                        "Duration of one store transaction.", registry=r)
        self.raw_bytes = Gauge(
            "tieragent_raw_bytes", "Bytes of agent.db in use, raw samples being nearly all of it "
            "(agent.store.quota).", registry=r)
        self.raw_quota_bytes = Gauge("tieragent_raw_quota_bytes",
                                     "collection.raw_quota_mb in bytes.", registry=r)
        self.raw_quota_level = Gauge(
            "tieragent_raw_quota_level", "Raw-sample quota alarm: 0 below 80 %, 1 from 80 %, "
            "2 from 95 %, 3 full (new samples are dropped).", registry=r)
        self.clock_jumps = Counter(
            "tieragent_clock_jumps", "Steps of the wall clock against the monotonic clock of "
            "2 s or more (agent.clock_watch), forward or backward.", registry=r)
        self.last_commit = Gauge("tieragent_store_last_commit_timestamp_seconds",
                                 "Wall time of the last successful commit.", registry=r)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # access logs would drown the agent's own logs


class MetricsServer:
    """Serves /metrics and /healthz on 127.0.0.1:`port` (0 picks a free port)."""

    def __init__(self, metrics: AgentMetrics, health: Callable[[], dict[str, Any]],
                 port: int, host: str = "127.0.0.1") -> None:
        self._prometheus = make_wsgi_app(metrics.registry)
        self._health = health
        self._server = make_server(host, port, self._app, _Server, handler_class=_QuietHandler)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics",
                                        daemon=True)

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            status = self._health()
            body = json.dumps(status).encode()
            code = "200 OK" if status.get("status") == "ok" else "503 Service Unavailable"
            start_response(code, [("Content-Type", "application/json")])
            return [body]
        if path == "/metrics":
            result: Iterable[bytes] = self._prometheus(environ, start_response)
            return result
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found; try /metrics or /healthz\n"]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
