"""Several server processes on one port (``make serve WORKERS=n``): ``/metrics`` is the sum
over all of them whichever answers (prometheus-client's multiprocess mode), counters keep
what a process that died had counted, and gauges forget it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.live import ROOT, free_port
from tests.scale.conftest import descendants, kill_pids

# --- the metrics of several processes, without a server -----------------------------------------

PROCESS = textwrap.dedent(
    """
    import sys
    from service.metrics import Metrics

    metrics = Metrics()
    for _ in range(int(sys.argv[1])):
        metrics.count_request("GET", "/health", 200, 0.01)
    metrics.inflight.labels("cpu").set(int(sys.argv[2]))
    print("ready", flush=True)
    sys.stdin.readline()  # stays alive until told
    """
)


def sample(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return None


def exposition(directory: Path) -> str:
    code = "from service.metrics import Metrics; print(Metrics().exposition().decode())"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextlib.contextmanager
def counting_process(directory: Path, requests: int, inflight: int) -> Iterator[None]:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(directory)}
    with subprocess.Popen(  # which closes its pipes on leaving
        [sys.executable, "-c", PROCESS, str(requests), str(inflight)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None and process.stdout.readline().strip() == "ready"
            yield
        finally:
            assert process.stdin is not None
            process.stdin.close()
            process.wait(timeout=30)


def test_metrics_add_up_over_processes_and_forget_the_gauges_of_dead_ones(
    tmp_path: Path,
) -> None:
    with counting_process(tmp_path, requests=3, inflight=1):
        with counting_process(tmp_path, requests=4, inflight=2):
            text = exposition(tmp_path)
            route = {"method": "GET", "route": "/health", "status": "200"}
            assert sample(text, "torchlab_requests_total", **route) == 7
            assert sample(text, "torchlab_request_duration_seconds_count", route="/health") == 7
            assert sample(text, "torchlab_compute_inflight", device="cpu") == 3
        text = exposition(tmp_path)  # the second process has ended
        assert sample(text, "torchlab_requests_total", **route) == 7
        assert sample(text, "torchlab_compute_inflight", device="cpu") == 1


def test_one_process_keeps_its_own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.metrics import Metrics  # noqa: PLC0415

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    metrics = Metrics()
    metrics.count_request("GET", "/health", 200, 0.01)
    assert metrics.multiprocess_dir is None
    text = metrics.exposition().decode()
    assert sample(text, "torchlab_requests_total", route="/health") == 1


# --- make serve WORKERS=2 -----------------------------------------------------------------------

SERVER_ENV = {
    "TORCHLAB_DEVICE": "cpu",
    "TORCHLAB_LOG_LEVEL": "warning",
    "TORCHLAB_ISOLATE": "false",  # no fork server beside each process: half the start-up
    "TORCHLAB_CALIBRATION": json.dumps({"cpu/float32": 1e11, "cpu/elements": 1e9}),
}


@pytest.mark.slow
def test_make_serve_with_two_workers_counts_every_request_once(tmp_path: Path) -> None:
    port = free_port()
    metrics_dir = tmp_path / "metrics"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TORCHLAB_", "PROMETHEUS"))}
    log = tmp_path / "serve.log"
    # -o: the dependencies count as installed (make test has installed them).
    command = ["make", "--no-print-directory", "-o", ".venv/.serve-deps", "serve"]
    with log.open("wb") as output:
        make = subprocess.Popen(
            [*command, "WORKERS=2", f"PORT={port}", f"METRICS_DIR={metrics_dir}"],
            cwd=ROOT,
            env={**base, **SERVER_ENV},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert make.poll() is None, log.read_text()
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        servers = [pid for pid in descendants(make.pid) if _is_server(pid)]
        assert len(servers) == 2, servers

        sent = 1  # the probe above
        while len(list(metrics_dir.glob("counter_*.db"))) < 2 or sent < 40:
            # A new connection each time: the kernel hands each to either process.
            assert httpx.get(f"{url}/health", timeout=10).status_code == 200
            sent += 1
            assert sent < 400, "one process never answered"
        _assert_counted(url, sent)

        # A process killed (the supervisor starts another): what it counted still counts.
        os.kill(servers[0], signal.SIGKILL)
        deadline = time.monotonic() + 120
        while len([pid for pid in descendants(make.pid) if _is_server(pid)]) < 2:
            assert time.monotonic() < deadline, "the supervisor did not replace the process"
            time.sleep(0.5)
        _assert_counted(url, sent)
    finally:
        below = descendants(make.pid)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(make.pid, signal.SIGTERM)  # the session this test started
        try:
            make.wait(timeout=30)
        except subprocess.TimeoutExpired:
            make.kill()
        time.sleep(1)
        kill_pids([pid for pid in below if Path(f"/proc/{pid}").exists()])


def _is_server(pid: int) -> bool:
    """A worker process of uvicorn's supervisor (multiprocessing's spawn)."""
    with contextlib.suppress(OSError):
        return b"multiprocessing.spawn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    return False


def _assert_counted(url: str, sent: int) -> None:
    """Every scrape, whichever process answers it, counts the ``sent`` /health requests."""
    route = {"method": "GET", "route": "/health", "status": "200"}
    deadline = time.monotonic() + 10
    counts: list[float | None] = []
    while len(counts) < 6:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        counts.append(sample(text, "torchlab_requests_total", **route))
        if counts[-1] != sent:  # a process may count the last request just after answering it
            assert time.monotonic() < deadline, counts
            counts = []
            time.sleep(0.1)
    assert counts == [sent] * 6
