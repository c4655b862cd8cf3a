"""Where a ``/tensor/ops`` program runs: its device, budget, deadline and random stream.

The same program runs twice, first on the ``meta`` device (shapes and dtypes only, so the
limits are charged before any memory is allocated), then on the real device. Every op is
an :data:`OpFn` of its arguments and this :class:`Context`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from service.limits import Budget, Deadline
from service.ops.context import make_generator

#: A named value of a program: a tensor, or what ``info`` reports about one.
Value = torch.Tensor | dict[str, Any]

#: The device of the planning pass.
META = torch.device("meta")


@dataclass
class Context:
    """Where a run happens and what it may spend."""

    device: torch.device
    budget: Budget | None = None
    deadline: Deadline | None = None
    seed: int | None = None
    max_elements: int = 1 << 62
    _generator: torch.Generator | None = field(default=None, repr=False)
    is_meta: bool = field(init=False)
    """Whether this is the planning pass (no storage, no random numbers)."""

    def __post_init__(self) -> None:
        self.is_meta = self.device.type == "meta"

    def generator(self, seed: int | None) -> torch.Generator | None:
        """A CPU generator: the step's own seed, else the request's (one stream), else fresh."""
        if self.is_meta:
            return None
        if seed is not None:
            return make_generator(seed)
        if self._generator is None:
            self._generator = make_generator(self.seed)
        return self._generator


#: One op: its arguments (tensor arguments already resolved) and the run's context.
OpFn = Callable[[Mapping[str, Any], Context], Any]
