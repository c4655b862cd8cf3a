"""Watching a live server: ``/health`` latency from a process of its own, and resident memory read
from ``/proc`` (the server's process and every process below it, its compute workers).

Shared by ``bench/adversarial.py`` and ``tests/reliability/``.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == pid:
            found.append(int(entry.name))
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS`` in ``/proc/<pid>/status``), 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and every process below it (the compute workers)."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss_bytes(current)
        stack.extend(children(current))
    return total


@dataclass
class HealthProbe:
    """``GET /health`` every ``interval`` seconds on its own connection, in a process of its
    own: a thread of the caller's would share its interpreter lock with whatever the caller
    does meanwhile (building a 50 MB body, reading a large answer) and time that as the
    server's latency."""

    url: str
    interval: float = 0.02
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    _stop: Any = None
    _process: Any = None
    _results: Any = None

    def __enter__(self) -> HealthProbe:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        receive, send = context.Pipe(duplex=False)
        self._results = receive
        self._process = context.Process(
            target=_probe, args=(self.url, self.interval, self._stop, send), daemon=True
        )
        self._process.start()
        send.close()
        # Measure from the first answer on: the process has started and connected.
        if not receive.poll(60):
            raise RuntimeError(f"the /health probe of {self.url} did not start")
        receive.recv()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._results.poll(30):
            self.latencies, self.failures = self._results.recv()
        self._process.join(timeout=10)

    @property
    def p99(self) -> float:
        if len(self.latencies) < 2:
            return max(self.latencies, default=0.0)
        # Inclusive: never past the slowest answer seen (the default extrapolates beyond it
        # when there are few samples).
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[98]

    @property
    def worst(self) -> float:
        return max(self.latencies, default=0.0)


def _probe(url: str, interval: float, stop: Any, results: Any) -> None:
    latencies: list[float] = []
    failures = 0
    with httpx.Client(timeout=5) as client:
        while client.get(f"{url}/health").status_code != 200:
            time.sleep(interval)
        results.send("ready")
        while not stop.is_set():
            start = time.perf_counter()
            try:
                ok = client.get(f"{url}/health").status_code == 200
            except httpx.HTTPError:
                ok = False
            elapsed = time.perf_counter() - start
            if ok:
                latencies.append(elapsed)
            else:
                failures += 1
            stop.wait(interval)
    results.send((latencies, failures))
