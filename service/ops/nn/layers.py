"""What the layer ops share (``torch.nn.Linear`` in :mod:`service.ops.nn.linear`,
``torch.nn.RNN``/``LSTM``/``GRU`` in :mod:`service.ops.nn.rnn`).

Each layer is first *planned*: every shape is checked in the layer's own terms and every
tensor and FLOP charged to a :class:`~service.limits.Budget`, before any parameter is
allocated. Then it runs: the module is built on the CPU without initialisation (on ``meta``,
then ``to_empty``), its parameters are drawn from a private generator exactly as the
module's ``reset_parameters`` draws them from the global one, given parameters overwrite
them, and the module moves to the device. So ``torch.manual_seed(seed);
torch.nn.Linear(...)`` and this service with ``seed`` hold the same numbers, and concurrent
requests never share random state.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from service.errors import ErrorCode, InvalidInput

CPU = torch.device("cpu")
"""Where modules are built and initialised, whatever the device they run on."""
META = torch.device("meta")
"""Where modules are created, without memory, before ``to_empty`` on the CPU."""


def as_shape(shape: Sequence[int]) -> list[int]:
    """A shape (a ``torch.Size`` or any sequence) as a plain list of ints, for messages."""
    return [int(s) for s in shape]


def shape_error(message: str, got: Sequence[int], expected: Sequence[int] | None) -> InvalidInput:
    """A 422 ``shape_mismatch`` with the shape given and, when there is one, the shape
    expected in ``details``."""
    details: dict[str, object] = {"got": as_shape(got)}
    if expected is not None:
        details["expected"] = as_shape(expected)
    return InvalidInput(message, details=details, code=ErrorCode.SHAPE_MISMATCH)


def compute_dtype(input_dtype: torch.dtype) -> torch.dtype:
    """float64 for a float64 input, float32 for anything else (ints and bools included)."""
    return torch.float64 if input_dtype == torch.float64 else torch.float32
