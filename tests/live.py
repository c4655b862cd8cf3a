"""A live ``uvicorn service.main:app`` for the tests that need a real server: a free port,
the process, the wait for its ``/health`` and its stop."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]

STARTUP_TIMEOUT_S = 120.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def spawn_uvicorn(
    port: int,
    env: Mapping[str, str],
    log: Path,
    *,
    append: bool = False,
    protocol: bool = True,
) -> subprocess.Popen[bytes]:
    """``uvicorn service.main:app`` on ``port`` of the loopback, in a process of its own,
    with ``env`` over this environment less its ``TORCHLAB_*`` variables, its output written
    to ``log`` (added to it with ``append``). ``protocol``: with the service's own HTTP
    protocol, as ``make serve`` runs it; otherwise uvicorn's default."""
    command = [sys.executable, "-m", "uvicorn", "service.main:app"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    if protocol:
        command += ["--http", "service.protocol:HeadTimedProtocol"]
    base = {k: v for k, v in os.environ.items() if not k.startswith("TORCHLAB_")}
    with log.open("ab" if append else "wb") as output:  # the server writes to its own copy
        return subprocess.Popen(
            command, cwd=ROOT, env={**base, **env}, stdout=output, stderr=subprocess.STDOUT
        )


def wait_for_health(
    url: str,
    process: subprocess.Popen[bytes],
    log: Path,
    timeout_s: float = STARTUP_TIMEOUT_S,
) -> None:
    """Until ``url``'s ``/health`` answers 200. RuntimeError, with the server's log, if the
    process exits first or ``timeout_s`` runs out (the process is killed then)."""
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            output = log.read_text(errors="replace")
            raise RuntimeError(f"{url} exited with {process.returncode}:\n{output}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            process.kill()
            process.wait(timeout=15)
            output = log.read_text(errors="replace")
            raise RuntimeError(f"{url} did not answer within {timeout_s:g} s:\n{output}")
        time.sleep(0.2)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it has not ended within 15 s."""
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=15)
