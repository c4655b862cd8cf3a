"""A live server with small limits, a ``/health`` prober and memory readings from ``/proc``.

The hostile requests of ``test_hostile.py`` (and, at larger sizes, ``bench/adversarial.py``)
run against a real uvicorn process: what matters is what a caller sees over a socket and
whether the server's event loop, compute slots and memory stay healthy.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bench._probe import children, rss_bytes, tree_rss_bytes
from tests.live import free_port, spawn_uvicorn, stop, wait_for_health

SMALL_LIMITS = {
    "TORCHLAB_REQUEST_TIMEOUT_S": "3",
    "TORCHLAB_QUEUE_TIMEOUT_S": "1",
    "TORCHLAB_MAX_INFLIGHT_PER_DEVICE": "2",
    "TORCHLAB_MAX_RESPONSE_BYTES": str(64 << 20),
    "TORCHLAB_SEND_TIMEOUT_S": "3",
    "TORCHLAB_BODY_TIMEOUT_S": "2",
    "TORCHLAB_HEADER_TIMEOUT_S": "2",
    "TORCHLAB_MAX_INFLIGHT_BODY_BYTES": str(128 << 20),
    "TORCHLAB_DEVICE": "cpu",
    "TORCHLAB_LOG_LEVEL": "warning",
}
REALISTIC_RATES = {
    "cpu/float32": 1e11,
    "cpu/float64": 5e10,
    "cpu/float16": 1e9,
    "cpu/elements": 1e9,
}
"""Rates of this kind of machine, fixed so that what is refused does not depend on how busy
it is when the server starts."""
OPTIMISTIC_RATES = {**REALISTIC_RATES, "cpu/float32": 1e13, "cpu/float64": 5e12}
"""A device thought a hundred times faster than it is: the plan admits work that then runs
past its deadline, which is what the deadline tests need."""


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def descendants(self) -> list[int]:
        found, stack = [], [self.pid]
        while stack:
            below = children(stack.pop())
            found += below
            stack += below
        return found

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def tree_rss(self) -> int:
        return tree_rss_bytes(self.pid)

    def anonymous(self) -> int:
        """The server process's anonymous resident memory (``RssAnon``): its heap, with the
        bodies and connection buffers it holds, without the shared memory of its workers'
        answers that it maps (kept for reuse, up to a bound)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
        raise AssertionError(f"no RssAnon for {self.pid}")

    def shared_mapped(self) -> int:
        """Bytes of shared memory (``/dev/shm``) the server process maps: answers and
        binary requests on their way between it and its workers."""
        total = 0
        for line in Path(f"/proc/{self.pid}/maps").read_text().splitlines():
            if "/dev/shm/" in line:
                start, end = line.split()[0].split("-")
                total += int(end, 16) - int(start, 16)
        return total


def start_server(env: dict[str, str], log: Path, timeout: float = 120.0) -> Server:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = spawn_uvicorn(port, env, log)
    wait_for_health(url, process, log, timeout)
    return Server(url, process, log)


def stop_server(server: Server) -> None:
    stop(server.process)


def _serve(rates: dict[str, float], log: Path) -> Iterator[Server]:
    env = {**SMALL_LIMITS, "TORCHLAB_CALIBRATION": json.dumps(rates)}
    live = start_server(env, log)
    # One request through a worker first: what the server does once (imports, first
    # allocations) is not what a hostile request costs.
    warm = {
        "steps": [
            {"op": "randn", "size": [128, 128], "out": "a"},
            {"op": "matmul", "x": "a", "y": "a"},
        ]
    }
    httpx.post(f"{live.url}/tensor/ops", json=warm, timeout=60).raise_for_status()
    try:
        yield live
    finally:
        stop_server(live)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``uvicorn service.main:app`` on loopback with small limits (a 3 s time limit)."""
    yield from _serve(REALISTIC_RATES, tmp_path_factory.mktemp("server") / "server.log")


@pytest.fixture(scope="module")
def optimistic_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The same, with a device thought a hundred times faster than it is."""
    yield from _serve(OPTIMISTIC_RATES, tmp_path_factory.mktemp("server") / "server.log")
