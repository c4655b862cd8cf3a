"""The tutorial's CPU-vs-GPU matrix multiply, timed honestly.

The first multiplication on a device is timed on its own (on CUDA it pays for library
start-up); then ``warmup`` untimed runs; then ``repeats`` timed runs, synchronised on CUDA
and timed with CUDA events there.
"""

from __future__ import annotations

import functools
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from service.limits import Deadline
from service.ops.context import make_generator


def _time_cpu(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _time_cuda(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    end = torch.cuda.Event(enable_timing=True)  # type: ignore[no-untyped-call]
    start.record()
    out = fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1000.0, out


def matmul_benchmark(
    m: int,
    k: int,
    n: int,
    dtype: torch.dtype,
    devices: Sequence[torch.device],
    *,
    repeats: int,
    warmup: int,
    seed: int | None,
    deadline: Deadline,
) -> list[dict[str, Any]]:
    """Time ``a @ b`` ([m, k] @ [k, n]) on each device; one result dict per device."""
    # Drawn once on the CPU, so every device multiplies the same numbers.
    generator = make_generator(seed)
    a_cpu = torch.randn(m, k, generator=generator)
    b_cpu = torch.randn(k, n, generator=generator)
    results = []
    runs = len(devices) * (1 + warmup + repeats)
    done = 0

    def ran(device: torch.device, run: str) -> None:
        nonlocal done
        done += 1
        deadline.progress(done, runs, "run", device=str(device), run=run)

    for device in devices:
        a = a_cpu.to(device=device, dtype=dtype)
        b = b_cpu.to(device=device, dtype=dtype)
        is_cuda = device.type == "cuda"
        if is_cuda:
            torch.cuda.synchronize(device)
        # The cold run is timed by the wall clock on every device, like the tutorial's.
        start = time.perf_counter()
        c = torch.matmul(a, b)
        if is_cuda:
            torch.cuda.synchronize(device)
        first = time.perf_counter() - start
        ran(device, "first")
        deadline.check()
        for _ in range(warmup):
            c = torch.matmul(a, b)
            if is_cuda:
                torch.cuda.synchronize(device)
            ran(device, "warmup")
            deadline.check()
        timer = _time_cuda if is_cuda else _time_cpu
        times = []
        for _ in range(repeats):
            seconds, c = timer(functools.partial(torch.matmul, a, b))
            times.append(seconds)
            ran(device, "timed")
            deadline.check()
        median = statistics.median(times)
        results.append(
            {
                "device": str(device),
                "device_name": (
                    torch.cuda.get_device_name(device)
                    if is_cuda
                    else platform.processor() or platform.machine()
                ),
                "first_run_s": first,
                "median_s": median,
                "min_s": min(times),
                "max_s": max(times),
                "gflops": 2 * m * k * n / median / 1e9 if median > 0 else float("inf"),
                "norm": float(torch.linalg.vector_norm(c, dtype=torch.float64)),
                "timer": "cuda_events" if is_cuda else "perf_counter",
                "tf32": bool(torch.backends.cuda.matmul.allow_tf32) if is_cuda else None,
            }
        )
    return results


def max_norm_rel_diff(results: Sequence[dict[str, Any]]) -> float | None:
    """Largest relative difference of each device's norm from the first device's."""
    if len(results) < 2:
        return None
    reference = results[0]["norm"]
    scale = abs(reference) or 1.0
    return float(max(abs(r["norm"] - reference) / scale for r in results[1:]))
