"""Replicas behind nginx: requests/s of a medium request through nginx with 1 and 2 replicas.

Two replicas (``uvicorn service.main:app``, each with torch's compute in one thread,
``TORCHLAB_WORKER_THREADS=1``) run throughout; two nginx instances with the project's
configuration (``deploy/nginx/``, rendered by ``deploy.nginx.render``) stand in front, one
with the first replica only, one with both. The request is a 256×256 float32 image (base64)
to ``POST /conv?encoding=b64`` with two 3×3 kernels and a 2/2 max pooling. The load (a
Python generator: processes with one keep-alive connection each) goes in turn to the first
replica directly, to nginx with one replica and to nginx with both, ``--repeats`` times; the
best run of each counts.

Printed: ``nginx (1 replica) / direct``, the balancer's own cost, and ``nginx (2) / nginx
(1)``, what a second replica adds. The second needs cores to add anything: with fewer than
two per replica (this machine has 2 in all, shared with the load generator and nginx), it
shows the balancer's overhead more than a gain, and its goal is only that a second replica
costs little.

    .venv/bin/python bench/scale.py [--duration 5] [--concurrency 4] [--repeats 2]
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from _common import (
    ROOT,
    Server,
    base_parser,
    environment,
    free_port,
    print_ratio,
    print_table,
    write_json,
)
from overhead import python_load

sys.path.insert(0, str(ROOT))
from deploy.nginx.render import write_standalone
from service.config import Limits

SIDE = 256
PATH = "/conv?encoding=b64"
OVERHEAD_GOAL = 0.8
"""nginx with one replica against that replica directly: the balancer costs at most 20%."""
SCALE_GOAL_PER_CORES = {True: 1.6, False: 0.8}
"""Two replicas against one: 1.6× with two cores or more per replica; otherwise (they share
the cores) at most 20% less."""
REPLICA_ENV = {"TORCHLAB_DEVICE": "cpu", "TORCHLAB_WORKER_THREADS": "1"}


def request_body() -> bytes:
    image = np.random.default_rng(0).random((SIDE, SIDE), dtype=np.float32) * 255
    wire = {"b64": base64.b64encode(image.tobytes()).decode(), "shape": [SIDE, SIDE]}
    return orjson.dumps(
        {
            "input": {**wire, "dtype": "float32"},
            "kernels": ["sobel_x", "sobel_y"],
            "pool": {"kind": "max", "kernel_size": 2, "stride": 2},
        }
    )


def nginx_binary() -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = shutil.which("nginx", path=path)
    if found is None:
        raise SystemExit("nginx is not installed (make test installs Debian's package)")
    return found


@contextlib.contextmanager
def nginx(upstreams: list[str], prefix: Path) -> Iterator[int]:
    """nginx with the project's configuration in front of ``upstreams``; yields its port."""
    port = free_port()
    main = write_standalone(prefix, upstreams, Limits(), listen=f"127.0.0.1:{port}")
    process = subprocess.Popen(
        [nginx_binary(), "-p", str(main.parent), "-c", str(main), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"nginx did not start: {(prefix / 'error.log').read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=15)


def check(port: int, body: bytes) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("POST", PATH, body=body, headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    text = response.read()
    conn.close()
    if response.status != 200:
        raise SystemExit(f"HTTP {response.status} from port {port}: {text[:300]!r}")


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=2)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--concurrency", type=int, default=4, help="connections (4)")
    args = parser.parse_args()
    body = request_body()
    cores = os.cpu_count() or 1
    print(
        f"POST {PATH} with a {SIDE}x{SIDE} float32 image ({len(body) / 1024:.0f} KiB body), "
        f"concurrency {args.concurrency}, {args.duration:g} s per run, {args.repeats} rounds, "
        f"{cores} cores"
    )
    runs: list[dict[str, Any]] = []
    with (
        Server(env=REPLICA_ENV) as first,
        Server(env=REPLICA_ENV) as second,
        tempfile.TemporaryDirectory() as scratch,
    ):
        replicas = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
        with (
            nginx(replicas[:1], Path(scratch) / "one") as one,
            nginx(replicas, Path(scratch) / "two") as two,
        ):
            targets = {"direct": first.port, "nginx, 1 replica": one, "nginx, 2 replicas": two}
            for port in targets.values():
                check(port, body)
                python_load(port, PATH, body, 1.0, 2)  # warm up: workers, first allocations
            for round_ in range(args.repeats):
                for name, port in targets.items():
                    result = python_load(port, PATH, body, args.duration, args.concurrency)
                    result.update({"target": name, "round": round_ + 1})
                    runs.append(result)
                    print(f"  round {round_ + 1} {name:18s} {result['rps']:7.1f} req/s", flush=True)
                    time.sleep(0.5)

    best = {name: max(r["rps"] for r in runs if r["target"] == name) for name in targets}
    print()
    print_table(
        ["target", "round", "req/s", "ok", "errors", "p50 ms", "p99 ms"],
        [
            [
                r["target"],
                r["round"],
                f"{r['rps']:.1f}",
                r["ok"],
                r["errors"],
                "-" if r["p50_ms"] is None else f"{r['p50_ms']:.1f}",
                "-" if r["p99_ms"] is None else f"{r['p99_ms']:.1f}",
            ]
            for r in runs
        ],
    )
    print()
    overhead = print_ratio(
        "nginx (1 replica) / direct",
        best["nginx, 1 replica"] / best["direct"],
        OVERHEAD_GOAL,
        "higher",
    )
    enough_cores = cores >= 4
    scale = print_ratio(
        "nginx (2 replicas) / nginx (1 replica)",
        best["nginx, 2 replicas"] / best["nginx, 1 replica"],
        SCALE_GOAL_PER_CORES[enough_cores],
        "higher",
    )
    if not enough_cores:
        print(
            f"  NOTE: {cores} cores for two replicas, nginx and the load generator: the second "
            "replica has no core of its own, so this ratio shows the balancer's overhead more "
            "than the gain of a replica. Run it where each replica has two cores or more."
        )
    if any(r["errors"] for r in runs):
        print("  WARNING: some requests failed (non-200 or connection errors); see the table")
    write_json(
        args.json,
        {
            "env": environment(),
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "runs": runs,
            "best_rps": best,
            "ratios": [overhead, scale],
        },
    )


if __name__ == "__main__":
    main()
