"""``torch.nn.RNN``, ``LSTM`` and ``GRU`` forward passes (``POST /layers/rnn``): planned
against the limits, then run with parameters initialised as torch initialises them (see
:mod:`service.ops.nn.layers`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from service.errors import ErrorCode, InvalidInput
from service.limits import Budget, Deadline, estimate_matmul_flops
from service.ops.context import make_generator
from service.ops.nn.layers import CPU, META, as_shape, compute_dtype, shape_error
from service.ops.nn.linear import INIT_PASSES

RNNMode = Literal["rnn", "lstm", "gru"]

STEP_SECONDS = 2e-5
"""Time of one step of one layer in one direction beyond its FLOPs: a few kernel calls (the
hidden-state matmul, the gates' activations and products), measured on a CPU at 5 to 25 µs
with sizes of 1."""
RECURRENT_READ_PASSES = 2.0
"""Element passes per element of a recurrent weight, read at every step (a matrix by the
state's vectors: bound by memory for a small batch). On a CPU, an RNN of hidden size 5792
with a batch of 1 took 20 ms a step on one thread, 1.55 passes of its 33.5M-element
``weight_hh``; its FLOPs had been charged 0.75 ms."""
GATE_PASSES = 8
"""Passes over each gate element of a step: its bias, sigmoid or tanh, and the products of
the cell and hidden state."""

_GATES: dict[str, int] = {"rnn": 1, "gru": 3, "lstm": 4}
_MODULE_NAMES: dict[str, str] = {"rnn": "RNN", "gru": "GRU", "lstm": "LSTM"}


@dataclass(frozen=True)
class RNNSpec:
    """The arguments of ``torch.nn.RNN`` / ``LSTM`` / ``GRU``."""

    mode: RNNMode
    input_size: int
    hidden_size: int
    num_layers: int = 1
    nonlinearity: Literal["tanh", "relu"] | None = None
    """Activation of an RNN (None: tanh); LSTM and GRU take none."""
    bias: bool = True
    batch_first: bool = False
    bidirectional: bool = False

    @property
    def gates(self) -> int:
        """Rows of each weight, in units of hidden_size: 1 (RNN), 3 (GRU), 4 (LSTM)."""
        return _GATES[self.mode]

    @property
    def directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def module_name(self) -> str:
        return _MODULE_NAMES[self.mode]

    def describe(self) -> str:
        """``an LSTM with num_layers=2, bidirectional``: how errors name the layer."""
        article = "an" if self.mode in ("rnn", "lstm") else "a"
        text = f"{article} {self.module_name} with num_layers={self.num_layers}"
        return text + (", bidirectional" if self.bidirectional else "")

    def parameter_shapes(self) -> dict[str, list[int]]:
        """Every parameter's name and shape, in the module's order (torch's names)."""
        shapes: dict[str, list[int]] = {}
        rows = self.gates * self.hidden_size
        for layer in range(self.num_layers):
            layer_input = self.input_size if layer == 0 else self.directions * self.hidden_size
            for suffix in ("", "_reverse")[: self.directions]:
                shapes[f"weight_ih_l{layer}{suffix}"] = [rows, layer_input]
                shapes[f"weight_hh_l{layer}{suffix}"] = [rows, self.hidden_size]
                if self.bias:
                    shapes[f"bias_ih_l{layer}{suffix}"] = [rows]
                    shapes[f"bias_hh_l{layer}{suffix}"] = [rows]
        return shapes


@dataclass(frozen=True)
class RNNPlan:
    """What planning learnt about the input: batched or not, and its sizes."""

    batched: bool
    seq_len: int
    batch: int
    state_shape: list[int]
    output_shape: list[int]


@dataclass(frozen=True)
class RNNResult:
    """The output sequence, final states and the parameters used."""

    output: torch.Tensor
    h_n: torch.Tensor
    c_n: torch.Tensor | None
    parameters: dict[str, torch.Tensor]


def plan_rnn(
    spec: RNNSpec,
    input_shape: Sequence[int],
    budget: Budget,
    *,
    h0_shape: Sequence[int] | None = None,
    c0_shape: Sequence[int] | None = None,
    weight_shapes: Mapping[str, Sequence[int]] | None = None,
    dtype: torch.dtype = torch.float32,
) -> RNNPlan:
    """Check the shapes and charge the layer's tensors (as shapes) and its work: the gate
    matmuls of every step, layer and direction at the rate of ``dtype`` (the input's: see
    :func:`~service.ops.nn.layers.compute_dtype`), the gates' elementwise work, and every
    step's own cost (each of ``seq_len × num_layers × directions`` steps is several kernel
    calls, however small the sizes).

    Raises :class:`InvalidInput` in the layer's terms, or :class:`LimitExceeded`.
    """
    name = spec.module_name
    if spec.nonlinearity is not None and spec.mode != "rnn":
        raise InvalidInput(
            f"nonlinearity applies to mode 'rnn' only; {name} has fixed gates (sigmoid and "
            "tanh): leave nonlinearity out",
            code=ErrorCode.UNEXPECTED_ARGUMENT,
        )
    if c0_shape is not None and spec.mode != "lstm":
        raise InvalidInput(
            f"c0 is given but only an LSTM has a cell state; {name} takes h0 alone",
            code=ErrorCode.UNEXPECTED_ARGUMENT,
        )
    layout = "[N, L, input_size]" if spec.batch_first else "[L, N, input_size]"
    if len(input_shape) not in (2, 3):
        raise shape_error(
            f"input has {len(input_shape)} dimension{'' if len(input_shape) == 1 else 's'} "
            f"(shape {as_shape(input_shape)}); {name} "
            f"takes {layout} (batched) or [L, input_size] (unbatched), with "
            f"input_size={spec.input_size}",
            input_shape,
            None,
        )
    batched = len(input_shape) == 3
    if input_shape[-1] != spec.input_size:
        raise shape_error(
            f"input has {input_shape[-1]} features, the layer expects {spec.input_size} "
            f"(input_size={spec.input_size}; input shape {as_shape(input_shape)}, features in "
            "the last dimension)",
            input_shape,
            [*input_shape[:-1], spec.input_size],
        )
    if batched:
        batch, seq_len = (
            (input_shape[0], input_shape[1])
            if spec.batch_first
            else (input_shape[1], input_shape[0])
        )
    else:
        batch, seq_len = 1, input_shape[0]
    if seq_len == 0:
        raise shape_error(
            f"input has a sequence length of 0 (shape {as_shape(input_shape)}, layout "
            f"{layout if batched else '[L, input_size]'}); {name} needs at least one step",
            input_shape,
            None,
        )
    layers = spec.directions * spec.num_layers
    state_shape = [layers, batch, spec.hidden_size] if batched else [layers, spec.hidden_size]
    for state, shape in (("h0", h0_shape), ("c0", c0_shape)):
        if shape is not None and as_shape(shape) != state_shape:
            form = "[D·num_layers, N, hidden_size]" if batched else "[D·num_layers, hidden_size]"
            kind = "a batched" if batched else "an unbatched"
            raise shape_error(
                f"{state} has shape {as_shape(shape)}, {spec.describe()} and "
                f"hidden_size={spec.hidden_size} expects {state_shape} for {kind} input "
                f"of shape {as_shape(input_shape)} ({form})",
                shape,
                state_shape,
            )
    shapes = spec.parameter_shapes()
    for param, shape in (weight_shapes or {}).items():
        if param not in shapes:
            raise InvalidInput(
                f"weights: {spec.describe()} has no parameter {param!r}; its parameters are "
                f"{', '.join(shapes)}",
                details={"name": param, "allowed": list(shapes)},
                code=ErrorCode.UNKNOWN_PARAM,
            )
        if as_shape(shape) != shapes[param]:
            raise shape_error(
                f"weights.{param} has shape {as_shape(shape)}, {spec.describe()}, "
                f"input_size={spec.input_size} and hidden_size={spec.hidden_size} expects "
                f"{shapes[param]}",
                shape,
                shapes[param],
            )

    features = spec.directions * spec.hidden_size
    if batched:
        output_shape = (
            [batch, seq_len, features] if spec.batch_first else [seq_len, batch, features]
        )
    else:
        output_shape = [seq_len, features]
    budget.charge_shape(input_shape, f"input of shape {as_shape(input_shape)}")
    budget.charge_objects(len(shapes), f"{len(shapes)} parameters")
    parameters = 0
    for param, shape in shapes.items():
        budget.charge_shape(shape, f"parameter {param} of shape {shape}")
        parameters += math.prod(shape)
    states = 2 if spec.mode == "lstm" else 1
    for state in ("initial", "final"):
        for _ in range(states):
            budget.charge_shape(state_shape, f"{state} state of shape {state_shape}")
    rows = spec.gates * spec.hidden_size
    gates_shape = [seq_len, batch, rows]
    for layer in range(spec.num_layers):
        for _ in range(spec.directions):
            budget.charge_shape(gates_shape, f"gates of layer {layer}")
        budget.charge_shape(output_shape, f"output of layer {layer}")
    what = f"{spec.describe()} over {seq_len:,} steps"
    flops = 0
    for layer in range(spec.num_layers):
        layer_input = spec.input_size if layer == 0 else features
        per_step = estimate_matmul_flops((batch, layer_input), (layer_input, rows))
        per_step += estimate_matmul_flops((batch, spec.hidden_size), (spec.hidden_size, rows))
        flops += per_step * seq_len * spec.directions
    budget.charge_flops(flops, what, dtype=dtype)
    # Every step multiplies the state by the whole recurrent weight: for a small batch, a
    # pass over the weight, bound by memory, not by its FLOPs.
    recurrent = spec.hidden_size * rows * seq_len * spec.num_layers * spec.directions
    budget.charge_elementwise(
        RECURRENT_READ_PASSES * recurrent, f"{what}: the recurrent weights read at every step"
    )
    steps = seq_len * spec.num_layers * spec.directions
    budget.charge_seconds(steps * STEP_SECONDS, f"{what}: {steps:,} steps one after another")
    budget.count_serial_steps(steps)
    gate_elements = steps * batch * rows
    budget.charge_elementwise(
        GATE_PASSES * gate_elements + INIT_PASSES * parameters, f"{what}: gates and parameters"
    )
    return RNNPlan(batched, seq_len, batch, state_shape, output_shape)


def build_rnn(spec: RNNSpec, seed: int | None) -> nn.RNNBase:
    """The module on the CPU, initialised as ``torch.manual_seed(seed)`` then building it."""
    common = {
        "num_layers": spec.num_layers,
        "bias": spec.bias,
        "batch_first": spec.batch_first,
        "bidirectional": spec.bidirectional,
        "device": META,
    }
    module: nn.RNNBase
    if spec.mode == "rnn":
        module = nn.RNN(
            spec.input_size, spec.hidden_size, nonlinearity=spec.nonlinearity or "tanh", **common
        )
    elif spec.mode == "lstm":
        module = nn.LSTM(spec.input_size, spec.hidden_size, **common)
    else:
        module = nn.GRU(spec.input_size, spec.hidden_size, **common)
    module = module.to_empty(device=CPU)
    generator = make_generator(seed)
    # nn.RNNBase.reset_parameters, drawing from our generator instead of the global one.
    stdv = 1.0 / math.sqrt(spec.hidden_size) if spec.hidden_size > 0 else 0
    for weight in module.parameters():
        nn.init.uniform_(weight, -stdv, stdv, generator=generator)
    return module


def rnn_forward(
    spec: RNNSpec,
    input: torch.Tensor,
    *,
    h0: torch.Tensor | None = None,
    c0: torch.Tensor | None = None,
    weights: Mapping[str, torch.Tensor] | None = None,
    seed: int | None = None,
    device: torch.device = CPU,
    deadline: Deadline | None = None,
) -> RNNResult:
    """Run the recurrent layer on ``input`` (planned with :func:`plan_rnn` first)."""
    dtype = compute_dtype(input.dtype)
    module = build_rnn(spec, seed).to(dtype)
    params = dict(module.named_parameters())
    with torch.no_grad():
        for name, value in (weights or {}).items():
            params[name].copy_(value)
    module = module.to(device)
    x = input.to(device=device, dtype=dtype)
    # Neither state given: None, exactly as a caller of the torch.nn module would pass.
    hx: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = None
    if h0 is not None or c0 is not None:
        state_shape = _state_shape(spec, input)
        hx = _state(h0, state_shape, dtype, device)
        if spec.mode == "lstm":
            hx = (hx, _state(c0, state_shape, dtype, device))
    if deadline is not None:
        deadline.check()
    with torch.no_grad():  # a forward pass only; with autograd torch takes other kernels
        output, final = module(x, hx)
    if isinstance(final, tuple):
        h_n, c_n = final
    else:
        h_n, c_n = final, None
    return RNNResult(output, h_n, c_n, dict(module.named_parameters()))


def _state_shape(spec: RNNSpec, input: torch.Tensor) -> list[int]:
    layers = spec.directions * spec.num_layers
    if input.dim() == 2:
        return [layers, spec.hidden_size]
    batch = input.shape[0] if spec.batch_first else input.shape[1]
    return [layers, batch, spec.hidden_size]


def _state(
    value: torch.Tensor | None, shape: list[int], dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    if value is None:
        return torch.zeros(shape, dtype=dtype, device=device)
    return value.to(device=device, dtype=dtype)
