"""Prometheus metrics, in a registry of the app's own (tests build many apps).

Several server processes on one port (``uvicorn --workers N``, ``make serve WORKERS=N``)
answer ``/metrics`` in turn, and a scraper cannot choose which one: each answer must be the
whole service's. There, prometheus-client's multiprocess mode is on
(``PROMETHEUS_MULTIPROC_DIR``, an empty directory at start): every process keeps its values
in files in that directory and ``/metrics`` adds them up, counters and histograms over
every process that has run, gauges over the living ones. Replicas on ports of their own
(behind nginx, under Compose) keep a registry each and are scraped one by one.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
"""prometheus-client's own setting, read once, when it is imported: from then on every
metric of the process keeps its values in files in that directory."""

HTTP_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
"""The methods counted under their own name (RFC 9110's and PATCH)."""

_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    """The directory of prometheus-client's multiprocess mode, None when it is off."""
    path = os.environ.get(MULTIPROCESS_DIR_VARIABLE)
    return Path(path) if path else None


class Metrics:
    """Request counts and latencies per route and status, refusals per limit, compute in flight,
    and the life of the worker processes that compute runs in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir()
        self.requests = Counter(
            "torchlab_requests",
            "HTTP requests answered, by method (_OTHER: one outside HTTP's own), route "
            "template and status code.",
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
            multiprocess_mode="livesum",
        )
        self.queued = Gauge(
            "torchlab_compute_queued",
            "Compute requests waiting for a slot, by device.",
            ["device"],
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.body_bytes = Gauge(
            "torchlab_body_bytes_held",
            "Bytes of request bodies held now, each charged its Content-Length from before "
            "it is read until its request is answered (max_inflight_body_bytes).",
            registry=self.registry,
            multiprocess_mode="livesum",
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
            multiprocess_mode="livesum",
        )

        self._request_series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def count_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and observe its latency. A method outside HTTP's own
        is counted as ``_OTHER`` (as OpenTelemetry's conventions do), so that no request
        adds a series of its own. Each series is looked up once, then kept: ``labels()``
        costs more than the count."""
        label = method if method in HTTP_METHODS else "_OTHER"
        key = (label, route, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = (
                self.requests.labels(label, route, str(status)),
                self.latency.labels(label, route),
            )
        series[0].inc()
        series[1].observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this process's, or in multiprocess mode
        the sum over the service's processes."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        forget_dead_processes(self.multiprocess_dir)
        registry = CollectorRegistry()
        path = str(self.multiprocess_dir)
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
        return generate_latest(registry)


def forget_dead_processes(directory: Path) -> None:
    """Drop the gauges of processes that have ended (a worker killed or restarted by the
    server's supervisor, which tells no one): their requests in flight are gone with them.
    Their counters stay, as the requests they answered did."""
    for path in directory.iterdir():
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match and not _alive(pid := int(match.group(1))):
            with contextlib.suppress(FileNotFoundError):
                multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True
