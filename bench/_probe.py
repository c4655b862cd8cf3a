"""Watching a live server: ``/health`` latency from a process of its own, and memory read from
``/proc`` (the server's process and every process below it, its compute workers): resident, or
proportional (shared pages divided among the processes that map them).

Shared by ``bench/adversarial.py`` and ``tests/reliability/``.
"""

from __future__ import annotations

import multiprocessing
import statistics
import time
from collections.abc import Callable
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


def _proc_field(pid: int, file: str, name: str) -> int | None:
    """A ``name: N kB`` line of ``/proc/<pid>/<file>`` in bytes; ``None`` where the file or the
    line is missing (the process is gone, or the kernel has no such file)."""
    try:
        for line in Path(f"/proc/{pid}/{file}").read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` (``VmRSS`` in ``/proc/<pid>/status``), 0 once it is gone."""
    return _proc_field(pid, "status", "VmRSS:") or 0


def pss_bytes(pid: int) -> int:
    """``pid``'s proportional share of memory (``Pss`` in ``/proc/<pid>/smaps_rollup``): each
    page it maps divided by the number of processes mapping it. Summed over the server's
    processes, the libraries every worker maps (torch's, about 500 MB a process) count once,
    where resident memory counts them in each: a worker started on demand adds its own heap,
    not another copy of torch. ``VmRSS`` where the kernel has no ``smaps_rollup``
    (before Linux 4.14); 0 once the process is gone."""
    pss = _proc_field(pid, "smaps_rollup", "Pss:")
    return rss_bytes(pid) if pss is None else pss


def tree_bytes(pid: int, measure: Callable[[int], int]) -> int:
    """``measure`` of ``pid`` and of every process below it (the compute workers), summed."""
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += measure(current)
        stack.extend(children(current))
    return total


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and every process below it."""
    return tree_bytes(pid, rss_bytes)


def tree_pss_bytes(pid: int) -> int:
    """The memory of ``pid`` and every process below it, with what they share counted once
    (their :func:`pss_bytes` summed)."""
    return tree_bytes(pid, pss_bytes)


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
