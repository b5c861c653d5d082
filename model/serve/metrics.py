"""Prometheus metrics of one model-server replica (prometheus_client, a registry of its own):
requests by endpoint and status, batch sizes, queue depth, request and model latency.

`GET /metrics` serves the replica that answers it. With several replicas behind Ray Serve, scrape
Ray's metrics export instead (it also has Ray Serve's own serve_* metrics for every replica:
requests, latency, `serve_actual_batch_size`, `serve_batch_queue_length`).
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self, replica: str = "local", model: str = "parafill"):
        self.registry = r = CollectorRegistry()
        self.info = Gauge(
            "parafill_replica_info",
            "The replica that serves /metrics",
            ["replica", "model"],
            registry=r,
        )
        self.info.labels(replica=replica, model=model).set(1)
        self.requests = Counter(
            "parafill_requests", "HTTP requests answered", ["endpoint", "status"], registry=r
        )
        self.cancelled = Counter(
            "parafill_cancelled", "Requests whose client went away before the answer", registry=r
        )
        self.queue_depth = Gauge(
            "parafill_queue_depth", "Requests admitted and not yet answered", registry=r
        )
        self.batch_size = Histogram(
            "parafill_batch_size", "Requests per batch", buckets=BATCH_BUCKETS, registry=r
        )
        self.latency = Histogram(
            "parafill_request_latency_seconds",
            "Time from a request's arrival to its answer",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queued = Histogram(
            "parafill_queue_seconds",
            "Time a request waited before its run began",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.model_seconds = Histogram(
            "parafill_model_seconds",
            "Time the model spent on one request",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
