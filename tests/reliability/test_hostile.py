"""Hostile requests against a live server: each is refused fast or stopped at its deadline,
``/health`` keeps answering throughout, memory stays bounded, and the next normal request is
served.

The server runs with a 3 s time limit and two compute slots (``conftest.SMALL_LIMITS``).
Each case states the status it must get, the most time it may take, and the most the
server's memory (the uvicorn process and its compute workers) may grow.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from bench._probe import HealthProbe
from tests.reliability.conftest import Server

pytestmark = pytest.mark.slow

MB = 1 << 20
HEALTH_P99_S = 0.1


def post(
    server: Server, path: str, body: Any, timeout: float = 30.0, **params: str
) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", json=body, params=params, timeout=timeout)


def sender(server: Server, path: str, content: Any, timeout: float) -> Any:
    """A request of raw JSON text, to send later (each time): bytes, or a function that
    makes an iterator of them (a chunked body)."""

    def send() -> httpx.Response:
        return httpx.post(
            f"{server.url}{path}",
            content=content() if callable(content) else content,
            timeout=timeout,
            headers={"Content-Type": "application/json"},
        )

    return send


def assert_healthy_after(server: Server) -> None:
    """A normal compute request still gets its right answer."""
    body = {
        "inputs": {"a": [[1.0, 2.0], [3.0, 4.0]]},
        "steps": [{"op": "matmul", "x": "a", "y": "a", "out": "c"}],
    }
    response = post(server, "/tensor/ops", body, timeout=10)
    assert response.status_code == 200, response.text
    expected = np.array([[1.0, 2.0], [3.0, 4.0]]) @ np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(response.json()["outputs"]["c"]["data"], expected)


def run_case(
    server: Server,
    send: Any,
    *,
    status: int | tuple[int, ...],
    max_seconds: float,
    max_growth: int = 300 * MB,
    code: str | None = None,
) -> httpx.Response:
    """Send one hostile request while ``/health`` is probed; check status, time, health and
    memory growth, then that the server still answers a normal request.

    A ``/health`` p99 over the bound is measured once more before it fails the case: on a
    shared machine another process can take a core for that long, and a real stall (work
    on the event loop) is there every time."""
    for attempt in (1, 2):
        before = server.tree_rss()
        with HealthProbe(server.url) as probe:
            start = time.perf_counter()
            response: httpx.Response = send()
            elapsed = time.perf_counter() - start
            time.sleep(0.2)
        grown = server.tree_rss() - before
        # Shown by ``pytest -rA``: how near each case runs to its bounds.
        print(
            f"{response.status_code} in {elapsed:.2f} s (< {max_seconds:g}); /health p99 "
            f"{probe.p99 * 1000:.0f} ms, worst {probe.worst * 1000:.0f} ms; "
            f"RSS +{grown / MB:.0f} MB"
        )
        statuses = status if isinstance(status, tuple) else (status,)
        assert response.status_code in statuses, response.text[:500]
        if code is not None:
            assert response.json()["code"] == code, response.text[:500]
        assert elapsed < max_seconds, f"took {elapsed:.2f} s"
        assert probe.failures == 0
        assert grown < max_growth, f"memory grew by {grown / MB:.0f} MB"
        assert_healthy_after(server)
        if probe.p99 < HEALTH_P99_S:
            return response
        assert attempt == 1, f"/health p99 {probe.p99 * 1000:.0f} ms, twice"
    raise AssertionError("unreachable")


# --- 1. costs the plan must count ------------------------------------------------------------


def test_zero_size_dimension_next_to_a_huge_one_in_the_loader(server: Server) -> None:
    body = {"x": {"b64": "", "shape": [0, 67108864], "dtype": "float32"}, "batch_size": 1}
    run_case(server, lambda: post(server, "/data/loader", body), status=(413, 422), max_seconds=1)


@pytest.mark.parametrize("extent", [2**26, 2**40, 2**62])
def test_empty_tensors_with_huge_extents(server: Server, extent: int) -> None:
    body = {"steps": [{"op": "zeros", "size": [0, extent]}]}
    run_case(
        server, lambda: post(server, "/tensor/ops", body), status=(200, 413, 422), max_seconds=1
    )


@pytest.mark.parametrize(
    "step",
    [
        {"op": "split", "x": "z", "split_size_or_sections": 1},
        {"op": "chunk", "x": "z", "chunks": 4_000_000},
    ],
    ids=["split", "chunk"],
)
def test_many_pieces_are_charged_before_they_are_made(server: Server, step: dict[str, Any]) -> None:
    body = {"steps": [{"op": "zeros", "size": [4_000_000], "out": "z"}, {**step, "out": "p"}]}
    run_case(server, lambda: post(server, "/tensor/ops", body), status=413, max_seconds=1)


def test_more_than_eight_dimensions_at_any_step(server: Server) -> None:
    steps: list[dict[str, Any]] = [{"op": "ones", "size": [1], "out": "t"}]
    steps += [{"op": "unsqueeze", "x": "t", "dim": 0, "out": "t"} for _ in range(63)]
    run_case(
        server,
        lambda: post(server, "/tensor/ops", {"steps": steps}),
        status=(413, 422),
        max_seconds=1,
    )


# --- 2. costs the plan must get right ----------------------------------------------------------


def test_a_half_precision_matmul_is_refused_by_its_predicted_time(server: Server) -> None:
    body = {
        "steps": [
            {"op": "ones", "size": [2048, 2048], "dtype": "float16", "out": "a"},
            {"op": "matmul", "x": "a", "y": "a"},
        ]
    }
    response = run_case(
        server,
        lambda: post(server, "/tensor/ops", body),
        status=413,
        max_seconds=1,
        code="over_time_budget",
    )
    details = response.json()["details"]
    assert details["requested"] > details["allowed"]


def test_a_huge_blur_kernel_is_charged_as_the_convolution_it_is(server: Server) -> None:
    body = {
        "dataset": "sample_images",
        "batch_size": 1,
        "transforms": [
            {"name": "Resize", "size": [1024, 1024]},
            {"name": "GaussianBlur", "kernel_size": 801},
        ],
    }
    run_case(server, lambda: post(server, "/data/images", body), status=413, max_seconds=2)


# --- 3. memory after the work: responses are budgeted ------------------------------------------


def test_a_response_over_the_byte_limit_is_refused_before_it_is_encoded(server: Server) -> None:
    # 8M float64 zeros: 64 MB of tensor, up to 200 MB of JSON (the limit here is 64 MiB).
    body = {"steps": [{"op": "zeros", "size": [8_000_000], "dtype": "float64"}]}
    response = run_case(
        server,
        lambda: post(server, "/tensor/ops", body),
        status=413,
        max_seconds=2,
        code="response_bytes_limit",
    )
    assert "?encoding=" in response.json()["error"]


def _send_and_never_read(
    server: Server,
    body: bytes,
    *,
    path: str = "/tensor/ops?encoding=b64",
    accept: str = "application/json",
    count: int = 1,
) -> socket.socket:
    """A connection that sends ``count`` requests (pipelined) and reads nothing."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAccept: {accept}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock.sendall((head + body) * count)
    return sock


def test_clients_that_never_read_their_responses_hold_bounded_memory(server: Server) -> None:
    body = orjson.dumps({"steps": [{"op": "randn", "size": [8_000_000], "dtype": "float64"}]})
    before = server.tree_rss()
    with HealthProbe(server.url) as probe:
        sockets = [_send_and_never_read(server, body) for _ in range(8)]
        time.sleep(6)
        peak = server.tree_rss()
        for sock in sockets:
            sock.close()
    assert probe.p99 < HEALTH_P99_S, f"/health p99 {probe.p99 * 1000:.0f} ms"
    # 8 × 85 MB of base64 would be 680 MB: what is held is bounded by the bytes in flight.
    assert peak - before < 600 * MB, f"memory grew by {(peak - before) / MB:.0f} MB"
    assert_healthy_after(server)


def test_answers_never_read_are_let_go_at_the_send_timeout(server: Server) -> None:
    # Two answers of 53 MB (base64 of 5,000,000 float64, under the 64 MB limit here), each
    # in the shared memory its worker wrote it to, go to clients that read nothing. Past
    # the send timeout (3 s) the server lets them go, though the connections stay open:
    # what it handed the connection was copies of the pieces, not views of the answer.
    body = orjson.dumps({"steps": [{"op": "randn", "size": [5_000_000], "dtype": "float64"}]})
    before = server.shared_mapped()
    sockets = [_send_and_never_read(server, body) for _ in range(2)]
    try:
        time.sleep(7)
        held = server.shared_mapped() - before
    finally:
        for sock in sockets:
            sock.close()
    assert held < 32 * MB, f"{held / MB:.0f} MB of answers still mapped"
    assert_healthy_after(server)


def test_pipelined_requests_never_read_give_their_compute_slots_back(server: Server) -> None:
    # Each answer (base64 of 150,000 float32, 800 kB: one piece) goes to a connection that
    # reads nothing: once its buffers are full, the next pipelined answer waits to start,
    # holding the compute slot it ran in. Two such connections hold both slots; a send
    # timeout (3 s here) on the start as on every piece gives them back.
    body = orjson.dumps({"steps": [{"op": "randn", "size": [150_000]}]})
    sockets = [_send_and_never_read(server, body, count=12) for _ in range(2)]
    try:
        time.sleep(5)  # every slot taken and held, then past the send timeout
        _assert_a_slot_is_free(server)
    finally:
        for sock in sockets:
            sock.close()
    assert_healthy_after(server)


def test_streams_never_read_hold_bounded_memory(server: Server) -> None:
    # Each stream's result event (the first batch of the sample photos, 17 MB of JSON) goes
    # to a client that reads nothing: in pieces, each within the send timeout (3 s here),
    # so that the server holds one piece for each, not the whole result, and not for ever.
    body = orjson.dumps({"dataset": "sample_images", "batch_size": 2, "include_data": True})
    before = server.anonymous()
    with HealthProbe(server.url) as probe:
        sockets = [
            _send_and_never_read(server, body, path="/data/images", accept="text/event-stream")
            for _ in range(8)
        ]
        try:
            time.sleep(6)  # every stream stuck in its result, then past the send timeout
            growth = server.anonymous() - before
            _assert_a_slot_is_free(server)
        finally:
            for sock in sockets:
                sock.close()
    assert probe.p99 < HEALTH_P99_S, f"/health p99 {probe.p99 * 1000:.0f} ms"
    # The whole results, held in the connections' buffers, would be 8 × 17 MB and more.
    assert growth < 64 * MB, f"the server's heap grew by {growth / MB:.0f} MB"
    assert_healthy_after(server)


def _assert_a_slot_is_free(server: Server) -> None:
    """Requests that need a compute slot (4,096 elements and more run in a worker) are
    served."""
    square = {
        "steps": [
            {"op": "ones", "size": [64, 64], "out": "a"},
            {"op": "matmul", "x": "a", "y": "a"},
        ]
    }
    for _ in range(3):
        response = post(server, "/tensor/ops", square, timeout=20)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["out"]["data"][0] == [64.0] * 64


# --- 4. the event loop stays free ----------------------------------------------------------------


def _stall_binary(server: Server, nbytes: int) -> socket.socket:
    """A connection that starts a binary request of ``nbytes`` of float32, sends its JSON
    part and nothing more."""
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    tensor = {"shape": [nbytes // 4], "dtype": "float32", "binary_data_size": nbytes}
    part = orjson.dumps({"inputs": {"a": tensor}, "steps": [{"op": "clone", "x": "a"}]})
    head = (
        f"POST /tensor/ops HTTP/1.1\r\nHost: {host}\r\n"
        f"Inference-Header-Content-Length: {len(part)}\r\n"
        f"Content-Length: {len(part) + nbytes}\r\n\r\n"
    ).encode()
    sock.sendall(head + part)
    return sock


def _read_answer(sock: socket.socket, timeout: float) -> tuple[int, dict[str, str], bool]:
    """The status and headers of the response on ``sock``, and whether the server closed
    the connection after it."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(rest) < int(headers["content-length"]):
        rest += sock.recv(65536)
    sock.settimeout(1.0)
    try:
        closed = sock.recv(1) == b""
    except TimeoutError:
        closed = False
    return int(lines[0].split()[1]), headers, closed


def _answers_beside_health(
    server: Server, sockets: list[socket.socket]
) -> list[tuple[int, dict[str, str], bool]]:
    """``GET /health`` answered within a second while ``sockets`` wait on the server, then
    the answer on each of them (:func:`_read_answer`); the sockets are closed after."""
    try:
        start = time.perf_counter()
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
        assert time.perf_counter() - start < 1.0
        return [_read_answer(sock, timeout=10) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def test_bodies_that_stall_hold_no_more_than_the_room_for_bodies(server: Server) -> None:
    # Each request declares a 60 MB tensor in the binary framing, sends its JSON part (about
    # 150 bytes) and then nothing. A body's buffer is taken when its JSON part is read, so
    # these six would have held 384 MB, for as long as their clients liked, for 1 kB sent.
    # Now a body is charged its length before it is read: two fit in the room for bodies
    # held at once (128 MiB here), the others wait 1 s (queue_timeout_s) and get a 429; the
    # two are cut off at the body's deadline (2 s here, plus a second per 64 KiB that came),
    # with a 408 and their connections closed.
    before = server.shared_mapped()
    sockets = [_stall_binary(server, 60_000_000) for _ in range(6)]
    time.sleep(1.5)
    held = server.shared_mapped() - before
    answers = _answers_beside_health(server, sockets)
    assert sorted(status for status, _, _ in answers) == [408, 408, 429, 429, 429, 429]
    assert held <= 128 * MB, f"{held / MB:.0f} MB of request buffers for 1 kB of bodies"
    for status, headers, closed in answers:
        if status == 408:
            assert closed and headers["connection"] == "close"
        else:
            assert headers["retry-after"] == "1"
    assert_healthy_after(server)


def test_connections_whose_headers_never_end_are_closed_at_the_header_timeout(
    server: Server,
) -> None:
    # Slowloris: each connection sends a request line and one header, then a byte of another
    # header now and then, and never ends its head. uvicorn alone times nothing until a head
    # is complete (the app is not called before), so each would hold its socket for as long
    # as its client liked. Now each is answered 408 at header_timeout_s (2 s here), and
    # closed, however it trickles; the server answers others meanwhile.
    host, port = server.url.removeprefix("http://").split(":")
    sockets = []
    for _ in range(50):
        sock = socket.create_connection((host, int(port)))
        sock.sendall(f"POST /tensor/ops HTTP/1.1\r\nHost: {host}\r\nX-Slow: ".encode())
        sockets.append(sock)
    start = time.perf_counter()
    for _ in range(3):
        time.sleep(0.4)
        for sock in sockets:
            sock.sendall(b"a")
    answers = _answers_beside_health(server, sockets)
    assert time.perf_counter() - start < 6.0
    for status, headers, closed in answers:
        assert (status, headers["connection"], closed) == (408, "close", True)
    assert_healthy_after(server)


def test_a_huge_body_of_tiny_elements_is_parsed_off_the_loop(server: Server) -> None:
    rows = b",".join([b"[]"] * 9_000_000)
    body = b'{"inputs": {"a": [' + rows + b']}, "steps": []}'
    assert len(body) > 25 * MB

    send = sender(server, "/tensor/ops", body, timeout=60)
    # 9M lists, no elements: the worker that reads it counts them first (max_body_lists,
    # 4M) and refuses it before building any. (Read, it took seconds and over 1 GB.) The
    # growth allowed is the body workers, started on first use.
    run_case(server, send, status=(413,), max_seconds=30, max_growth=2000 * MB)


@pytest.mark.parametrize("datatype", ["FP32", "BYTES"])
def test_a_huge_inference_request_of_tiny_values_is_parsed_off_the_loop(
    server: Server, datatype: str
) -> None:
    # The V2 route reads its own bodies: a large one goes to a body worker all the same,
    # valid (decoded there) or not (refused there, before its data is read).
    count = 4_000_000
    body = (
        b'{"inputs": [{"name": "input", "shape": [%d], "datatype": "%s", "data": ['
        % (count, datatype.encode())
        + b"0," * (count - 1)
        + b"0]}]}"
    )

    send = sender(server, "/v2/models/relu/infer", body, timeout=60)

    status = 200 if datatype == "FP32" else 400
    response = run_case(server, send, status=(status, 504), max_seconds=30, max_growth=2000 * MB)
    if response.status_code == 200:
        output = response.json()["outputs"][0]
        assert output["shape"] == [count] and not any(output["data"][:1000])


@pytest.mark.parametrize("encoding", ["json", "form"])
def test_a_huge_fit_of_tiny_values_is_parsed_off_the_loop(server: Server, encoding: str) -> None:
    # Routes that also take forms read their own bodies: a large one, or large form fields,
    # go to a body worker all the same.
    count = 2_000_000
    x = b"[" + b",".join([b"[0]"] * count) + b"]"
    y = b"[" + b",".join([b"0"] * count) + b"]"
    if encoding == "json":
        send = sender(server, "/regress/linear", b'{"x": ' + x + b', "y": ' + y + b"}", 60)
    else:

        def send() -> httpx.Response:
            fields = {"x": (None, x), "y": (None, y)}
            return httpx.post(f"{server.url}/regress/linear", files=fields, timeout=60)

    response = run_case(server, send, status=(200, 504), max_seconds=30, max_growth=2000 * MB)
    if response.status_code == 200:
        assert response.json()["model"]["coef"] == [0.0]


def test_a_large_csv_is_parsed_off_the_server(server: Server) -> None:
    # Parsed cell by cell in Python: in a thread of the server that would hold the
    # interpreter lock, and so slow the event loop, for as long. A body worker parses it.
    csv = b"a,b\n" + b"0,0\n" * 990_000

    def send() -> httpx.Response:
        files = {"file": ("data.csv", csv, "text/csv")}
        return httpx.post(f"{server.url}/regress/linear", files=files, timeout=60)

    response = run_case(server, send, status=(200, 504), max_seconds=30, max_growth=2000 * MB)
    if response.status_code == 200:
        assert response.json()["model"]["features"] == ["a"]


def test_a_body_of_many_values_outside_tensors_is_refused_before_the_server_reads_it(
    server: Server,
) -> None:
    # 300,000 names to return: no tensor for the worker to take out, so the server would
    # build every value itself; the worker counts them first (max_body_values). (300,000
    # steps are refused sooner: a program holds at most 4,096.)
    body = orjson.dumps(
        {"steps": [{"op": "arange", "end": 1, "out": "a"}], "return": ["a"] * 300_000}
    )
    send = sender(server, "/tensor/ops", body, timeout=60)
    run_case(server, send, status=(413, 504), max_seconds=30, max_growth=2000 * MB)


def test_a_chunked_body_is_not_taken_for_a_small_one(server: Server) -> None:
    data = base64.b64encode(np.zeros(1_000_000, dtype=np.float32).tobytes()).decode()
    payload = orjson.dumps(
        {
            "inputs": {"a": {"b64": data, "shape": [1_000_000], "dtype": "float32"}},
            "steps": [{"op": "sum", "x": "a", "out": "s"}],
        }
    )

    def chunks() -> Any:
        for start in range(0, len(payload), 65536):
            yield payload[start : start + 65536]

    send = sender(server, "/tensor/ops", chunks, timeout=30)

    response = run_case(server, send, status=200, max_seconds=5)
    assert response.json()["outputs"]["s"]["data"] == 0.0


def test_an_error_quotes_little_of_a_huge_key(server: Server) -> None:
    key = "k" * (20 * MB)
    body = orjson.dumps({"steps": [], key: 1})

    send = sender(server, "/tensor/ops", body, timeout=30)

    response = run_case(server, send, status=422, max_seconds=10, max_growth=1000 * MB)
    assert len(response.content) < 4096


# --- the deadline is the backstop ----------------------------------------------------------------


def _compute_workers(server: Server) -> list[int]:
    return [pid for pid in server.descendants() if pid != server.pid]


SLOW_PROGRAM = {
    "steps": [
        {"op": "randn", "size": [4000, 4000], "dtype": "float64", "out": "a", "seed": 0},
        *[{"op": "matmul", "x": "a", "y": "a", "out": "b"} for _ in range(7)],
        {"op": "sum", "x": "b", "out": "s"},
    ],
    "return": ["s"],
}
"""0.9 TFLOP of float64 work, about ten seconds here (past the 3 s limit on any CPU),
predicted as a fraction of a second by the optimistic server; its answer is one number."""


def test_an_over_long_request_is_stopped_at_its_deadline(optimistic_server: Server) -> None:
    server = optimistic_server
    response = run_case(
        server,
        lambda: post(server, "/tensor/ops", SLOW_PROGRAM),
        status=504,
        max_seconds=4.5,
        code="timeout",
    )
    assert response.json()["details"]["allowed"] == 3
    start = time.perf_counter()
    assert_healthy_after(server)  # the slot was freed with the worker, not minutes later
    assert time.perf_counter() - start < 1


def test_a_worker_killed_mid_request_is_a_503_and_is_replaced(optimistic_server: Server) -> None:
    server = optimistic_server
    result: dict[str, httpx.Response] = {}

    def send() -> None:  # seconds of work on any CPU, predicted within the time limit
        result["response"] = post(server, "/tensor/ops", SLOW_PROGRAM)

    thread = threading.Thread(target=send)
    busy_before = _settled_workers(server)
    thread.start()
    # The worker at work, killed as soon as it is seen working (50 ms of CPU), long before
    # its work could end (a fixed wait was once longer than a shorter program took).
    busiest = None
    seen_until = time.monotonic() + 10
    while busiest is None and time.monotonic() < seen_until:
        time.sleep(0.02)
        worked = {
            pid: _cpu_ticks(pid) - busy_before.get(pid, 0) for pid in _compute_workers(server)
        }
        pid = max(worked, key=worked.__getitem__, default=None)
        if pid is not None and worked[pid] * 1000 // os.sysconf("SC_CLK_TCK") >= 50:
            busiest = pid
    assert busiest is not None, "no worker took the work"
    os.kill(busiest, signal.SIGKILL)
    thread.join(timeout=30)
    response = result["response"]
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "worker_lost"
    assert_healthy_after(server)


def _settled_workers(server: Server) -> dict[int, int]:
    """The CPU ticks of each compute worker once none uses any for 0.2 s (a worker that
    replaced a killed one may still be starting, which would look like work)."""
    ticks = {pid: _cpu_ticks(pid) for pid in _compute_workers(server)}
    until = time.monotonic() + 20
    while time.monotonic() < until:
        time.sleep(0.2)
        now = {pid: _cpu_ticks(pid) for pid in _compute_workers(server)}
        if now == ticks:
            break
        ticks = now
    return ticks


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def metric(server: Server, name: str, **labels: str) -> float:
    """A counter of ``GET /metrics``, summed over the series with ``labels``."""
    total = 0.0
    for line in httpx.get(f"{server.url}/metrics", timeout=10).text.splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] != name:
            continue
        if all(f'{key}="{want}"' in series for key, want in labels.items()):
            total += float(value)
    return total


def test_a_client_that_disconnects_frees_its_slot_at_once(server: Server) -> None:
    body = {
        "steps": [
            {"op": "randn", "size": [1500, 1500], "out": "a", "seed": 0},
            # 200 GFLOP: seconds here (two at once on two cores), well past the client's
            # 0.3 s, and predicted inside the 3 s limit (2.6 s with the reads).
            *[{"op": "matmul", "x": "a", "y": "a", "out": "a"} for _ in range(30)],
        ]
    }
    kills = metric(server, "torchlab_worker_kills_total", reason="cancelled")
    left = metric(server, "torchlab_requests_total", status="499")
    for _ in range(2):  # both slots
        with pytest.raises(httpx.TimeoutException):
            post(server, "/tensor/ops", body, timeout=0.3)
    start = time.perf_counter()
    _assert_a_slot_is_free(server)
    assert time.perf_counter() - start < 1.5
    # Both workers were stopped, not left to finish for nobody: uvicorn does not cancel a
    # request whose client has gone; the service watches for it.
    assert metric(server, "torchlab_worker_kills_total", reason="cancelled") == kills + 2
    assert metric(server, "torchlab_requests_total", status="499") == left + 2
    assert_healthy_after(server)


def test_a_client_that_leaves_short_work_lets_it_finish_rather_than_kill_a_worker(
    server: Server,
) -> None:
    # Replacing a worker costs about 40 ms of CPU: a client sending a 1 ms request and
    # closing at once, over and over, had one worker killed for every five requests.
    host, port = server.url.removeprefix("http://").split(":")
    body = orjson.dumps(
        {
            "steps": [
                {"op": "ones", "size": [64, 64], "out": "a"},
                {"op": "matmul", "x": "a", "y": "a", "out": "a"},
            ]
        }
    )
    request = (
        f"POST /tensor/ops HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    kills = metric(server, "torchlab_worker_kills_total", reason="cancelled")
    left = metric(server, "torchlab_requests_total", status="499")
    answered = metric(server, "torchlab_requests_total", status="200")
    for _ in range(20):
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(request)
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while (
        metric(server, "torchlab_requests_total", status="499")
        + metric(server, "torchlab_requests_total", status="200")
        < left + answered + 20
    ):
        assert time.monotonic() < deadline, "some requests were never counted"
        time.sleep(0.1)
    assert metric(server, "torchlab_worker_kills_total", reason="cancelled") == kills
    assert_healthy_after(server)


@pytest.mark.parametrize("kind", ["binary", "multipart"])
def test_a_client_that_leaves_mid_body_is_no_server_error(server: Server, kind: str) -> None:
    host, port = server.url.removeprefix("http://").split(":")
    if kind == "binary":
        part = orjson.dumps(
            {
                "inputs": {
                    "a": {"shape": [1 << 20], "dtype": "uint8", "binary_data_size": 1 << 20}
                },
                "steps": [{"op": "sum", "x": "a"}],
            }
        )
        head = (
            f"POST /tensor/ops HTTP/1.1\r\nHost: {host}\r\n"
            f"Inference-Header-Content-Length: {len(part)}\r\n"
            f"Content-Length: {len(part) + (1 << 20)}\r\n\r\n"
        ).encode() + part
    else:
        head = (
            f"POST /conv HTTP/1.1\r\nHost: {host}\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\n"
            f"Content-Length: {1 << 20}\r\n\r\n"
            '--b\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'
        ).encode()
    errors = metric(server, "torchlab_requests_total", status="500")
    left = metric(server, "torchlab_requests_total", status="499")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(head + b"\0" * 1000)
        time.sleep(0.3)
    deadline = time.monotonic() + 5
    while metric(server, "torchlab_requests_total", status="499") == left:
        assert time.monotonic() < deadline, "the request was never counted"
        time.sleep(0.1)
    assert metric(server, "torchlab_requests_total", status="500") == errors
    assert_healthy_after(server)


def test_an_answer_read_slowly_is_cut_off_at_the_send_timeout(server: Server) -> None:
    # 24 MiB read a MiB every second: each piece well within the send timeout (3 s), the
    # whole answer not. Timed piece by piece, such readers held answers (and slots) in
    # memory for as long as they liked; the answer is timed whole.
    host, port = server.url.removeprefix("http://").split(":")
    body = orjson.dumps({"steps": [{"op": "full", "size": [6 << 20], "fill_value": 1.0}]})
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        sock.sendall(
            f"POST /tensor/ops?encoding=binary HTTP/1.1\r\nHost: {host}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        start, taken = time.monotonic(), 0
        while time.monotonic() - start < 15:
            piece = sock.recv(1 << 20)
            if not piece:
                break
            taken += len(piece)
            time.sleep(len(piece) / MB)
        took = time.monotonic() - start
    assert taken < 24 * MB, "the whole answer was sent"
    assert took < 8, f"the server kept sending for {took:.1f} s"
    _assert_a_slot_is_free(server)
