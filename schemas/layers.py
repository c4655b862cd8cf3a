"""``POST /layers/linear`` and ``POST /layers/rnn``: a layer's forward pass (chapters 6.5, 6.4).

Layers are built as ``torch.nn`` builds them. Parameters not given are initialised exactly as
``torch.manual_seed(seed); torch.nn.Linear(...)`` (or ``RNN``/``LSTM``/``GRU``) would
initialise them, without touching the server's global random state.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import Field

from schemas.common import (
    ComputeRequest,
    ComputeResponse,
    Int,
    Rule,
    Tensor1D,
    Tensor2D,
    Tensor2To3D,
    TensorNonScalar,
    TensorOut,
    at_most,
    has_value,
    needs,
    none_given,
    when_value,
)

MAX_FEATURES = 1 << 26
MAX_RNN_SIZE = 1 << 24
MAX_RNN_LAYERS = 64

_DTYPE_RULE = (
    "Computed in float64 when `input` is float64, else in float32 (integer and boolean "
    "inputs are converted); given parameters and states are converted to that dtype."
)

LINEAR_EXAMPLE: dict[str, Any] = {
    "in_features": 3,
    "out_features": 2,
    "input": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]],
    "seed": 0,
}

RNN_EXAMPLE: dict[str, Any] = {
    "mode": "lstm",
    "input_size": 4,
    "hidden_size": 3,
    "num_layers": 2,
    "input": [
        [[0.1, 0.2, 0.3, 0.4]],
        [[0.5, 0.6, 0.7, 0.8]],
        [[0.9, 1.0, 1.1, 1.2]],
    ],
    "seed": 0,
}


class LinearRequest(ComputeRequest):
    """`torch.nn.Linear(in_features, out_features, bias)` applied to `input`: y = x·Wᵀ + b.

    `weight` and `bias_values` are used exactly when given; otherwise they are drawn as
    `torch.nn.Linear` draws them (uniform on ±1/√in_features), seeded by `seed`: the same
    numbers as `torch.manual_seed(seed); torch.nn.Linear(in_features, out_features)`, on any
    device. Without a seed they are random. The response returns the parameters used.
    """

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = (
        needs("bias_values", has_value("bias", (True,), default=True)),
    )

    model_config = {"json_schema_extra": {"examples": [LINEAR_EXAMPLE]}}

    in_features: Int = Field(
        ge=1, le=MAX_FEATURES, description="Features of each input sample.", examples=[3]
    )
    out_features: Int = Field(
        ge=1, le=MAX_FEATURES, description="Features of each output sample.", examples=[2]
    )
    bias: bool = Field(
        default=True, description="Whether the layer adds a bias (torch's default: true)."
    )
    input: TensorNonScalar = Field(
        description="The input, [N, in_features] (any number of leading dimensions, as "
        "`nn.Linear` allows: [*, in_features]). " + _DTYPE_RULE,
        examples=[[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]],
    )
    weight: Tensor2D | None = Field(
        default=None,
        description="The weight W, [out_features, in_features]; default: torch's "
        "initialisation, seeded by `seed`.",
        examples=[[[0.5, -0.5, 1.0], [1.0, 0.0, -1.0]]],
    )
    bias_values: Tensor1D | None = Field(
        default=None,
        description="The bias b, [out_features] (only with `bias` true); default: torch's "
        "initialisation, seeded by `seed`.",
        examples=[[0.1, -0.1]],
    )


class LinearResponse(ComputeResponse):
    """The layer's output and the parameters it used."""

    output: TensorOut = Field(
        description="x·Wᵀ + b: the input's shape with the last dimension out_features."
    )
    weight: TensorOut = Field(description="The weight used, [out_features, in_features].")
    bias: TensorOut | None = Field(
        description="The bias used, [out_features]; null when `bias` is false."
    )


RNNMode = Literal["rnn", "lstm", "gru"]
_MODES: tuple[str, ...] = get_args(RNNMode)
PARAMETER_NAME_PATTERN = r"^(weight|bias)_(ih|hh)_l\d{1,2}(_reverse)?$"
ParameterName = Annotated[
    str,
    Field(
        pattern=PARAMETER_NAME_PATTERN,
        description="torch's parameter name: `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, "
        "`bias_hh_l0`, … (`_reverse` for the backward direction).",
    ),
]


def _weights(schema: dict[str, Any]) -> None:
    # Weights are matrices and biases vectors, by their names.
    ((_, values),) = schema.pop("patternProperties").items()
    matrix, vector = values["anyOf"]  # Tensor2D | Tensor1D, as the field says
    schema["propertyNames"] = {"pattern": PARAMETER_NAME_PATTERN}
    schema["patternProperties"] = {"^weight_": matrix, "^bias_": vector}
    schema["additionalProperties"] = False


class RNNRequest(ComputeRequest):
    """`torch.nn.RNN`, `LSTM` or `GRU` (by `mode`) applied to `input`, in evaluation mode.

    Shapes, with L the sequence length, N the batch, D = 2 if bidirectional else 1:
    `input` [L, N, input_size] ([N, L, input_size] with `batch_first`) or [L, input_size]
    unbatched; `h0` and `c0` [D·num_layers, N, hidden_size] (batch_first does not apply to
    them), or [D·num_layers, hidden_size] for an unbatched input.

    Parameters not given in `weights` are drawn as torch draws them (uniform on
    ±1/√hidden_size), seeded by `seed`: the same numbers as `torch.manual_seed(seed)` followed
    by building the module, on any device. Without a seed they are random.
    """

    SCHEMA_RULES: ClassVar[tuple[Rule, ...]] = (
        when_value("mode", ("rnn", "gru"), none_given("c0"), choices=_MODES, default="rnn"),
        when_value(
            "mode", ("lstm", "gru"), none_given("nonlinearity"), choices=_MODES, default="rnn"
        ),
    )

    model_config = {"json_schema_extra": {"examples": [RNN_EXAMPLE]}}

    mode: RNNMode = Field(
        default="rnn",
        description="`rnn` (Elman RNN, torch.nn.RNN), `lstm` (torch.nn.LSTM) or `gru` "
        "(torch.nn.GRU).",
        examples=["lstm"],
    )
    input_size: Int = Field(
        ge=1, le=MAX_RNN_SIZE, description="Features of each input step (H_in).", examples=[4]
    )
    hidden_size: Int = Field(
        ge=1, le=MAX_RNN_SIZE, description="Features of the hidden state (H_out).", examples=[3]
    )
    num_layers: Int = Field(
        default=1,
        ge=1,
        le=MAX_RNN_LAYERS,
        description="Stacked recurrent layers; each after the first reads the previous "
        "one's output.",
        examples=[2],
    )
    nonlinearity: Literal["tanh", "relu"] | None = Field(
        default=None,
        description="Activation of an `rnn` (default `tanh`). LSTM and GRU have fixed gates: "
        "giving it for them is a 422.",
    )
    bias: bool = Field(
        default=True, description="Whether the layers have the biases b_ih and b_hh."
    )
    batch_first: bool = Field(
        default=False,
        description="Input and output are [N, L, features] instead of [L, N, features].",
    )
    bidirectional: bool = Field(
        default=False,
        description="Run each layer forwards and backwards; outputs are concatenated "
        "(2·hidden_size features).",
    )
    input: Tensor2To3D = Field(
        description="The input sequence: [L, N, input_size], [N, L, input_size] with "
        "`batch_first`, or [L, input_size] unbatched. " + _DTYPE_RULE,
        examples=[RNN_EXAMPLE["input"]],
    )
    h0: Tensor2To3D | None = Field(
        default=None,
        description="Initial hidden state, [D·num_layers, N, hidden_size] "
        "([D·num_layers, hidden_size] unbatched); default zeros.",
    )
    c0: Tensor2To3D | None = Field(
        default=None,
        description="Initial cell state of an `lstm`, shaped like h0; default zeros.",
    )
    weights: (
        Annotated[
            dict[ParameterName, Tensor2D | Tensor1D],
            at_most(4 * 2 * MAX_RNN_LAYERS),
            Field(json_schema_extra=_weights),
        ]
        | None
    ) = Field(
        default=None,
        max_length=4 * 2 * MAX_RNN_LAYERS,
        description="Parameters to use, by torch's names (see `parameters` in the response "
        "for the names and shapes of a layer): `weight_ih_l{k}` [G·hidden_size, input size of "
        "layer k], `weight_hh_l{k}` [G·hidden_size, hidden_size], `bias_ih_l{k}` and "
        "`bias_hh_l{k}` [G·hidden_size], with G = 1 (rnn), 3 (gru) or 4 (lstm) and the "
        "suffix `_reverse` for the backward direction. Any subset may be given; the others "
        "are initialised from `seed`.",
        examples=[{"weight_hh_l0": [[1.0, 0.0], [0.0, 1.0]]}],
    )
    return_weights: bool = Field(
        default=True,
        description="Return every parameter's values in `weights`, so the result can be "
        "reproduced with torch (false: `weights` is null).",
    )


class RNNResponse(ComputeResponse):
    """The output sequence, the final states, and the parameters used."""

    output: TensorOut = Field(
        description="The last layer's hidden state at every step: [L, N, D·hidden_size] "
        "([N, L, …] with `batch_first`; [L, D·hidden_size] unbatched). Bidirectional: forward "
        "features first, then backward."
    )
    h_n: TensorOut = Field(
        description="Final hidden state of every layer and direction: [D·num_layers, N, "
        "hidden_size] ([D·num_layers, hidden_size] unbatched), ordered layer by layer, "
        "forward before backward."
    )
    c_n: TensorOut | None = Field(
        description="Final cell state of an `lstm`, shaped like h_n; null for `rnn` and `gru`."
    )
    parameters: dict[str, list[int]] = Field(
        description="Each parameter's name (torch's) and shape, in torch's order.",
        examples=[{"weight_ih_l0": [12, 4], "weight_hh_l0": [12, 3]}],
    )
    weights: dict[str, TensorOut] | None = Field(
        description="Each parameter's values, by name; null with `return_weights` false."
    )
