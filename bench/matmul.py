"""Matrix-multiply throughput: ``POST /benchmark`` against ``a @ b`` run in this process.

The tutorial's sizes by default (a [10000, 1000] @ b [1000, 2000], float32). The service
times its own repeats (``median_s`` of ``repeats`` after ``warmup``); the in-process baseline
does the same here with the same seeded inputs and torch's default thread count. The two
never run at the same time: the server is idle while the baseline runs, and vice versa.
GFLOP/s = 2*m*k*n / median. Goal: service / in-process >= 0.9 on each device (the CPU, and
CUDA when both this process and the server have it).

    .venv/bin/python bench/matmul.py [--m 10000 --k 1000 --n 2000] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx
import torch
from _common import Server, base_parser, environment, print_ratio, print_table, write_json

GOAL = 0.9
DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}


def in_process(
    m: int, k: int, n: int, dtype: str, device: str, repeats: int, warmup: int, seed: int
) -> dict[str, Any]:
    """The same measurement as the service's, done here."""
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=generator).to(device=device, dtype=DTYPES[dtype])
    b = torch.randn(k, n, generator=generator).to(device=device, dtype=DTYPES[dtype])
    is_cuda = device.startswith("cuda")

    def sync() -> None:
        if is_cuda:
            torch.cuda.synchronize(device)

    sync()
    start = time.perf_counter()
    c = a @ b
    sync()
    first = time.perf_counter() - start
    for _ in range(warmup):
        c = a @ b
    sync()
    times = []
    for _ in range(repeats):
        if is_cuda:
            begin = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            begin.record()
            c = a @ b
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end) / 1000.0)
        else:
            start = time.perf_counter()
            c = a @ b
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    result = {
        "device": device,
        "first_run_s": first,
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "gflops": 2 * m * k * n / median / 1e9,
        "norm": float(torch.linalg.vector_norm(c, dtype=torch.float64)),
        "threads": torch.get_num_threads(),
        "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if is_cuda else None,
    }
    del a, b, c
    if is_cuda:
        torch.cuda.empty_cache()
    return result


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0], repeats=5)
    parser.add_argument("--m", type=int, default=10000, help="rows of a (10000)")
    parser.add_argument("--k", type=int, default=1000, help="columns of a, rows of b (1000)")
    parser.add_argument("--n", type=int, default=2000, help="columns of b (2000)")
    parser.add_argument("--dtype", choices=list(DTYPES), default="float32")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs after the first (1)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="service/in-process alternations per device; the best median of each counts (3)",
    )
    parser.add_argument(
        "--devices",
        nargs="+",
        default=None,
        help="devices to compare (default: cpu, plus cuda:0 when available here and there)",
    )
    args = parser.parse_args()
    m, k, n = args.m, args.k, args.n
    flops = 2 * m * k * n
    print(f"a [{m}, {k}] @ b [{k}, {n}] {args.dtype}: {flops / 1e9:.1f} GFLOP per multiply")

    runs: list[dict[str, Any]] = []
    with Server() as server, httpx.Client(base_url=server.url, timeout=600.0) as client:
        info = client.get("/info").json()
        server_devices = [d["name"] if isinstance(d, dict) else d for d in info.get("devices", [])]
        server_threads = next(
            (d.get("threads") for d in info.get("devices", []) if isinstance(d, dict)), None
        )
        devices = args.devices or ["cpu"]
        if args.devices is None and torch.cuda.is_available() and "cuda:0" in server_devices:
            devices.append("cuda:0")
        print(
            f"server devices {server_devices}, server CPU threads {server_threads}, "
            f"in-process CPU threads {torch.get_num_threads()}"
        )
        for device in devices:
            for round_ in range(args.rounds):
                body = {
                    "m": m,
                    "k": k,
                    "n": n,
                    "dtype": args.dtype,
                    "devices": [device],
                    "repeats": args.repeats,
                    "warmup": args.warmup,
                    "seed": args.seed,
                }
                start = time.perf_counter()
                response = client.post("/benchmark", json=body)
                wall = time.perf_counter() - start
                if response.status_code != 200:
                    raise SystemExit(f"{device}: HTTP {response.status_code}: {response.text}")
                result = response.json()["results"][0]
                result.update({"side": "service", "round": round_ + 1, "http_wall_s": wall})
                runs.append(result)
                # The server has answered: it is idle while the baseline runs.
                local = in_process(
                    m, k, n, args.dtype, device, args.repeats, args.warmup, args.seed
                )
                local.update({"side": "in-process", "round": round_ + 1})
                runs.append(local)

    print()
    print_table(
        ["device", "side", "round", "first s", "median s", "min s", "GFLOP/s", "norm"],
        [
            [
                r["device"],
                r["side"],
                r["round"],
                f"{r['first_run_s']:.4f}",
                f"{r['median_s']:.4f}",
                f"{r['min_s']:.4f}",
                f"{r['gflops']:.1f}",
                f"{r['norm']:.6g}",
            ]
            for r in runs
        ],
    )
    print()
    ratios = []
    for device in devices:
        best = {
            side: max(r["gflops"] for r in runs if r["device"] == device and r["side"] == side)
            for side in ("service", "in-process")
        }
        print(
            f"{device}: service {best['service']:.1f} GFLOP/s, "
            f"in-process {best['in-process']:.1f} GFLOP/s (best median of {args.rounds})"
        )
        ratios.append(
            print_ratio(
                f"{device} service / in-process",
                best["service"] / best["in-process"],
                GOAL,
                "higher",
            )
        )
        norms = [r["norm"] for r in runs if r["device"] == device]
        spread = (max(norms) - min(norms)) / (abs(norms[0]) or 1.0)
        if spread > 1e-3:
            print(f"  WARNING {device}: norms disagree by {spread:.2e} (relative)")
        tf32 = {r["side"]: r.get("tf32") for r in runs if r["device"] == device}
        if device.startswith("cuda") and len(set(tf32.values())) > 1:
            print(f"  NOTE {device}: TF32 differs between the sides: {tf32}")
    write_json(
        args.json,
        {
            "env": environment(),
            "m": m,
            "k": k,
            "n": n,
            "dtype": args.dtype,
            "repeats": args.repeats,
            "warmup": args.warmup,
            "server_threads": server_threads,
            "runs": runs,
            "ratios": ratios,
        },
    )


if __name__ == "__main__":
    main()
