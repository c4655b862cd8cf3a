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
import itertools
import os
import re
import time
from bisect import bisect_left
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

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


REQUESTS = (
    "torchlab_requests",
    "HTTP requests answered, by method (_OTHER: one outside HTTP's own), route template and "
    "status code.",
)
LATENCY = (
    "torchlab_request_duration_seconds",
    "Time from the request's arrival to the end of its response.",
)
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
"""The latency histogram's upper bounds in seconds (and +Inf)."""


class PrometheusRequests:
    """Requests answered as prometheus-client's own counter and histogram: in multiprocess
    mode, where their values live in the directory's files."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(*REQUESTS, ["method", "route", "status"], registry=registry)
        self.latency = Histogram(
            *LATENCY, ["method", "route"], buckets=LATENCY_BUCKETS, registry=registry
        )
        self._series: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def count(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:  # labels() costs more than the count: looked up once
            series = self._series[key] = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
        series[0].inc()
        series[1].observe(seconds)


class RequestTally:
    """Requests answered in one process, kept as plain numbers and written, when scraped,
    as prometheus-client writes its counter and histogram (a collector of the registry's):
    the same families, series and samples, ``_created`` included. prometheus-client's
    update takes a lock for each of the counter, the histogram's sum and its bucket, and
    looks for the bucket in Python: 3 µs of a tiny request's 50 on the event loop.

    Counted on the event loop only; a scrape (in a thread) reads a copy of each series,
    taken whole under the interpreter lock."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.bounds = tuple(float(bound) for bound in LATENCY_BUCKETS)
        self.les = [*map(floatToGoString, self.bounds), "+Inf"]
        self.requests: dict[tuple[str, str, int], list[float]] = {}
        """(method, route, status): [count, created]."""
        self.latency: dict[tuple[str, str], list[float]] = {}
        """(method, route): [count in each bucket (not cumulative), ..., +Inf's, sum, created]."""
        registry.register(self)

    def count(self, method: str, route: str, status: int, seconds: float) -> None:
        counted = self.requests.get((method, route, status))
        if counted is None:
            counted = self.requests[method, route, status] = [0.0, time.time()]
        counted[0] += 1
        series = self.latency.get((method, route))
        if series is None:
            series = self.latency[method, route] = [0.0] * len(self.les) + [0.0, time.time()]
        series[bisect_left(self.bounds, seconds)] += 1  # the first bound >= seconds
        series[-2] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(*REQUESTS, labels=["method", "route", "status"])
        for (method, route, status), (count, created) in list(self.requests.items()):
            requests.add_metric([method, route, str(status)], count, created=created)
        yield requests
        latency = HistogramMetricFamily(*LATENCY, labels=["method", "route"])
        for (method, route), series in list(self.latency.items()):
            *buckets, total, created = list(series)
            cumulative = itertools.accumulate(buckets)
            latency.add_metric([method, route], list(zip(self.les, cumulative, strict=True)), total)
            labels = {"method": method, "route": route}
            latency.samples.append(Sample(f"{LATENCY[0]}_created", labels, created))
        yield latency


class Metrics:
    """Request counts and latencies per route and status, refusals per limit, compute in flight,
    and the life of the worker processes that compute runs in."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess_dir = multiprocess_dir()
        if self.multiprocess_dir is None:
            self.answered: RequestTally | PrometheusRequests = RequestTally(self.registry)
        else:
            self.answered = PrometheusRequests(self.registry)
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

    def count_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and observe its latency. A method outside HTTP's own
        is counted as ``_OTHER`` (as OpenTelemetry's conventions do), so that no request
        adds a series of its own."""
        self.answered.count(method if method in HTTP_METHODS else "_OTHER", route, status, seconds)

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
