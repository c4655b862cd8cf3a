"""The start-up probes of :mod:`service.calibration`, timed by a stand-in clock."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from service import calibration


def simulated(fixed_s: float, flops_per_s: float) -> Callable[..., float]:
    """``_best_seconds`` of a device whose every multiply costs ``fixed_s`` plus its FLOPs
    at ``flops_per_s``; the sizes it was asked for are kept in ``.sides``."""
    sides: list[int] = []

    def best_seconds(run: Callable[[], None], repeats: int = calibration.REPEATS) -> float:
        (a,) = run.__defaults__  # type: ignore[attr-defined]
        side = a.shape[0]
        sides.append(side)
        return fixed_s + 2 * side**3 / flops_per_s

    best_seconds.sides = sides  # type: ignore[attr-defined]
    return best_seconds


@pytest.mark.parametrize(
    ("fixed_s", "at_least"),
    [(0.0, 0.99), (8e-3, 0.6)],
    ids=["idle", "each call waits 8 ms for busy cores"],
)
def test_a_probe_grows_past_a_fixed_cost_per_call(
    monkeypatch: pytest.MonkeyPatch, fixed_s: float, at_least: float
) -> None:
    """Idle, the probe stops once a run takes long enough to time (2 ms). When a fixed
    cost dominates small multiplies (threads waiting for busy cores), stopping there put
    float32 at 0.5 GFLOP/s where it runs at 150: the probe grows while the rate does."""
    clock = simulated(fixed_s, 150e9)
    monkeypatch.setattr(calibration, "_best_seconds", clock)
    rate = calibration._matmul_rate(torch.float32, 128, torch.device("cpu"))
    assert at_least * 150e9 <= rate <= 150e9
    assert clock.sides[-1] == calibration.MAX_SIDE  # type: ignore[attr-defined]


def test_a_slow_dtype_stops_at_the_run_time_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dtype with no fast kernel (1 GFLOP/s) is not grown into runs of seconds."""
    clock = simulated(0.0, 1e9)
    monkeypatch.setattr(calibration, "_best_seconds", clock)
    rate = calibration._matmul_rate(torch.float16, 32, torch.device("cpu"))
    assert rate == pytest.approx(1e9)
    longest = max(2 * side**3 / 1e9 for side in clock.sides)  # type: ignore[attr-defined]
    assert longest <= calibration.MAX_PROBE_SECONDS
