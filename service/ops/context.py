"""What every op needs from the request, without HTTP: the limits, the device, the budget.

The API layer builds one :class:`ComputeContext` per request (``service.api.compute``);
ops decode tensors and draw random numbers through it, so that the limits and the seeding
rules are written once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from service.calibration import Throughput
from service.codec import decode_tensor
from service.config import Limits
from service.limits import Budget


@dataclass
class ComputeContext:
    """One request's limits, device and budget (charged while its plan is made)."""

    limits: Limits
    device: torch.device
    throughput: Throughput | None = None
    """The device's measured rates: with them the budget predicts the work's seconds."""
    budget: Budget = field(init=False)

    def __post_init__(self) -> None:
        self.budget = Budget.from_limits(self.limits, self.throughput)

    def decode(self, wire: Any, where: str) -> torch.Tensor:
        """A wire tensor as a CPU tensor, refused (413) over ``max_elements`` before its
        storage is allocated. ``wire`` is the tensor's JSON value (a ``Tensor``'s root)."""
        return decode_tensor(wire, max_elements=self.limits.max_elements, where=where)

    def decode_optional(self, wire: Any, where: str) -> torch.Tensor | None:
        return None if wire is None else self.decode(wire, where)


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A private generator on ``device``: seeded, or from the OS without a seed. Never the
    global RNG, so concurrent requests cannot disturb each other's numbers."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator
