"""nginx (``deploy/nginx/``) in front of two replicas of the service, all on loopback.

Every route passes through, uploads and binary bodies included; nginx's own errors come in
the service's error shape; a saturated replica's 429 is retried on the other; and a replica
killed under a steady load, then restarted, costs the caller nothing.
"""

from __future__ import annotations

import base64
import io
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from httpx_sse import EventSource
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from service.errors import ErrorCode
from service.main import create_app
from tests.conftest import make_settings
from tests.live import free_port
from tests.scale.conftest import Cluster, Nginx, Replica, replica_limits

pytestmark = pytest.mark.slow

SCHEMA = create_app(make_settings()).openapi()
OPERATIONS = [
    (method.upper(), path, operation)
    for path, item in SCHEMA["paths"].items()
    for method, operation in item.items()
]
PAGES = ["/docs", "/redoc", "/openapi.json"]
"""Routes outside the OpenAPI document."""


def example_body(operation: dict[str, Any]) -> Any:
    """The JSON body the docs page shows for ``operation``, or None."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json")
    if content is None:
        return None
    if "example" in content:
        return content["example"]
    ref = content["schema"].get("$ref", "").rsplit("/", 1)[-1]
    examples = SCHEMA["components"]["schemas"].get(ref, {}).get("examples")
    return examples[0] if examples else None


def assert_error_shape(response: httpx.Response, code: ErrorCode) -> dict[str, Any]:
    """A body of the service's error shape, with ``code`` and the status the registry gives
    it, and a request id."""
    assert response.status_code == code.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert set(body) == {"error", "code", "details"}, body
    assert body["code"] == code.value
    assert isinstance(body["error"], str)
    assert isinstance(body["details"], dict)
    assert response.headers.get("x-request-id")
    return body


def noise_png(side: int, seed: int = 0) -> bytes:
    """An RGB picture of noise: PNG cannot compress it (3 bytes a pixel)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def log_lines(nginx: Nginx, request_id: str, wait: float = 3.0) -> list[str]:
    """The access log's lines of ``request_id``, waiting up to ``wait`` seconds for the first:
    nginx writes a request's line once its answer has gone, when the caller may already read
    the log."""
    end = time.monotonic() + wait
    while True:
        lines = [line for line in nginx.access_log() if f" {request_id} " in line]
        if lines or time.monotonic() > end:
            return lines
        time.sleep(0.05)


# --- every route --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS]
)
def test_every_route_passes_through(
    cluster: Cluster, method: str, path: str, operation: dict[str, Any]
) -> None:
    """The same answer through nginx as from a replica: 200 for every route the docs page
    shows a whole request for; for a route with path parameters (filled with a name no
    replica has), the same answer whatever it is."""
    body = example_body(operation)
    parameters = [p["name"] for p in operation.get("parameters", []) if p["in"] == "path"]
    url = path.format(**{name: "no-such-name" for name in parameters})
    answers = [
        httpx.request(method, f"{base}{url}", json=body, timeout=60)
        for base in (cluster.nginx.url, cluster.replicas[0].url)
    ]
    through, direct = answers
    assert through.status_code == direct.status_code, through.text
    if not parameters and (body is not None or "requestBody" not in operation):
        assert through.status_code == 200, through.text
    assert through.status_code < 500, through.text
    assert through.headers["content-type"] == direct.headers["content-type"]
    if path not in {"/metrics", "/info", "/benchmark"}:  # counts, free memory, timings differ
        assert _without_timings(through) == _without_timings(direct)


def _without_timings(response: httpx.Response) -> Any:
    if not response.headers["content-type"].startswith("application/json"):
        return response.content
    body = response.json()
    if isinstance(body, dict):
        body.pop("elapsed_ms", None)
    return body


@pytest.mark.parametrize("path", PAGES)
def test_the_docs_pages_pass_through(cluster: Cluster, path: str) -> None:
    through = httpx.get(f"{cluster.nginx.url}{path}", timeout=30)
    direct = httpx.get(f"{cluster.replicas[0].url}{path}", timeout=30)
    assert through.status_code == direct.status_code == 200
    assert through.content == direct.content


# --- bodies -------------------------------------------------------------------------------------


def test_a_large_upload_streams_through(cluster: Cluster) -> None:
    picture = noise_png(1024)
    assert len(picture) > 2 << 20  # past the 1 MB under which nginx buffers a body whole
    answers = [
        httpx.post(
            f"{base}/conv",
            files={"image": ("noise.png", picture, "image/png")},
            data={"kernels": '["edge"]'},
            params={"encoding": "b64"},
            timeout=60,
        )
        for base in (cluster.nginx.url, cluster.replicas[1].url)
    ]
    through, direct = answers
    assert through.status_code == direct.status_code == 200, through.text
    assert through.json()["output"] == direct.json()["output"]
    assert through.json()["output"]["shape"] == [1, 1, 1020, 1020]  # a 5×5 kernel, no padding


@pytest.mark.parametrize("elements", [1000, 600_000], ids=["small", "large"])
def test_binary_tensors_round_trip(cluster: Cluster, elements: int) -> None:
    values = np.random.default_rng(1).standard_normal(elements).astype("<f4")
    wire = {"b64": base64.b64encode(values.tobytes()).decode(), "shape": [elements]}
    wire["dtype"] = "float32"
    body = {"inputs": {"x": wire}, "steps": [{"op": "clone", "x": "x"}]}
    response = httpx.post(
        f"{cluster.nginx.url}/tensor/ops", json=body, params={"encoding": "b64"}, timeout=60
    )
    assert response.status_code == 200, response.text
    out = response.json()["outputs"]["out"]
    assert base64.b64decode(out["b64"]) == values.tobytes()


def test_a_png_answer_passes_through(cluster: Cluster) -> None:
    body = {"functions": ["relu"], "format": "png"}
    response = httpx.post(f"{cluster.nginx.url}/activate", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    assert response.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_progress_events_pass_through_unbuffered(cluster: Cluster) -> None:
    # A benchmark of about a second: its progress events must arrive as they are sent,
    # not all together with the result (nginx buffers responses, except those that say
    # X-Accel-Buffering: no, as a stream does). Buffered, they would come within
    # milliseconds of each other.
    body = {"m": 600, "k": 600, "n": 600, "dtype": "float64", "repeats": 100, "seed": 1}
    arrivals: list[tuple[str, float]] = []
    with (
        httpx.Client(timeout=60) as client,
        client.stream(
            "POST",
            f"{cluster.nginx.url}/benchmark",
            json=body,
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in EventSource(response).iter_sse():
            arrivals.append((event.event, time.monotonic()))
    names = [name for name, _ in arrivals]
    assert names[-1] == "result" and set(names[:-1]) == {"progress"}
    first, last = arrivals[0][1], arrivals[-1][1]
    assert last - first > 0.2, "the events came all at once: nginx buffered the stream"


def test_a_chunked_body_passes_through(cluster: Cluster) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"steps": [{"op": "arange",'
        yield b' "end": 5}]}'

    response = httpx.post(
        f"{cluster.nginx.url}/tensor/ops",
        content=chunks(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["out"]["data"] == [0, 1, 2, 3, 4]


def test_a_body_over_the_limit_is_a_json_413(cluster: Cluster) -> None:
    limit = replica_limits().max_body_bytes
    response = httpx.post(
        f"{cluster.nginx.url}/tensor/ops",
        content=b" " * (limit + 1),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    body = assert_error_shape(response, ErrorCode.BODY_SIZE_LIMIT)
    assert body["details"] == {
        "limit": "max_body_bytes",
        "allowed": limit,
        "requested": limit + 1,
    }


def test_a_chunked_body_over_the_limit_is_a_json_413(cluster: Cluster) -> None:
    limit = replica_limits().max_body_bytes

    def chunks() -> Iterator[bytes]:
        for _ in range(limit // (1 << 20) + 1):
            yield b" " * (1 << 20)

    try:
        response = httpx.post(
            f"{cluster.nginx.url}/tensor/ops",
            content=chunks(),
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
    except httpx.WriteError:  # nginx answered and closed while the body was still going
        pytest.skip("the connection closed before the answer could be read")
    body = assert_error_shape(response, ErrorCode.BODY_SIZE_LIMIT)
    assert body["details"]["allowed"] == limit
    assert body["details"]["requested"] is None  # a chunked body declares no size


# --- request ids --------------------------------------------------------------------------------


def test_the_callers_request_id_passes_through(cluster: Cluster) -> None:
    response = httpx.get(
        f"{cluster.nginx.url}/health", headers={"X-Request-ID": "caller-id.42"}, timeout=10
    )
    assert response.headers["x-request-id"] == "caller-id.42"
    assert len(log_lines(cluster.nginx, "caller-id.42")) == 1


@pytest.mark.parametrize("offered", [None, "not a usable id"], ids=["none", "unusable"])
def test_nginx_gives_a_request_id(cluster: Cluster, offered: str | None) -> None:
    headers = {"X-Request-ID": offered} if offered else {}
    response = httpx.get(f"{cluster.nginx.url}/health", headers=headers, timeout=10)
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id)  # nginx's $request_id, which the replica kept
    assert len(log_lines(cluster.nginx, request_id)) == 1


# --- nginx's own errors -------------------------------------------------------------------------


def test_no_replica_answering_is_a_json_503(nginx_path: str, tmp_path: Path) -> None:
    nobody = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    nginx = Nginx.serve(nginx_path, tmp_path, nobody, replica_limits())
    try:
        response = httpx.post(f"{nginx.url}/tensor/ops", json={"steps": []}, timeout=30)
    finally:
        nginx.stop()
    assert_error_shape(response, ErrorCode.WORKER_LOST)
    assert response.headers["retry-after"] == "1"


def test_a_silent_replica_is_a_json_504(nginx_path: str, tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        upstream = f"127.0.0.1:{silent.getsockname()[1]}"
        nginx = Nginx.serve(
            nginx_path, tmp_path, [upstream], replica_limits(), NGINX_PROXY_TIMEOUT_S="1"
        )
        try:
            response = httpx.get(f"{nginx.url}/health", timeout=30)
        finally:
            nginx.stop()
    body = assert_error_shape(response, ErrorCode.TIMEOUT)
    assert body["details"]["limit"] == "request_timeout_s"


# --- retries ------------------------------------------------------------------------------------

WORK = {
    "steps": [
        {"op": "randn", "size": [192, 192], "seed": 0, "out": "a"},
        {"op": "matmul", "x": "a", "y": "a", "out": "b"},
        {"op": "sum", "x": "b"},
    ]
}
"""A request that takes a compute slot (too big to run on the event loop)."""


def hold_a_slot(replica: Replica) -> socket.socket:
    """Ask ``replica`` for a large answer and read only its first bytes: the compute slot,
    held until the answer is sent, stays taken until the replica's send timeout."""
    body = b'{"steps": [{"op": "randn", "size": [4000000], "seed": 0}]}'
    sock = socket.create_connection(("127.0.0.1", replica.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        b"POST /tensor/ops HTTP/1.1\r\nHost: replica\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    sock.settimeout(30)
    assert sock.recv(12) == b"HTTP/1.1 200"  # computed; the answer is on its way
    return sock


def test_a_saturated_replicas_429_is_retried_on_the_other(cluster: Cluster) -> None:
    busy = cluster.replicas[0]
    slots = replica_limits().max_inflight_per_device
    held = [hold_a_slot(busy) for _ in range(slots)]
    try:
        ids = [f"saturated-{i}" for i in range(6)]
        for request_id in ids:
            response = httpx.post(
                f"{cluster.nginx.url}/tensor/ops",
                json=WORK,
                headers={"X-Request-ID": request_id},
                timeout=30,
            )
            assert response.status_code == 200, response.text
    finally:
        for sock in held:
            sock.close()
    retried = [
        line
        for request_id in ids
        for line in log_lines(cluster.nginx, request_id)
        if re.search(rf"upstream={busy.address}, \S+ upstream_status=429, 200 ", line)
    ]
    assert retried, "\n".join(cluster.nginx.access_log()[-10:])


# --- a replica lost and back under load ---------------------------------------------------------

LOAD = [
    ("POST", "/tensor/ops", {"steps": [{"op": "arange", "end": 8}]}),
    ("POST", "/tensor/ops", WORK),
    ("GET", "/health", None),
    (
        "POST",
        "/conv",
        {"input": np.arange(256, dtype=float).reshape(16, 16).tolist(), "kernels": ["edge"]},
    ),
]


class Load:
    """``threads`` callers, each sending the requests of :data:`LOAD` in turn through nginx
    at a steady pace, with no retries of their own."""

    def __init__(self, url: str, threads: int = 4, pause_s: float = 0.05) -> None:
        self.url = url
        self.pause_s = pause_s
        self.statuses: Counter[str] = Counter()
        self.failures: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)
        ]

    @property
    def done(self) -> int:
        with self._lock:
            return sum(self.statuses.values())

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _run(self, offset: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            index = offset
            while not self._stop.is_set():
                method, path, body = LOAD[index % len(LOAD)]
                index += 1
                try:
                    response = client.request(method, path, json=body)
                    outcome = str(response.status_code)
                    failure = None if response.status_code == 200 else response.text[:300]
                except httpx.HTTPError as exc:
                    outcome, failure = type(exc).__name__, repr(exc)
                with self._lock:
                    self.statuses[outcome] += 1
                    if failure is not None:
                        self.failures.append(f"{method} {path}: {outcome} {failure}")
                self._stop.wait(self.pause_s)

    def wait_for(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.done < count:
            assert time.monotonic() < deadline, f"only {self.done} requests in {timeout:g} s"
            time.sleep(0.05)


def served(replica: Replica) -> float:
    """Compute requests the replica has answered since it started (its own metrics)."""
    text = httpx.get(f"{replica.url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "torchlab_requests"
        for sample in family.samples
        if sample.name == "torchlab_requests_total" and sample.labels["method"] == "POST"
    )


def test_a_replica_killed_and_restarted_under_load_costs_the_caller_nothing(
    cluster: Cluster,
) -> None:
    lost = cluster.replicas[0]
    started = time.monotonic()
    with Load(cluster.nginx.url) as load:
        load.wait_for(100, timeout=60)
        lost.kill()
        killed_at = load.done
        load.wait_for(killed_at + 100, timeout=60)
        lost.start(wait=False)
        lost.wait()
        deadline = time.monotonic() + 30
        while served(lost) < 10:  # nginx gives the restarted replica its share again
            assert time.monotonic() < deadline, "the restarted replica got no traffic"
            time.sleep(0.2)
        load.wait_for(300, timeout=60)
    assert load.failures == [], load.failures[:5]
    assert set(load.statuses) == {"200"}
    assert load.done >= 300
    # What the callers did not see: requests nginx took from the lost replica to the other.
    moved = [line for line in cluster.nginx.access_log() if f"upstream={lost.address}, " in line]
    assert moved, "nginx never had to retry a request"
    assert time.monotonic() - started < 240
