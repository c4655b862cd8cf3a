"""Hostile requests at full size against a live server: for each, the time to its answer,
``/health`` latency (p99 and worst) while it ran, and the server's memory (its process and
its compute workers) before, at the peak and 1 s after. Memory is the processes' proportional
set size (PSS) summed: a page that several of them map counts once, so a worker started on
demand adds its own heap, not a second copy of torch's libraries, which their resident sizes
would count in each (about 500 MB a process).

The same kinds of request as ``tests/reliability/`` (which runs them small, with
assertions), at sizes that would have frozen or exhausted a server that did not count them:
each should be refused in milliseconds, or stopped at the time limit, with ``/health``
answering throughout and memory back near where it started.

    .venv/bin/python bench/adversarial.py [--json results.json]
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import orjson
from _common import Server, base_parser, environment, print_table, section, write_json
from _probe import HealthProbe, tree_pss_bytes

MB = 1 << 20
TIME_LIMIT_S = 10

Send = Callable[[str], httpx.Response]


def post_json(path: str, body: Any, **params: str) -> Send:
    def send(url: str) -> httpx.Response:
        return httpx.post(f"{url}{path}", json=body, params=params, timeout=120)

    return send


def post_raw(path: str, body: bytes) -> Send:
    def send(url: str) -> httpx.Response:
        headers = {"Content-Type": "application/json"}
        return httpx.post(f"{url}{path}", content=body, headers=headers, timeout=120)

    return send


def unread_responses(connections: int, body: dict[str, Any]) -> Send:
    """``connections`` clients that send a request for a large answer and never read it."""
    import socket  # noqa: PLC0415

    raw = orjson.dumps(body)

    def send(url: str) -> httpx.Response:
        host, port = url.removeprefix("http://").split(":")
        sockets = []
        for _ in range(connections):
            sock = socket.create_connection((host, int(port)))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            head = (
                f"POST /tensor/ops?encoding=b64 HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n\r\n"
            )
            sock.sendall(head.encode() + raw)
            sockets.append(sock)
        time.sleep(TIME_LIMIT_S)
        for sock in sockets:
            sock.close()
        return httpx.get(f"{url}/health", timeout=10)

    return send


def slow_steps(side: int, count: int) -> dict[str, Any]:
    return {
        "steps": [
            {"op": "randn", "size": [side, side], "out": "a", "seed": 0},
            *[{"op": "matmul", "x": "a", "y": "a", "out": "b"} for _ in range(count)],
        ]
    }


def corpus() -> list[tuple[str, Send]]:
    empty_rows = b",".join([b"[]"] * 20_000_000)
    count = 24_000_000
    v2_zeros = (
        b'{"inputs": [{"name": "input", "shape": [%d], "datatype": "FP32", "data": [' % count
        + b",".join([b"0"] * count)
        + b"]}]}"
    )
    return [
        (
            "loader: x [0, 2^26] (names per column)",
            post_json(
                "/data/loader",
                {"x": {"b64": "", "shape": [0, 1 << 26], "dtype": "float32"}, "batch_size": 1},
            ),
        ),
        (
            "split zeros [16M] into pieces of 1",
            post_json(
                "/tensor/ops",
                {
                    "steps": [
                        {"op": "zeros", "size": [16_000_000], "out": "z"},
                        {"op": "split", "x": "z", "split_size_or_sections": 1},
                    ]
                },
            ),
        ),
        ("65 dimensions by unsqueeze", post_json("/tensor/ops", _unsqueezes(64))),
        (
            "float16 matmul 4096^2",
            post_json(
                "/tensor/ops",
                {
                    "steps": [
                        {"op": "ones", "size": [4096, 4096], "dtype": "float16", "out": "a"},
                        {"op": "matmul", "x": "a", "y": "a"},
                    ]
                },
            ),
        ),
        (
            "GaussianBlur(801) on 1024^2",
            post_json(
                "/data/images",
                {
                    "dataset": "sample_images",
                    "batch_size": 1,
                    "transforms": [
                        {"name": "Resize", "size": [1024, 1024]},
                        {"name": "GaussianBlur", "kernel_size": 801},
                    ],
                },
            ),
        ),
        (
            "randn [2^25] float64 as JSON (a 659 MB answer)",
            post_json("/tensor/ops", {"steps": [{"op": "randn", "size": [1 << 25]}]}),
        ),
        (
            "16 clients never reading 256 MB answers",
            unread_responses(16, {"steps": [{"op": "randn", "size": [1 << 25]}]}),
        ),
        (
            f"body of 20M empty lists ({len(empty_rows) // MB} MB)",
            post_raw("/tensor/ops", b'{"inputs": {"a": [' + empty_rows + b']}, "steps": []}'),
        ),
        (
            f"V2 inference request of 24M zeros ({len(v2_zeros) // MB} MB)",
            post_raw("/v2/models/relu/infer", v2_zeros),
        ),
        (
            "a 40 MB object key",
            post_raw("/tensor/ops", orjson.dumps({"steps": [], "k" * (40 * MB): 1})),
        ),
        ("matmuls past the time limit", post_json("/tensor/ops", slow_steps(4000, 12))),
    ]


def _unsqueezes(count: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = [{"op": "ones", "size": [1], "out": "t"}]
    steps += [{"op": "unsqueeze", "x": "t", "dim": 0, "out": "t"} for _ in range(count)]
    return {"steps": steps}


def run(server: Server, name: str, send: Send) -> dict[str, Any]:
    before = tree_pss_bytes(server.pid)
    peak = before
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, tree_pss_bytes(server.pid))
            done.wait(0.05)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with HealthProbe(server.url) as probe:
        start = time.perf_counter()
        try:
            response = send(server.url)
            outcome = f"{response.status_code} {_code(response)}"
        except httpx.HTTPError as exc:
            outcome = f"{type(exc).__name__}"
        elapsed = time.perf_counter() - start
        time.sleep(1)
    done.set()
    watcher.join()
    after = tree_pss_bytes(server.pid)
    return {
        "case": name,
        "answer": outcome,
        "seconds": elapsed,
        "health_p99_ms": probe.p99 * 1000,
        "health_max_ms": probe.worst * 1000,
        "health_failures": probe.failures,
        "pss_before_mb": before / MB,
        "pss_peak_mb": peak / MB,
        "pss_after_mb": after / MB,
    }


def _code(response: httpx.Response) -> str:
    if response.headers.get("content-type", "").startswith("application/json"):
        try:
            return str(response.json().get("code", ""))
        except (ValueError, AttributeError):
            return ""
    return ""


def main() -> None:
    parser = base_parser(__doc__ or "", repeats=1)
    args = parser.parse_args()
    env = {"TORCHLAB_REQUEST_TIMEOUT_S": str(TIME_LIMIT_S), "TORCHLAB_DEVICE": "cpu"}
    results: dict[str, Any] = {"environment": environment(), "cases": []}
    with Server(env=env) as server:
        with section(f"hostile requests (time limit {TIME_LIMIT_S} s)"):
            for name, send in corpus():
                results["cases"].append(run(server, name, send))
                print(json.dumps(results["cases"][-1]))
        headers = [
            "case",
            "answer",
            "seconds",
            "health p99 ms",
            "health max ms",
            "PSS before MB",
            "PSS peak MB",
            "PSS after MB",
        ]
        rows = [
            [
                case["case"],
                case["answer"],
                case["seconds"],
                case["health_p99_ms"],
                case["health_max_ms"],
                case["pss_before_mb"],
                case["pss_peak_mb"],
                case["pss_after_mb"],
            ]
            for case in results["cases"]
        ]
        print()
        print_table(headers, rows)
    write_json(args.json, results)


if __name__ == "__main__":
    main()
