"""Replicas of the service and an nginx in front of them, on loopback, started by the tests.

Each replica is ``uvicorn service.main:app`` as ``docker-compose.yml`` runs it; nginx runs
the configuration of ``deploy/nginx/``, rendered for the replicas' ports and limits by
``deploy.nginx.render``. Every process a test starts is stopped by its id.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bench._probe import children
from deploy.nginx.render import write_standalone
from service.config import Limits
from tests.live import free_port, spawn_uvicorn, stop, wait_for_health

REPLICA_ENV = {
    "TORCHLAB_DEVICE": "cpu",
    "TORCHLAB_LOG_LEVEL": "warning",
    "TORCHLAB_MAX_BODY_BYTES": str(8 << 20),
    "TORCHLAB_REQUEST_TIMEOUT_S": "10",
    "TORCHLAB_QUEUE_TIMEOUT_S": "1",
    "TORCHLAB_MAX_INFLIGHT_PER_DEVICE": "2",
    "TORCHLAB_SEND_TIMEOUT_S": "20",
    # Two replicas share two cores.
    "TORCHLAB_WORKER_THREADS": "1",
    # Fixed rates: what is refused does not depend on how busy the machine is at start-up.
    "TORCHLAB_CALIBRATION": json.dumps(
        {"cpu/float32": 1e11, "cpu/float64": 5e10, "cpu/float16": 1e9, "cpu/elements": 1e9}
    ),
}
"""The replicas' settings: the service's own, smaller, so that limits are cheap to reach."""


def nginx_binary() -> str | None:
    """Debian's nginx (``make test`` installs it when missing), or None."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin", "/sbin"])
    return shutil.which("nginx", path=path)


def replica_limits(env: Mapping[str, str] = REPLICA_ENV) -> Limits:
    """The limits a replica with ``env`` runs under, read as the service reads them."""
    with pytest.MonkeyPatch.context() as patch:
        for key in [key for key in os.environ if key.startswith("TORCHLAB_")]:
            patch.delenv(key)
        for key, value in env.items():
            patch.setenv(key, value)
        return Limits()


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (a replica's fork server and compute workers)."""
    found, stack = [], [pid]
    while stack:
        below = children(stack.pop())
        found += below
        stack += below
    return found


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@dataclass
class Replica:
    """One ``uvicorn service.main:app`` on a fixed loopback port, which it keeps when
    restarted."""

    port: int
    log: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(REPLICA_ENV))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, *, wait: bool = True) -> Replica:
        self.process = spawn_uvicorn(self.port, self.env, self.log, append=True)
        if wait:
            self.wait()
        return self

    def wait(self) -> None:
        assert self.process is not None
        wait_for_health(self.url, self.process, self.log)

    def kill(self) -> None:
        """SIGKILL, as the system would: no shutdown, its connections reset. Its fork
        server and workers go too (they are the replica's, gone with it)."""
        assert self.process is not None
        below = descendants(self.process.pid)
        self.process.kill()
        self.process.wait(timeout=15)
        kill_pids(below)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        below = descendants(self.process.pid)
        stop(self.process)
        kill_pids([pid for pid in below if Path(f"/proc/{pid}").exists()])


@dataclass
class Nginx:
    """nginx with the project's configuration, everything it writes under ``prefix``."""

    binary: str
    prefix: Path
    port: int
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def serve(
        cls, binary: str, prefix: Path, upstreams: list[str], limits: Limits, **values: str
    ) -> Nginx:
        """Render ``deploy/nginx`` for ``upstreams`` into ``prefix`` and start nginx.
        ``values`` replace rendered template variables (``NGINX_PROXY_TIMEOUT_S="1"``)."""
        port = free_port()
        main = write_standalone(
            prefix, upstreams, limits, listen=f"127.0.0.1:{port}", overrides=values
        )
        check = subprocess.run(
            [binary, "-t", "-p", str(main.parent), "-c", str(main)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert check.returncode == 0, check.stderr
        nginx = cls(binary, main.parent, port)
        nginx.process = subprocess.Popen(
            [binary, "-p", str(main.parent), "-c", str(main), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return nginx
            if nginx.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"nginx did not start:\n{nginx.error_log()}")
            time.sleep(0.05)

    def access_log(self) -> list[str]:
        path = self.prefix / "access.log"
        return path.read_text().splitlines() if path.exists() else []

    def error_log(self) -> str:
        path = self.prefix / "error.log"
        return path.read_text()[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGQUIT)  # graceful: finish what is in progress
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=15)


@pytest.fixture(scope="session")
def nginx_path() -> str:
    binary = nginx_binary()
    if binary is None:
        pytest.skip("nginx is not installed (make test installs Debian's package as root)")
    return binary


@dataclass
class Cluster:
    replicas: list[Replica]
    nginx: Nginx


@pytest.fixture(scope="module")
def cluster(nginx_path: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two replicas behind nginx."""
    logs = tmp_path_factory.mktemp("replicas")
    replicas = [Replica(free_port(), logs / f"replica-{i}.log") for i in range(2)]
    nginx: Nginx | None = None
    try:
        for replica in replicas:  # started together, waited for together: half the time
            replica.start(wait=False)
        for replica in replicas:
            replica.wait()
        nginx = Nginx.serve(
            nginx_path,
            tmp_path_factory.mktemp("nginx"),
            [replica.address for replica in replicas],
            replica_limits(),
        )
        yield Cluster(replicas, nginx)
    finally:
        if nginx is not None:
            nginx.stop()
        for replica in replicas:
            replica.stop()
