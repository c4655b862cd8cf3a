"""Compute beside a busy neighbour: the same requests with the machine otherwise idle, and
with one process spinning on a core (at the server's priority, as another service or a
client on the same machine would).

The requests: an LSTM over 300 steps (``POST /layers/rnn``: hundreds of small parallel
regions), a least-squares fit of 20000x40 (``POST /regress/linear``: a QR of 40
reflections in a row), an L-BFGS logistic fit of regression.py's 20000x20 problem (its
16000 training rows, ``POST /regress/logistic``: optimizer steps of a few ms) and a 64x64
matmul program (``POST /tensor/ops``: small work, where the worker's hop counts). Each is
timed ``--repeats`` times idle and busy, alternating, over HTTP; the goal is on the
compute time (each answer's ``elapsed_ms``, in the worker): busy / idle <= 3x for each (on
2 cores the neighbour takes one of them, so up to about 2x is the fair share). Wall times
are printed beside it: parsing and encoding, in the server, share the cores too.

``--against COMMIT`` also serves that commit (from a temporary git worktree, with this
venv) and times the same requests on it: both servers run at once, and each round times a
request on both (idle, then busy), taking turns to go first.

    .venv/bin/python bench/contention.py [--repeats 7] [--against 2a877e4]
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
from _common import (
    ROOT,
    Server,
    base_parser,
    environment,
    print_ratio,
    print_table,
    summarize,
    worktree,
    write_json,
)
from regression import linear_case, logistic_case

GOAL = 3.0
JSON = {"content-type": "application/json"}


def requests() -> dict[str, tuple[str, bytes]]:
    """name: (path, JSON body)."""
    rng = np.random.default_rng(0)
    lstm = {
        "mode": "lstm",
        "input_size": 64,
        "hidden_size": 128,
        "input": rng.standard_normal((300, 8, 64)).astype(np.float32),
        "seed": 0,
    }
    matmul = {
        "steps": [
            {"op": "randn", "size": [64, 64], "seed": 1, "out": "a"},
            {"op": "matmul", "x": "a", "y": "a", "out": "p"},
            {"op": "sum", "x": "p", "out": "s"},
        ],
        "return": ["s"],
    }
    option = orjson.OPT_SERIALIZE_NUMPY
    return {
        "lstm_300_steps": ("/layers/rnn", orjson.dumps(lstm, option=option)),
        "lstsq_20000x40": ("/regress/linear", linear_case(20000, 40, 0)["body"]),
        "logistic_20000x20": ("/regress/logistic", logistic_case(20000, 20, 0)["body"]),
        "matmul_64": ("/tensor/ops", orjson.dumps(matmul)),
    }


def _spin(stop: Any) -> None:
    count = 0
    while not stop.is_set():
        count += 1


@contextmanager
def neighbour() -> Iterator[None]:
    """One process spinning on a core until the block ends."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    proc = ctx.Process(target=_spin, args=(stop,), daemon=True)
    proc.start()
    time.sleep(0.3)  # running before the first timed request
    try:
        yield
    finally:
        stop.set()
        proc.join(timeout=10)


def measure(
    urls: dict[str, str], cases: dict[str, tuple[str, bytes]], repeats: int
) -> dict[str, dict[str, Any]]:
    """Each request's wall time and its compute time (the answer's ``elapsed_ms``) on every
    server (by label), idle and busy: each round times it idle on every server, then busy
    on every server, the servers taking turns to go first, so that a drift of the machine's
    speed falls on all of them alike."""
    results: dict[str, dict[str, Any]] = {label: {} for label in urls}
    with ExitStack() as stack:
        clients = {
            label: stack.enter_context(httpx.Client(base_url=url, timeout=120.0))
            for label, url in urls.items()
        }
        for name, (path, body) in cases.items():

            def once(
                client: httpx.Client, path: str = path, body: bytes = body
            ) -> tuple[float, float]:
                start = time.perf_counter()
                response = client.post(path, content=body, headers=JSON)
                wall = time.perf_counter() - start
                if response.status_code != 200:
                    raise SystemExit(f"{path}: HTTP {response.status_code}: {response.text[:300]}")
                return wall, orjson.loads(response.content)["elapsed_ms"] / 1e3

            for client in clients.values():
                once(client)  # warm-up, untimed
            idle: dict[str, list[tuple[float, float]]] = {label: [] for label in clients}
            busy: dict[str, list[tuple[float, float]]] = {label: [] for label in clients}
            labels = list(clients)
            for round_ in range(repeats):
                turn = labels[round_ % len(labels) :] + labels[: round_ % len(labels)]
                for label in turn:
                    idle[label].append(once(clients[label]))
                with neighbour():
                    for label in turn:
                        busy[label].append(once(clients[label]))
            for label in clients:
                results[label][name] = {
                    f"{state}_{part}": summarize([t[index] for t in times[label]])
                    for state, times in (("idle", idle), ("busy", busy))
                    for index, part in enumerate(("wall", "compute"))
                }
    return results


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=7)
    parser.add_argument("--against", help="also serve this commit and time it the same way")
    args = parser.parse_args()
    cases = requests()
    results: dict[str, Any] = {"env": environment(), "repeats": args.repeats, "servers": {}}
    targets: list[tuple[str, Path]] = [("this tree", ROOT)]
    with ExitStack() as stack:
        if args.against:
            targets.append((args.against, stack.enter_context(worktree(args.against))))
        urls = {label: stack.enter_context(Server(cwd=cwd)).url for label, cwd in targets}
        results["servers"] = measure(urls, cases, args.repeats)

    rows = []
    ratios = {}
    for label, measured in results["servers"].items():
        for name, times in measured.items():
            median = {key: value["median_s"] * 1e3 for key, value in times.items()}
            rows.append(
                [label, name]
                + [f"{median[k]:.1f}" for k in ("idle_wall", "busy_wall", "idle_compute")]
                + [f"{median['busy_compute']:.1f}"]
            )
            ratios[f"{label}: {name}"] = median["busy_compute"] / median["idle_compute"]
    print(
        f"\n== results (median of {args.repeats}, milliseconds; compute: the answer's elapsed_ms)"
    )
    print_table(
        ["server", "request", "idle wall", "busy wall", "idle compute", "busy compute"], rows
    )
    print()
    for key, ratio in ratios.items():
        print_ratio(f"{key} compute busy / idle", ratio, GOAL, "lower")
    results["ratios"] = ratios
    write_json(args.json, results)


if __name__ == "__main__":
    main()
