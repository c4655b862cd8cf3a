"""Prometheus metrics, in a registry of the app's own (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """Request counts and latencies per route and status, refusals per limit, compute in flight,
    and the life of the worker processes that compute runs in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "torchlab_requests",
            "HTTP requests answered, by method, route template and status code.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "torchlab_request_duration_seconds",
            "Time from the request's arrival to the end of its response.",
            ["method", "route"],
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
            registry=self.registry,
        )
        self.refused = Counter(
            "torchlab_limit_refusals",
            "Requests refused by a limit, by limit name.",
            ["limit"],
            registry=self.registry,
        )
        self.inflight = Gauge(
            "torchlab_compute_inflight",
            "Compute requests running now, by device.",
            ["device"],
            registry=self.registry,
        )
        self.queued = Gauge(
            "torchlab_compute_queued",
            "Compute requests waiting for a slot, by device.",
            ["device"],
            registry=self.registry,
        )
        self.worker_starts = Counter(
            "torchlab_worker_starts",
            "Worker processes started (at first use, and to replace one that left), by device.",
            ["device"],
            registry=self.registry,
        )
        self.worker_kills = Counter(
            "torchlab_worker_kills",
            "Worker processes lost while running a request, by device and reason: timeout "
            "(killed at the request's deadline), cancelled (killed: the client went away), "
            "died (ended by the system: out of memory, a crash in native code).",
            ["device", "reason"],
            registry=self.registry,
        )
        self.worker_recycles = Counter(
            "torchlab_worker_recycles",
            "Worker processes retired between requests for their memory use, by device.",
            ["device"],
            registry=self.registry,
        )
        self.workers = Gauge(
            "torchlab_workers",
            "Worker processes alive and ready or busy, by device.",
            ["device"],
            registry=self.registry,
        )
