"""What each device does per second, so that a plan's cost can be predicted in seconds.

FLOPs are not time: on a CPU a float16 matrix multiply runs two orders of magnitude slower
than a float32 one. At start-up each device is probed with small matrix multiplies per dtype
(tens of milliseconds in all, best of a few runs) and one large elementwise pass; a
``TORCHLAB_CALIBRATION`` setting can fix any figure instead (``{"cpu/float16": 1e9}``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

logger = logging.getLogger("torchlab.calibration")

# dtypes probed, each with a matrix side to start from (slow ones start smaller).
PROBES: dict[torch.dtype, int] = {
    torch.float32: 128,
    torch.float64: 128,
    torch.float16: 32,
    torch.bfloat16: 32,
    torch.complex64: 64,
    torch.complex128: 64,
    torch.int64: 32,
    torch.int32: 32,
    torch.int16: 32,
    torch.int8: 32,
    torch.uint8: 32,
}
MIN_PROBE_SECONDS = 2e-3
"""A probe grows until one run takes this long: shorter runs measure the timer and the
scheduler (one preemption in a 50 µs run makes a CPU look 100 times slower)."""
FIXED_COST_GAIN = 1.5
"""A probe also grows while doubling the side raises the rate this much: its runs are then
mostly a fixed cost per call (waking threads that the other load on a busy machine keeps
waiting: 8 ms per call from side 128 to 512 on 2 busy cores, where a probe that stopped at
128 put float32 at 0.5 GFLOP/s against 150 measured at 2000)."""
MAX_SIDE = 1024
MAX_PROBE_SECONDS = 0.02
"""No probe grows past a run of this long."""
ELEMENTWISE_PROBE = 1 << 21
REPEATS = 5


@dataclass(frozen=True)
class Throughput:
    """One device's rates: matrix-multiply FLOP/s per dtype and elements per second of a
    memory-bound pass (the cost of creating, copying or encoding a tensor)."""

    device: str
    flops_per_s: Mapping[str, float] = field(default_factory=dict)
    elements_per_s: float = 1e8

    def rate(self, dtype: torch.dtype | None) -> float:
        """FLOP/s for ``dtype`` (float32's for one not probed; the slowest float's for bool)."""
        name = str(dtype or torch.float32).removeprefix("torch.")
        if name in self.flops_per_s:
            return self.flops_per_s[name]
        return self.flops_per_s.get("float32", 1e9)


def _best_seconds(run: Callable[[], None], repeats: int = REPEATS) -> float:
    run()  # warm up: first calls pay for kernel selection and allocation
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return max(best, 1e-7)


def _matmul_rate(dtype: torch.dtype, side: int, device: torch.device) -> float:
    """FLOP/s of ``side``-square multiplies, the side doubled until a run is long enough to
    time and the rate no longer grows with it (:data:`FIXED_COST_GAIN`); each size timed by
    the best of a few runs (a busy machine slows some runs, never speeds one up)."""
    rate = 0.0
    while True:
        a = torch.ones(side, side, dtype=dtype, device=device)

        def run(a: torch.Tensor = a) -> None:
            torch.matmul(a, a)
            _sync(device)

        seconds = _best_seconds(run)
        measured = 2 * side**3 / seconds
        growing = measured >= FIXED_COST_GAIN * rate
        rate = max(rate, measured)
        short = seconds < MIN_PROBE_SECONDS and seconds * 8 <= MAX_PROBE_SECONDS
        if side >= MAX_SIDE or seconds >= MAX_PROBE_SECONDS or not (short or growing):
            return rate
        side *= 2


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(device: torch.device, overrides: Mapping[str, float] | None = None) -> Throughput:
    """Probe ``device`` (skipping what ``overrides`` already gives, keyed ``"<device type>/
    <dtype>"`` or ``"<device type>/elements"``)."""
    overrides = dict(overrides or {})
    prefix = device.type
    rates: dict[str, float] = {}
    with torch.inference_mode():
        for dtype, side in PROBES.items():
            name = str(dtype).removeprefix("torch.")
            key = f"{prefix}/{name}"
            if key in overrides:
                rates[name] = overrides[key]
                continue
            try:
                rates[name] = _matmul_rate(dtype, side, device)
            except (RuntimeError, TypeError):  # no matmul kernel for this dtype here
                continue
        key = f"{prefix}/elements"
        if key in overrides:
            elements = overrides[key]
        else:
            x = torch.ones(ELEMENTWISE_PROBE, device=device)

            def copy(x: torch.Tensor = x) -> None:
                x.mul(2.0)
                _sync(device)

            elements = ELEMENTWISE_PROBE / _best_seconds(copy)
    throughput = Throughput(str(device), rates, elements)
    logger.info(
        "%s: %s GFLOP/s (float32), %s GFLOP/s (float16), %.3g elements/s",
        device,
        f"{throughput.rate(torch.float32) / 1e9:.3g}",
        f"{throughput.rate(torch.float16) / 1e9:.3g}",
        elements,
    )
    return throughput


class Calibrations:
    """Each device's :class:`Throughput`, measured once (at start-up, or on first use)."""

    def __init__(self, overrides: Mapping[str, float] | None = None) -> None:
        self.overrides = dict(overrides or {})
        self._measured: dict[str, Throughput] = {}
        self._by_device: dict[torch.device, Throughput] = {}  # no str() per request

    def get(self, device: torch.device) -> Throughput:
        found = self._by_device.get(device)
        if found is None:
            key = str(device)
            if key not in self._measured:
                self._measured[key] = measure(device, self.overrides)
            found = self._by_device[device] = self._measured[key]
        return found

    def report(self) -> dict[str, dict[str, float]]:
        """What ``GET /info`` shows: GFLOP/s per dtype and elements per second, per device."""
        return {
            device: {
                **{name: rate / 1e9 for name, rate in t.flops_per_s.items()},
                "elements_per_s": t.elements_per_s,
            }
            for device, t in self._measured.items()
        }
