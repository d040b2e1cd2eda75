"""Prometheus metrics of the server (prometheus-client), one registry per server.

The names are a contract: deploy's Grafana dashboard and alerts use them.

    stedq_requests_total{method, code}          RPCs by method ("Score", "ModelInfer", ...) and final status
    stedq_request_duration_seconds{method}      total time per RPC (a ScoreStream RPC: the whole stream)
    stedq_queue_wait_seconds                    time images wait in the batcher queue
    stedq_inference_duration_seconds            time of each onnxruntime run
    stedq_batch_size                            images per inference call
    stedq_queue_depth                           images waiting in the batcher
    stedq_in_flight_requests                    RPCs being handled
    stedq_in_flight_bytes                       estimated memory held by admitted requests (--max-inflight-mb)
    stedq_images_scored_total                   images scored (a tiled image counts once)
    stedq_model_info{name, version, variant, provider, device}   1 for the loaded model
    stedq_model_reloads_total{result}           "success" | "failure"

plus prometheus_client's process_* metrics (resident and virtual memory, CPU seconds, open files, start time).
The HTTP port also answers GET /healthz: 200 "ok" while the server is SERVING, 503 otherwise (a plain probe
for load balancers and container runtimes that do not speak gRPC); any other path is 404.

Requests are recorded by `stedq.server.interceptors.MetricsInterceptor` for every RPC of the scoring
services (stedq.v1 and KServe v2), so servicers do not record them themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector, make_wsgi_app

# 100 µs .. 30 s: fine enough for sub-millisecond work, long enough for big quality maps
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075,
                   0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter("stedq_requests_total", "RPCs by method and final gRPC status code",
                                ["method", "code"], registry=r)
        self.request_duration = Histogram("stedq_request_duration_seconds", "Total time per RPC",
                                          ["method"], buckets=LATENCY_BUCKETS, registry=r)
        self.queue_wait = Histogram("stedq_queue_wait_seconds", "Time images wait in the batcher queue",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.inference_duration = Histogram("stedq_inference_duration_seconds",
                                            "Time of each onnxruntime run", buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("stedq_batch_size", "Images per inference call",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("stedq_queue_depth", "Images waiting in the batcher queue", registry=r)
        self.in_flight = Gauge("stedq_in_flight_requests", "RPCs being handled", registry=r)
        self.in_flight_bytes = Gauge("stedq_in_flight_bytes", "Estimated memory held by admitted requests "
                                     "(bounded by --max-inflight-mb)", registry=r)
        self.images_scored = Counter("stedq_images_scored_total", "Images scored", registry=r)
        self.fit_results = Counter("stedq_fit_results_total",
                                   "Scored images by fit verdict: ok, or each reason the image is outside "
                                   "the training data (stedq/fit.py)", ["reason"], registry=r)
        self.model_info = Gauge("stedq_model_info", "The loaded model (value 1)",
                                ["name", "version", "variant", "provider", "device"], registry=r)
        self.model_reloads = Counter("stedq_model_reloads_total", "Model reloads by result",
                                     ["result"], registry=r)
        for result in ("success", "failure"):  # exported as 0 from the start, so rate() works
            self.model_reloads.labels(result=result)
        ProcessCollector(registry=r)

    def count_fits(self, fits: list[list[str]]) -> None:
        """One count per image and reason (an image with two reasons counts under both)."""
        for reasons in fits:
            for reason in reasons:
                self.fit_results.labels(reason=reason).inc()

    def set_model(self, name: str, version: str, variant: str, provider: str, device: str) -> None:
        self.model_info.clear()
        self.model_info.labels(name=name, version=version, variant=variant, provider=provider,
                               device=device).set(1)

    def observe_request(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method=method, code=code).inc()
        self.request_duration.labels(method=method).observe(seconds)

    def serve_http(self, host: str, port: int, healthy: Callable[[], bool] = lambda: True):
        """Serve /metrics and /healthz in a daemon thread; returns (server, bound port)."""
        import threading

        server = make_server(host, port, http_app(self.registry, healthy), _ThreadingServer, _QuietHandler)
        threading.Thread(target=server.serve_forever, name="stedq-metrics-http", daemon=True).start()
        return server, server.server_port


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, handler):
        if ":" in address[0]:   # an IPv6 address (e.g. "::")
            import socket

            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # no access log line per scrape or probe
        pass


def http_app(registry: CollectorRegistry, healthy: Callable[[], bool]):
    """WSGI app: /metrics (Prometheus text), /healthz (200 ok / 503 not serving), else 404."""
    metrics = make_wsgi_app(registry)

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return metrics(environ, start_response)
        if path == "/healthz":
            ok = healthy()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"not serving\n"]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: this port serves /metrics and /healthz\n"]
    return app
