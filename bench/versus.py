"""This tree against an earlier commit of it: the same requests to both servers, interleaved.

Checks the rule that a change must not make ``bench/transport.py``'s JSON and base64 round
trips or ``bench/overhead.py``'s tiny request more than 10% slower than ``--against`` (by
default ``e3d6500``, the last commit before compute moved to worker processes). The commit
is checked out in a temporary git worktree and served by its own uvicorn with this venv;
both servers run at once and every round sends each request to both, in alternating order,
so that whatever else the machine does falls on both alike. Each request is timed whole
(send the prepared body on a keep-alive ``httpx.Client``, read the whole answer).

* json: 1000×1000 float32 through a ``clone`` step as nested lists, answered as lists.
* b64: the same as ``{"b64", "shape", "dtype"}`` with ``?encoding=b64``.
* tiny: ``{"steps": [{"op": "arange", "end": 4}]}`` (latency here; ``overhead.py`` measures
  throughput under load).

Goal: this tree's median / the other's <= 1.1 for each.

    .venv/bin/python bench/versus.py [--against COMMIT] [--repeats 30]
"""

from __future__ import annotations

import base64
import statistics
import time
from typing import Any

import httpx
import numpy as np
import orjson
from _common import (
    Server,
    base_parser,
    environment,
    print_ratio,
    print_table,
    worktree,
    write_json,
)

GOAL = 1.1
BEFORE_WORKERS = "e3d6500"
JSON_HEADERS = {"content-type": "application/json"}


def bodies(rows: int, cols: int) -> dict[str, tuple[bytes, dict[str, str]]]:
    """name: (body, query parameters)."""
    a = np.random.default_rng(0).standard_normal((rows, cols)).astype(np.float32)
    steps = [{"op": "clone", "x": "a"}]
    b64 = {"b64": base64.b64encode(a.tobytes()).decode(), "shape": [rows, cols]}
    return {
        "json": (
            orjson.dumps({"inputs": {"a": a}, "steps": steps}, option=orjson.OPT_SERIALIZE_NUMPY),
            {},
        ),
        "b64": (
            orjson.dumps({"inputs": {"a": {**b64, "dtype": "float32"}}, "steps": steps}),
            {"encoding": "b64"},
        ),
        "tiny": (orjson.dumps({"steps": [{"op": "arange", "end": 4}]}), {}),
    }


def timed(client: httpx.Client, url: str, body: bytes, params: dict[str, str]) -> float:
    start = time.perf_counter()
    response = client.post(f"{url}/tensor/ops", content=body, headers=JSON_HEADERS, params=params)
    response.read()
    elapsed = time.perf_counter() - start
    if response.status_code != 200:
        raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
    return elapsed


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=30)
    parser.add_argument("--against", default=BEFORE_WORKERS, help="the commit to compare with")
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--cols", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (3)")
    args = parser.parse_args()
    cases = bodies(args.rows, args.cols)
    results: dict[str, Any] = {"env": environment(), "against": args.against, "cases": {}}
    with (
        worktree(args.against) as other,
        Server(cwd=other) as theirs,
        Server() as ours,
        httpx.Client(timeout=120.0) as client,
    ):
        servers = {"this tree": ours.url, args.against: theirs.url}
        rows = []
        for name, (body, params) in cases.items():
            times: dict[str, list[float]] = {label: [] for label in servers}
            order = list(servers.items())
            for round_ in range(args.warmup + args.repeats):
                for label, url in order if round_ % 2 else order[::-1]:
                    elapsed = timed(client, url, body, params)
                    if round_ >= args.warmup:
                        times[label].append(elapsed)
            medians = {label: statistics.median(t) * 1e3 for label, t in times.items()}
            ratio = medians["this tree"] / medians[args.against]
            rows.append([name, len(body) / 1e6, *medians.values(), ratio])
            results["cases"][name] = {"median_ms": medians, "ratio": ratio}
    print(f"median of {args.repeats} interleaved rounds, milliseconds")
    print_table(["case", "req MB", "this tree", args.against, "ratio"], rows)
    print()
    results["ratios"] = [
        print_ratio(f"{name} this tree / {args.against}", case["ratio"], GOAL, "lower")
        for name, case in results["cases"].items()
    ]
    write_json(args.json, results)


if __name__ == "__main__":
    main()
