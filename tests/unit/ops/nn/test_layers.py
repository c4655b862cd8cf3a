"""Linear and RNN/LSTM/GRU ops (and what they share) against ``torch.nn`` modules built
here, without HTTP."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import pytest
import torch
from torch import nn

from service.errors import InvalidInput, LimitExceeded
from service.limits import Budget
from service.ops.nn.layers import as_shape, compute_dtype, shape_error
from service.ops.nn.linear import LinearSpec, build_linear, linear_forward, plan_linear
from service.ops.nn.rnn import RNNSpec, build_rnn, plan_rnn, rnn_forward

MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


def big_budget() -> Budget:
    return Budget(1 << 40, 1 << 42, 1e18)


@pytest.fixture
def isolated_rng() -> Iterator[None]:
    """Tests that seed torch's global generator leave it as they found it."""
    with torch.random.fork_rng(devices=[]):
        yield


def torch_rnn(spec: RNNSpec, device: str = "cpu") -> nn.RNNBase:
    kwargs: dict[str, object] = {
        "device": device,
        "num_layers": spec.num_layers,
        "bias": spec.bias,
        "batch_first": spec.batch_first,
        "bidirectional": spec.bidirectional,
    }
    if spec.mode == "rnn":
        kwargs["nonlinearity"] = spec.nonlinearity or "tanh"
    return MODULES[spec.mode](spec.input_size, spec.hidden_size, **kwargs)


RNN_SPECS = [
    RNNSpec(mode, 5, 4, num_layers=layers, bias=bias, bidirectional=bidirectional)
    for mode, layers, bias, bidirectional in itertools.product(
        ("rnn", "lstm", "gru"), (1, 3), (True, False), (False, True)
    )
]


# --- seeded initialisation -----------------------------------------------------------------


@pytest.mark.parametrize(("in_features", "out_features"), [(1, 1), (3, 2), (13, 7), (128, 64)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("seed", [0, 42, 2**40 + 3])
def test_linear_init_is_torchs_for_the_same_seed(
    isolated_rng: None, in_features: int, out_features: int, bias: bool, seed: int
) -> None:
    torch.manual_seed(seed)
    reference = nn.Linear(in_features, out_features, bias=bias)
    module = build_linear(LinearSpec(in_features, out_features, bias), seed)
    assert torch.equal(module.weight, reference.weight)
    if bias:
        assert torch.equal(module.bias, reference.bias)
    else:
        assert module.bias is None


@pytest.mark.parametrize("spec", RNN_SPECS, ids=str)
def test_rnn_init_is_torchs_for_the_same_seed(isolated_rng: None, spec: RNNSpec) -> None:
    torch.manual_seed(7)
    reference = torch_rnn(spec)
    module = build_rnn(spec, 7)
    assert type(module) is type(reference)
    ours, theirs = dict(module.named_parameters()), dict(reference.named_parameters())
    assert list(ours) == list(theirs)
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name


@pytest.mark.parametrize("spec", RNN_SPECS, ids=str)
def test_parameter_shapes_are_the_modules(spec: RNNSpec) -> None:
    module = torch_rnn(spec, device="meta")
    expected = {name: list(p.shape) for name, p in module.named_parameters()}
    assert spec.parameter_shapes() == expected
    assert list(spec.parameter_shapes()) == list(expected)  # torch's order


def test_init_leaves_the_global_generator_alone() -> None:
    state = torch.get_rng_state()
    build_linear(LinearSpec(8, 4), 3)
    build_rnn(RNNSpec("lstm", 8, 4, num_layers=2), 3)
    build_linear(LinearSpec(8, 4), None)
    assert torch.equal(torch.get_rng_state(), state)


def test_without_a_seed_parameters_are_random() -> None:
    first, second = build_linear(LinearSpec(16, 16), None), build_linear(LinearSpec(16, 16), None)
    assert not torch.equal(first.weight, second.weight)
    bound = 1 / math.sqrt(16)
    assert first.weight.abs().max() <= bound


# --- Linear forward ------------------------------------------------------------------------


@pytest.mark.parametrize("input_shape", [(5, 3), (3,), (2, 4, 3), (0, 3)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_linear_with_given_weights_matches_nn_linear(
    input_shape: tuple[int, ...], dtype: torch.dtype
) -> None:
    generator = torch.Generator().manual_seed(0)
    reference = nn.Linear(3, 4).to(dtype)
    with torch.no_grad():
        reference.weight.copy_(torch.randn(4, 3, generator=generator))
        reference.bias.copy_(torch.randn(4, generator=generator))
    x = torch.randn(input_shape, generator=generator, dtype=dtype)
    spec = LinearSpec(3, 4)
    assert plan_linear(spec, x.shape, big_budget()) == [*input_shape[:-1], 4]
    result = linear_forward(
        spec, x, weight=reference.weight.detach(), bias=reference.bias.detach(), seed=None
    )
    assert result.output.dtype == dtype
    torch.testing.assert_close(result.output, reference(x), rtol=0, atol=0)
    assert torch.equal(result.weight, reference.weight)
    assert result.bias is not None and torch.equal(result.bias, reference.bias)


def test_linear_float64_weights_keep_their_precision_with_a_float64_input() -> None:
    weight = torch.tensor([[1 + 2**-40, 0.0]], dtype=torch.float64)
    x = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    result = linear_forward(LinearSpec(2, 1, bias=False), x, weight=weight)
    assert result.output.item() == 1 + 2**-40
    assert result.bias is None


def test_linear_seeded_float64_is_the_converted_float32_init(isolated_rng: None) -> None:
    torch.manual_seed(5)
    reference = nn.Linear(6, 3).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    result = linear_forward(LinearSpec(6, 3), x, seed=5)
    assert torch.equal(result.output, reference(x))


def test_integer_input_is_computed_in_float32() -> None:
    x = torch.tensor([[1, 2]])
    weight = torch.tensor([[1.0, 1.0]])
    result = linear_forward(LinearSpec(2, 1, bias=False), x, weight=weight)
    assert result.output.dtype == torch.float32
    assert result.output.tolist() == [[3.0]]


def test_linear_given_bias_alone_keeps_the_seeded_weight(isolated_rng: None) -> None:
    torch.manual_seed(1)
    reference = nn.Linear(3, 2)
    bias = torch.tensor([10.0, -10.0])
    result = linear_forward(LinearSpec(3, 2), torch.ones(1, 3), bias=bias, seed=1)
    assert torch.equal(result.weight, reference.weight)
    assert result.bias is not None
    assert torch.equal(result.bias, bias)


# --- RNN forward ---------------------------------------------------------------------------

FORWARD_CASES = [
    (mode, layers, bidirectional, batch_first, batched, with_state)
    for mode, layers, bidirectional, batch_first, batched, with_state in itertools.product(
        ("rnn", "lstm", "gru"), (1, 2), (False, True), (False, True), (True, False), (False, True)
    )
    if batched or not batch_first  # batch_first means nothing without a batch
]


@pytest.mark.parametrize(
    ("mode", "layers", "bidirectional", "batch_first", "batched", "with_state"), FORWARD_CASES
)
def test_rnn_with_given_weights_matches_torch(
    mode: str, layers: int, bidirectional: bool, batch_first: bool, batched: bool, with_state: bool
) -> None:
    spec = RNNSpec(
        mode,  # type: ignore[arg-type]
        input_size=3,
        hidden_size=4,
        num_layers=layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
    )
    generator = torch.Generator().manual_seed(11)
    reference = torch_rnn(spec)
    weights = {
        name: torch.randn(p.shape, generator=generator) for name, p in reference.named_parameters()
    }
    with torch.no_grad():
        for name, p in reference.named_parameters():
            p.copy_(weights[name])
    seq, batch = 5, 2
    shape = ((batch, seq, 3) if batch_first else (seq, batch, 3)) if batched else (seq, 3)
    x = torch.randn(shape, generator=generator)
    state_shape = (spec.directions * layers, batch, 4) if batched else (spec.directions * layers, 4)
    h0 = torch.randn(state_shape, generator=generator) if with_state else None
    c0 = torch.randn(state_shape, generator=generator) if with_state and mode == "lstm" else None
    plan = plan_rnn(
        spec,
        x.shape,
        big_budget(),
        h0_shape=None if h0 is None else h0.shape,
        c0_shape=None if c0 is None else c0.shape,
        weight_shapes={name: w.shape for name, w in weights.items()},
    )
    result = rnn_forward(spec, x, h0=h0, c0=c0, weights=weights)

    hx: torch.Tensor | tuple[torch.Tensor, torch.Tensor] | None = h0
    if mode == "lstm" and h0 is not None:
        hx = (h0, c0 if c0 is not None else torch.zeros(state_shape))
    with torch.no_grad():
        output, final = reference(x, hx)
    h_n, c_n = final if mode == "lstm" else (final, None)
    torch.testing.assert_close(result.output, output, rtol=0, atol=0)
    torch.testing.assert_close(result.h_n, h_n, rtol=0, atol=0)
    if mode == "lstm":
        assert result.c_n is not None
        torch.testing.assert_close(result.c_n, c_n, rtol=0, atol=0)
    else:
        assert result.c_n is None
    assert list(result.output.shape) == plan.output_shape
    assert list(result.h_n.shape) == plan.state_shape
    for name, value in weights.items():
        assert torch.equal(result.parameters[name], value)


@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_nonlinearity_and_seed_match_torch(isolated_rng: None, nonlinearity: str) -> None:
    torch.manual_seed(3)
    reference = nn.RNN(3, 6, num_layers=2, nonlinearity=nonlinearity)
    x = torch.randn(4, 2, 3)
    spec = RNNSpec("rnn", 3, 6, num_layers=2, nonlinearity=nonlinearity)  # type: ignore[arg-type]
    result = rnn_forward(spec, x, seed=3)
    with torch.no_grad():
        output, h_n = reference(x)
    assert torch.equal(result.output, output)
    assert torch.equal(result.h_n, h_n)
    if nonlinearity == "relu":
        assert result.output.min() >= 0


def test_rnn_partial_weights_keep_the_others_seeded(isolated_rng: None) -> None:
    torch.manual_seed(9)
    reference = nn.GRU(2, 3, bidirectional=True)
    given = torch.zeros(9, 3)
    spec = RNNSpec("gru", 2, 3, bidirectional=True)
    result = rnn_forward(spec, torch.ones(2, 1, 2), weights={"weight_hh_l0_reverse": given}, seed=9)
    for name, value in reference.named_parameters():
        expected = given if name == "weight_hh_l0_reverse" else value
        assert torch.equal(result.parameters[name], expected), name


def test_rnn_float64_input(isolated_rng: None) -> None:
    torch.manual_seed(2)
    reference = nn.LSTM(3, 2).double()
    x = torch.randn(4, 1, 3, dtype=torch.float64)
    result = rnn_forward(RNNSpec("lstm", 3, 2), x, seed=2)
    with torch.no_grad():
        output, _ = reference(x)
    assert result.output.dtype == torch.float64
    assert torch.equal(result.output, output)


# --- planning: errors in the layer's terms, limits -----------------------------------------


@pytest.mark.parametrize(
    ("spec", "input_shape", "kwargs", "message"),
    [
        (LinearSpec(13, 2), (4, 12), {}, "input has 12 features, the layer expects 13"),
        (LinearSpec(13, 2), (4, 12), {}, "input shape [4, 12]"),
        (LinearSpec(13, 2), (), {}, "0-d"),
        (
            LinearSpec(4, 5),
            (2, 4),
            {"weight_shape": (4, 3)},
            "weight has shape [4, 3], Linear(in_features=4, out_features=5, bias=True) "
            "expects [5, 4]",
        ),
        (LinearSpec(4, 5), (2, 4), {"weight_shape": (20,)}, "expects [5, 4]"),
        (LinearSpec(4, 5), (2, 4), {"bias_shape": (4,)}, "bias_values has shape [4]"),
    ],
)
def test_linear_shape_errors(
    spec: LinearSpec, input_shape: tuple[int, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_linear(spec, input_shape, big_budget(), **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == "shape_mismatch"
    assert message in caught.value.message


def test_bias_values_without_bias_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_linear(LinearSpec(2, 3, bias=False), (1, 2), big_budget(), bias_shape=(3,))
    assert caught.value.code == "unexpected_argument"


LSTM2 = RNNSpec("lstm", 10, 20, num_layers=2, bidirectional=True)


@pytest.mark.parametrize(
    ("spec", "input_shape", "kwargs", "code", "message"),
    [
        (LSTM2, (5, 3, 12), {}, "shape_mismatch", "input has 12 features, the layer expects 10"),
        (LSTM2, (5, 3, 2, 10), {}, "shape_mismatch", "input has 4 dimensions"),
        (LSTM2, (10,), {}, "shape_mismatch", "[L, input_size] (unbatched)"),
        (LSTM2, (0, 3, 10), {}, "shape_mismatch", "sequence length of 0"),
        (
            LSTM2,
            (5, 3, 10),
            {"h0_shape": (1, 3, 20)},
            "shape_mismatch",
            "h0 has shape [1, 3, 20], an LSTM with num_layers=2, bidirectional and "
            "hidden_size=20 expects [4, 3, 20]",
        ),
        (LSTM2, (5, 3, 10), {"c0_shape": (4, 20)}, "shape_mismatch", "c0 has shape [4, 20]"),
        (LSTM2, (5, 10), {"h0_shape": (4, 1, 20)}, "shape_mismatch", "expects [4, 20]"),
        (
            RNNSpec("gru", 10, 20, batch_first=True),
            (3, 5, 10),
            {"h0_shape": (1, 5, 20)},
            "shape_mismatch",
            "a GRU with num_layers=1 and hidden_size=20 expects [1, 3, 20]",
        ),
        (RNNSpec("gru", 10, 20), (5, 3, 10), {"c0_shape": (1, 3, 20)}, "unexpected_argument", "c0"),
        (
            RNNSpec("lstm", 10, 20, nonlinearity="relu"),
            (5, 3, 10),
            {},
            "unexpected_argument",
            "nonlinearity applies to mode 'rnn' only",
        ),
        (
            LSTM2,
            (5, 3, 10),
            {"weight_shapes": {"weight_ih_l2": (80, 40)}},
            "unknown_param",
            "has no parameter 'weight_ih_l2'",
        ),
        (
            LSTM2,
            (5, 3, 10),
            {"weight_shapes": {"weight_ih_l1": (80, 20)}},
            "shape_mismatch",
            "weights.weight_ih_l1 has shape [80, 20]",
        ),
        (
            RNNSpec("rnn", 10, 20, bias=False),
            (5, 3, 10),
            {"weight_shapes": {"bias_ih_l0": (20,)}},
            "unknown_param",
            "bias_ih_l0",
        ),
    ],
)
def test_rnn_errors(
    spec: RNNSpec,
    input_shape: tuple[int, ...],
    kwargs: dict[str, object],
    code: str,
    message: str,
) -> None:
    with pytest.raises(InvalidInput) as caught:
        plan_rnn(spec, input_shape, big_budget(), **kwargs)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert message in caught.value.message


def test_linear_flops_and_elements_are_charged() -> None:
    budget = big_budget()
    plan_linear(LinearSpec(7, 5), (2, 3, 7), budget)
    assert budget.flops == 2 * 6 * 7 * 5
    assert budget.elements == 42 + 35 + 5 + 30


def test_rnn_flops_count_every_gate_matmul() -> None:
    spec = RNNSpec("lstm", 10, 20, num_layers=2, bidirectional=True)
    budget = big_budget()
    plan_rnn(spec, (5, 3, 10), budget)
    layer0 = 2 * 3 * 10 * 80 + 2 * 3 * 20 * 80
    layer1 = 2 * 3 * 40 * 80 + 2 * 3 * 20 * 80
    assert budget.flops == 5 * 2 * (layer0 + layer1)


def test_limits_refuse_before_allocating() -> None:
    with pytest.raises(LimitExceeded) as caught:
        plan_linear(LinearSpec(1, 1 << 26), (1, 1), Budget(1 << 22, 1 << 24, 1e18))
    assert caught.value.limit == "max_elements"
    with pytest.raises(LimitExceeded) as caught:
        plan_rnn(RNNSpec("gru", 64, 64), (1000, 8, 64), Budget(1 << 22, 1 << 24, 1e6))
    assert caught.value.limit == "max_flops"


# --- what the layers share -------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool]
)
def test_the_compute_dtype_is_float64_only_for_float64(dtype: torch.dtype) -> None:
    expected = torch.promote_types(torch.float32, dtype)
    expected = expected if expected == torch.float64 else torch.float32
    assert compute_dtype(dtype) == expected


def test_shape_errors_carry_plain_shapes() -> None:
    error = shape_error("no", torch.Size([2, 3]), (2, 4))
    assert error.code == "shape_mismatch" and error.status_code == 422
    assert error.details == {"got": [2, 3], "expected": [2, 4]}
    assert shape_error("no", (), None).details == {"got": []}
    assert as_shape(torch.zeros(1, 0, 5).shape) == [1, 0, 5]
