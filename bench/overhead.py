"""Per-request overhead: requests/s of a tiny ``POST /tensor/ops`` against a minimal app.

The baseline is a minimal FastAPI app (:data:`minimal_app`: one ``async def`` route
returning ``{"ok": true}``, no middleware) served by its own uvicorn with the same settings
as the service's (uvloop and httptools, as ``uvicorn[standard]`` installs them, and no
uvicorn access log, as ``make serve``). Beside it, ``POST /bare`` of ``bench._bare_app:app``
(the same route inside the service's app: its middleware, routing and error handling)
shows what the framework around the route costs, ``POST /bare/program`` (the tiny program's
body taken as ``/tensor/ops`` takes it, answered without running it) what the route's own
work costs, ``POST /bare/planned`` (the same, planned too) how much of that is the plan
(the time a request of each is printed, and the differences), and a tiny
``POST /v2/models/relu/infer``
(the Open Inference Protocol's path, as Triton's clients call it) is printed beside. Load:
``hey`` or ``wrk`` when on PATH, else a Python load generator (several processes, one
keep-alive ``http.client`` connection each). Each target runs for a fixed time, the targets
alternate ``--repeats`` times, and the best run of each counts. Goal: tensor_ops rps /
minimal rps >= 0.7.

The same targets are then timed in this process through the apps' ASGI interfaces (no HTTP
server, no load generator: ``--in-process-requests`` requests a round, the targets
alternating for ``--in-process-rounds`` rounds, the best round of each counting): what each
costs the app alone, free of the load generator sharing the machine's cores. Printed, no
goal.

``--against COMMIT`` also serves the service at that commit (from a temporary git worktree,
with this venv) and puts the same load on its ``/tensor/ops``, alternating with the others.
Goal: this tree's tensor_ops rps / that commit's >= 0.9 (no more than 10% slower).

    .venv/bin/python bench/overhead.py [--duration 5] [--concurrency 8] [--repeats 2]
        [--against e3d6500]
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import multiprocessing as mp
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from _asgi import http_scope, lifespan, through_app
from _common import (
    ROOT,
    Server,
    base_parser,
    environment,
    print_ratio,
    print_table,
    worktree,
    write_json,
)
from fastapi import FastAPI
from uvicorn.importer import import_from_string

GOAL = 0.7
AGAINST_GOAL = 0.9
TENSOR_OPS = orjson.dumps({"steps": [{"op": "arange", "end": 4}]})
V2_INFER = orjson.dumps(
    {"inputs": [{"name": "input", "shape": [4], "datatype": "FP32", "data": [1, -2, 3, -4]}]}
)
"""A tiny Open Inference Protocol request, as tritonclient and perf_analyzer send them."""
TARGETS: dict[str, tuple[str, str, bytes]] = {
    "minimal": ("minimal", "/ok", b"{}"),
    "bare": ("service", "/bare", b"{}"),
    "program_unrun": ("service", "/bare/program", TENSOR_OPS),
    "planned_unrun": ("service", "/bare/planned", TENSOR_OPS),
    "tensor_ops": ("service", "/tensor/ops", TENSOR_OPS),
    "v2_infer": ("service", "/v2/models/relu/infer", V2_INFER),
}
"""name: (server, path, body)."""

minimal_app = FastAPI()
"""The baseline: one route, no middleware (``uvicorn overhead:minimal_app`` from bench/).
The same function also answers ``GET /health``, after it, for the start-up probe."""


@minimal_app.post("/ok")
@minimal_app.get("/health")
async def ok() -> dict[str, bool]:
    return {"ok": True}


# --- the Python load generator ----------------------------------------------------------------


def _worker(port: int, path: str, body: bytes, start_at: float, end_at: float, queue: Any) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}

    def once() -> int:
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        return response.status

    once()  # connect and warm up, untimed
    time.sleep(max(0.0, start_at - time.time()))
    ok = errors = 0
    latencies: list[float] = []
    while time.time() < end_at:
        start = time.perf_counter()
        try:
            status = once()
        except (OSError, http.client.HTTPException):
            errors += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            continue
        latencies.append(time.perf_counter() - start)
        if status == 200:
            ok += 1
        else:
            errors += 1
    conn.close()
    queue.put((ok, errors, latencies))


def python_load(port: int, path: str, body: bytes, duration: float, concurrency: int) -> dict:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    start_at = time.time() + 1.0  # time for every process to start and connect
    end_at = start_at + duration
    procs = [
        ctx.Process(target=_worker, args=(port, path, body, start_at, end_at, queue))
        for _ in range(concurrency)
    ]
    for proc in procs:
        proc.start()
    parts = [queue.get(timeout=duration + 60) for _ in procs]
    for proc in procs:
        proc.join(timeout=10)
    ok = sum(p[0] for p in parts)
    errors = sum(p[1] for p in parts)
    latencies = sorted(x for p in parts for x in p[2])
    return {
        "rps": ok / duration,
        "ok": ok,
        "errors": errors,
        "p50_ms": statistics.median(latencies) * 1e3 if latencies else None,
        "p99_ms": latencies[int(0.99 * (len(latencies) - 1))] * 1e3 if latencies else None,
    }


# --- hey and wrk ----------------------------------------------------------------------------


def hey_load(port: int, path: str, body: bytes, duration: float, concurrency: int) -> dict:
    out = subprocess.run(
        [
            "hey",
            "-z",
            f"{duration:g}s",
            "-c",
            str(concurrency),
            "-m",
            "POST",
            "-T",
            "application/json",
            "-d",
            body.decode(),
            f"http://127.0.0.1:{port}{path}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    codes = {int(c): int(n) for c, n in re.findall(r"\[(\d+)\]\s+(\d+) responses", out)}
    ok = codes.get(200, 0)
    p50 = re.search(r"50%+ in ([\d.]+) secs", out)
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    return {
        "rps": ok / duration,
        "rps_reported": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "ok": ok,
        "errors": sum(codes.values()) - ok,
        "p50_ms": float(p50.group(1)) * 1e3 if p50 else None,
        "p99_ms": float(p99.group(1)) * 1e3 if p99 else None,
    }


def wrk_load(port: int, path: str, body: bytes, duration: float, concurrency: int) -> dict:
    script = (
        'wrk.method = "POST"\n'
        f"wrk.body = {orjson.dumps(body.decode()).decode()}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            [
                "wrk",
                f"-t{min(2, concurrency)}",
                f"-c{concurrency}",
                f"-d{max(1, round(duration))}s",
                "--latency",
                "-s",
                handle.name,
                f"http://127.0.0.1:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
        * (total - errors)
        / max(total, 1),
        "ok": total - errors,
        "errors": errors,
        "p50_ms": float(p50.group(1)) * scale[p50.group(2)] if p50 else None,
        "p99_ms": float(p99.group(1)) * scale[p99.group(2)] if p99 else None,
    }


GENERATORS = {"python": python_load, "hey": hey_load, "wrk": wrk_load}


def pick_generator(name: str) -> str:
    if name != "auto":
        if name != "python" and not shutil.which(name):
            raise SystemExit(f"{name} is not on PATH")
        return name
    for tool in ("hey", "wrk"):
        if shutil.which(tool):
            return tool
    return "python"


def print_split(best: dict[str, float]) -> None:
    """Where a tiny program's time goes: the server's time per request of each target at
    its best rate (the load generator runs beside it), and the differences between them."""
    per = {name: 1e6 / rps for name, rps in best.items()}
    goal = per["minimal"] / GOAL
    print(
        f"microseconds a request: minimal {per['minimal']:.0f}, tensor_ops "
        f"{per['tensor_ops']:.0f} (the goal: {goal:.0f}); of tensor_ops, up to its body "
        f"validated and a canned answer sent {per['program_unrun']:.0f}, its plan "
        f"{per['planned_unrun'] - per['program_unrun']:.0f}, its run and its answer's "
        f"encoding {per['tensor_ops'] - per['planned_unrun']:.0f} (no goal)"
    )


# --- in this process, through the apps' ASGI interfaces -----------------------------------------

IN_PROCESS = ("minimal", "program_unrun", "planned_unrun", "tensor_ops")
"""The targets timed in process (their apps: the baseline, and the service's)."""


async def _in_process_rounds(service: Any, requests: int, rounds: int) -> dict[str, list[float]]:
    """Seconds a request of each of :data:`IN_PROCESS`, one figure per round, the targets
    alternating within a round; each app between its lifespan's startup and shutdown."""
    apps = {"minimal": minimal_app, "service": service}
    scopes = {}
    times: dict[str, list[float]] = {name: [] for name in IN_PROCESS}
    async with lifespan(minimal_app), lifespan(service):
        for name in IN_PROCESS:
            which, path, body = TARGETS[name]
            length = str(len(body)).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", length)]
            scopes[name] = http_scope("POST", path, headers)
            status, answer = await through_app(apps[which], scopes[name], [body])
            if status != 200:
                raise SystemExit(f"{name} in process: HTTP {status}: {answer[:300]!r}")
            for _ in range(requests // 4):  # warm up, untimed
                await through_app(apps[which], scopes[name], [body])
        for _ in range(rounds):
            for name in IN_PROCESS:
                which, _, body = TARGETS[name]
                app, scope, pieces = apps[which], scopes[name], [body]
                start = time.perf_counter()
                for _ in range(requests):
                    await through_app(app, scope, pieces)
                times[name].append((time.perf_counter() - start) / requests)
    return times


def in_process(app_path: str, requests: int, rounds: int) -> dict[str, float]:
    """Microseconds a request of each of :data:`IN_PROCESS` in this process (its best
    round), printed with tensor_ops / minimal and tensor_ops's split."""
    os.environ.setdefault("TORCHLAB_LOG_LEVEL", "warning")  # as the servers run
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # bench._bare_app, as the servers import it from there
    service = import_from_string(app_path)
    times = asyncio.run(_in_process_rounds(service, requests, rounds))
    best = {name: min(values) * 1e6 for name, values in times.items()}
    print(
        f"in this process, through the apps' ASGI interfaces (no HTTP, no load generator; "
        f"best of {rounds} rounds of {requests} requests), microseconds a request: minimal "
        f"{best['minimal']:.1f}, tensor_ops {best['tensor_ops']:.1f}; of tensor_ops, up to "
        f"its body validated and a canned answer sent {best['program_unrun']:.1f}, its plan "
        f"{best['planned_unrun'] - best['program_unrun']:.1f}, its run and its answer's "
        f"encoding {best['tensor_ops'] - best['planned_unrun']:.1f}"
    )
    print(
        f"tensor_ops / minimal in this process: {best['minimal'] / best['tensor_ops']:.3f}x "
        "(requests/s; no goal)"
    )
    return best


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=2)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (5)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections (8)")
    parser.add_argument(
        "--generator",
        choices=["auto", "hey", "wrk", "python"],
        default="auto",
        help="load generator (auto: hey, else wrk, else Python)",
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="untimed seconds per target first (1)"
    )
    parser.add_argument(
        "--app",
        default="bench._bare_app:app",
        help="the service's app, with POST /bare (default bench._bare_app:app)",
    )
    parser.add_argument(
        "--against", metavar="COMMIT", help="also load this commit's service (e.g. e3d6500)"
    )
    parser.add_argument(
        "--in-process-requests",
        type=int,
        default=2000,
        help="requests a round through the apps' ASGI interfaces in this process (2000; 0: none)",
    )
    parser.add_argument("--in-process-rounds", type=int, default=7, help="rounds of those (7)")
    args = parser.parse_args()
    generator = pick_generator(args.generator)
    load = GENERATORS[generator]
    print(
        f"generator {generator}, concurrency {args.concurrency}, {args.duration:g} s per run, "
        f"{args.repeats} alternating rounds"
    )

    runs: list[dict[str, Any]] = []
    bench_dir = str(Path(__file__).resolve().parent)
    targets = dict(TARGETS)
    against = f"tensor_ops@{args.against}"
    if args.against:
        targets[against] = ("against", "/tensor/ops", TENSOR_OPS)
    with contextlib.ExitStack() as stack:
        servers = {
            "minimal": stack.enter_context(
                Server("overhead:minimal_app", env={"PYTHONPATH": bench_dir}, http="httptools")
            ),
            "service": stack.enter_context(Server(args.app)),
        }
        if args.against:
            tree = stack.enter_context(worktree(args.against))
            servers["against"] = stack.enter_context(Server(cwd=tree))
        for name, (which, path, body) in targets.items():
            server = servers[which]
            # Each route must answer 200 before any load is put on it.
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            text = response.read()
            conn.close()
            if response.status != 200:
                raise SystemExit(f"{name}: HTTP {response.status}: {text[:300]!r}")
            if args.warmup > 0:
                python_load(server.port, path, body, args.warmup, 2)
        for round_ in range(args.repeats):
            for name, (which, path, body) in targets.items():
                port = servers[which].port
                result = load(port, path, body, args.duration, args.concurrency)
                result.update({"target": name, "round": round_ + 1})
                runs.append(result)
                print(f"  round {round_ + 1} {name:10s} {result['rps']:8.1f} req/s", flush=True)
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
                "-" if r["p50_ms"] is None else f"{r['p50_ms']:.2f}",
                "-" if r["p99_ms"] is None else f"{r['p99_ms']:.2f}",
            ]
            for r in runs
        ],
    )
    print(
        f"best: minimal {best['minimal']:.1f} req/s, bare in the service "
        f"{best['bare']:.1f} req/s, tensor_ops {best['tensor_ops']:.1f} req/s"
    )
    print()
    print(f"bare in the service / minimal: {best['bare'] / best['minimal']:.3f}x (no goal)")
    print(
        "tensor_ops's body through the lane, not run / minimal: "
        f"{best['program_unrun'] / best['minimal']:.3f}x (no goal)"
    )
    print(f"v2_infer / minimal: {best['v2_infer'] / best['minimal']:.3f}x (no goal)")
    print_split(best)
    # Each round measures both back to back: their ratios show how far the machine's noise
    # moves the best-of-rounds ratio below (no goal).
    by_round = {(r["target"], r["round"]): r["rps"] for r in runs}
    rounds = sorted({r["round"] for r in runs})
    per_round = [by_round["tensor_ops", n] / by_round["minimal", n] for n in rounds]
    print(
        "tensor_ops / minimal in each round: "
        + ", ".join(f"{value:.3f}x" for value in per_round)
        + f" (median {statistics.median(per_round):.3f}x, no goal)"
    )
    ratio = print_ratio(
        "tensor_ops rps / minimal rps", best["tensor_ops"] / best["minimal"], GOAL, "higher"
    )
    versus = None
    if args.against:
        versus = print_ratio(
            f"tensor_ops rps / {against} rps",
            best["tensor_ops"] / best[against],
            AGAINST_GOAL,
            "higher",
        )
    in_process_us = None
    if args.in_process_requests > 0:
        print()
        in_process_us = in_process(args.app, args.in_process_requests, args.in_process_rounds)
    if any(r["errors"] for r in runs):
        print("  WARNING: some requests failed (non-200 or connection errors); see the table")
    write_json(
        args.json,
        {
            "env": environment(),
            "app": args.app,
            "generator": generator,
            "duration_s": args.duration,
            "concurrency": args.concurrency,
            "runs": runs,
            "best_rps": best,
            "ratio_per_round": per_round,
            "ratio": ratio,
            "against": args.against,
            "ratio_against": versus,
            "in_process_us": in_process_us,
        },
    )


if __name__ == "__main__":
    main()
