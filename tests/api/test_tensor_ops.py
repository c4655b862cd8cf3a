"""``POST /tensor/ops`` over HTTP: the tutorial's chapter 3, every op, errors, limits, indexing.

Every reference value is computed here by torch itself (or numpy), never pasted.
"""

from __future__ import annotations

import asyncio
import base64
import math
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, get_args

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas.common import MAX_TENSORS
from schemas.tensors import TUTORIAL_PROGRAM, TensorStepUnion
from service.api.compute import INLINE_OBJECTS
from service.main import create_app
from service.ops.tensors.indexing import IndexItem, format_index
from service.ops.tensors.table import OPS
from tests.conftest import make_settings, ops

# --- helpers ---------------------------------------------------------------------------------

DTYPE_BY_NAME: dict[str, torch.dtype] = {
    "bool": torch.bool,
    "uint8": torch.uint8,
    "int8": torch.int8,
    "int16": torch.int16,
    "int32": torch.int32,
    "int64": torch.int64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
    "float64": torch.float64,
}
NAME_BY_DTYPE = {dtype: name for name, dtype in DTYPE_BY_NAME.items()}
NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def _plain(value: Any) -> Any:
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, str):
        return NON_FINITE[value]
    return value


def wire_to_torch(out: Mapping[str, Any]) -> torch.Tensor:
    """A response tensor (JSON or b64 encoding) as a CPU torch tensor."""
    dtype = DTYPE_BY_NAME[out["dtype"]]
    shape = list(out["shape"])
    if "b64" in out:
        raw = base64.b64decode(out["b64"])
        if dtype == torch.bfloat16:
            array = np.frombuffer(raw, dtype="<i2").astype(np.int16)
            return torch.from_numpy(array.copy()).view(torch.bfloat16).reshape(shape)
        np_dtype = torch.empty(0, dtype=dtype).numpy().dtype.newbyteorder("<")
        array = np.frombuffer(raw, dtype=np_dtype).astype(np_dtype.newbyteorder("="))
        return torch.from_numpy(array.copy()).reshape(shape)
    data = _plain(out["data"])
    if dtype == torch.bfloat16:  # written as float32 values
        return torch.tensor(data, dtype=torch.float32).to(dtype).reshape(shape)
    return torch.tensor(data, dtype=dtype).reshape(shape)


def assert_tensor(out: Mapping[str, Any], expected: torch.Tensor) -> None:
    """Shape, dtype and values of a response tensor equal torch's."""
    expected = expected.detach().cpu()
    assert out["shape"] == list(expected.shape), out
    assert out["dtype"] == NAME_BY_DTYPE[expected.dtype], out
    torch.testing.assert_close(wire_to_torch(out), expected, equal_nan=True)


def run_ops(client: TestClient, body: Mapping[str, Any], **params: str) -> dict[str, Any]:
    """POST /tensor/ops and return the JSON of a 200 answer (conftest's ``ops``, typed)."""
    return ops(client, dict(body), **params)


def post(client: TestClient, body: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
    response = client.post("/tensor/ops", json=body)
    payload: dict[str, Any] = response.json()
    return response.status_code, payload


def assert_error(
    client: TestClient, body: Mapping[str, Any], status: int, code: str | None = None
) -> dict[str, Any]:
    """The request fails with ``status`` (and ``code``) in the contract's error shape."""
    got, payload = post(client, body)
    assert got == status, payload
    assert set(payload) == {"error", "code", "details"}, payload
    assert isinstance(payload["error"], str) and payload["error"]
    assert isinstance(payload["details"], dict)
    if code is not None:
        assert payload["code"] == code, payload
    return payload


def assert_healthy(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


# --- 1. the tutorial's chapter 3, end to end -------------------------------------------------

ARR = [[1, 2, 3], [4, 5, 6]]


def test_tutorial_chapter_3(client: TestClient) -> None:
    body = {
        "inputs": {"arr": ARR},
        "steps": [
            # 3.2 creating tensors
            {"op": "eye", "n": 4, "m": 4, "out": "torch_1"},
            {"op": "zeros", "size": [4, 4], "out": "torch_2"},
            {"op": "arange", "end": 16, "out": "torch_3"},
            {"op": "reshape", "x": "torch_3", "shape": [2, 2, -1], "out": "torch_3"},
            # 3.3 shapes
            {"op": "info", "x": "torch_1", "out": "torch_1_info"},
            {"op": "info", "x": "torch_2", "out": "torch_2_info"},
            {"op": "info", "x": "torch_3", "out": "torch_3_info"},
            # 3.4 indexing and slicing
            {"op": "index", "x": "torch_1", "index": "[2]", "out": "row"},
            {"op": "index", "x": "torch_1", "index": "[:,1]", "out": "col"},
            {"op": "index", "x": "torch_3", "index": "[:,1,:-1]", "out": "sub"},
            # 3.5 numpy to tensor: an input written as a nested list, and a tensor step
            {"op": "tensor", "data": ARR, "out": "torch_4"},
            {"op": "clone", "x": "arr", "out": "arr_copy"},
            # 3.6.1 cat
            {"op": "arange", "end": 8, "out": "torch_5"},
            {"op": "reshape", "x": "torch_5", "shape": [2, 2, 2], "out": "torch_5"},
            {"op": "arange", "end": 12, "out": "torch_6"},
            {"op": "reshape", "x": "torch_6", "shape": [3, 2, 2], "out": "torch_6"},
            {"op": "cat", "tensors": ["torch_5", "torch_6"], "dim": 0, "out": "torch_cat"},
            # 3.6.2 squeeze / unsqueeze
            {"op": "squeeze", "x": "torch_6", "out": "torch_squeeze"},
            {"op": "unsqueeze", "x": "torch_squeeze", "dim": 1, "out": "torch_unsqueeze"},
            {"op": "info", "x": "torch_squeeze", "out": "squeeze_info"},
            {"op": "info", "x": "torch_unsqueeze", "out": "unsqueeze_info"},
            # 3.6.3 view / reshape
            {"op": "view", "x": "torch_6", "shape": [-1], "out": "torch_view"},
            {"op": "reshape", "x": "torch_6", "shape": [-1], "out": "torch_reshape"},
        ],
        "return": [
            "torch_1",
            "torch_2",
            "torch_3",
            "torch_1_info",
            "torch_2_info",
            "torch_3_info",
            "row",
            "col",
            "sub",
            "torch_4",
            "arr_copy",
            "torch_5",
            "torch_6",
            "torch_cat",
            "torch_squeeze",
            "torch_unsqueeze",
            "squeeze_info",
            "unsqueeze_info",
            "torch_view",
            "torch_reshape",
        ],
    }
    out = run_ops(client, body)["outputs"]

    torch_1 = torch.eye(4, 4)
    torch_2 = torch.zeros(4, 4)
    torch_3 = torch.arange(16).reshape(2, 2, -1)
    torch_4 = torch.from_numpy(np.array(ARR, dtype=np.int64))
    torch_5 = torch.arange(8).reshape(2, 2, 2)
    torch_6 = torch.arange(12).reshape(3, 2, 2)
    torch_squeeze = torch.squeeze(torch_6)
    torch_unsqueeze = torch.unsqueeze(torch_squeeze, 1)

    assert_tensor(out["torch_1"], torch_1)
    assert_tensor(out["torch_2"], torch_2)
    assert_tensor(out["torch_3"], torch_3)
    assert out["torch_1_info"]["shape"] == list(torch_1.shape)
    assert out["torch_2_info"]["size"] == list(torch_2.size())
    assert out["torch_3_info"]["shape"] == list(torch_3.shape) == [2, 2, 4]
    assert_tensor(out["row"], torch_1[2])
    assert_tensor(out["col"], torch_1[:, 1])
    assert_tensor(out["sub"], torch_3[:, 1, :-1])
    assert_tensor(out["torch_4"], torch_4)
    assert_tensor(out["arr_copy"], torch_4)
    assert out["torch_4"]["dtype"] == "int64"
    assert_tensor(out["torch_5"], torch_5)
    assert_tensor(out["torch_6"], torch_6)
    assert_tensor(out["torch_cat"], torch.cat((torch_5, torch_6), 0))
    assert out["torch_cat"]["shape"] == [5, 2, 2]
    assert_tensor(out["torch_squeeze"], torch_squeeze)
    assert_tensor(out["torch_unsqueeze"], torch_unsqueeze)
    assert out["squeeze_info"]["shape"] == list(torch_squeeze.shape) == [3, 2, 2]
    assert out["unsqueeze_info"]["shape"] == list(torch_unsqueeze.shape) == [3, 1, 2, 2]
    assert_tensor(out["torch_view"], torch_6.view(-1))
    assert_tensor(out["torch_reshape"], torch_6.reshape(-1))


def test_tutorial_example_in_the_schema(client: TestClient) -> None:
    out = run_ops(client, TUTORIAL_PROGRAM)["outputs"]
    a = torch.tensor([[1, 2], [3, 4]])
    assert_tensor(out["s"], torch.arange(16).reshape(2, 2, -1)[:, 1, :-1])
    assert_tensor(out["c"], torch.cat([a, a], dim=0))


# --- 2. every op -----------------------------------------------------------------------------

# Inputs sent with every case, and the same values as torch tensors for the references.
INPUTS: dict[str, Any] = {
    "a": [[-1.5, 0.25, 2.0], [3.0, -0.5, 1.0]],
    "p": [[0.5, 1.0, 2.0], [4.0, 9.0, 0.25]],
    "i": [[3, -1, 4], [1, -5, 9]],
    "v": [1.0, -2.0, 3.0],
    "w": [0.5, 0.25, -1.0],
    "m": [[(r * 4 + c) / 3 - 1 for c in range(4)] for r in range(3)],
    "n": [[(r - c) / 2 for c in range(2)] for r in range(4)],
    "b": [[[(x * 12 + y * 4 + z) / 7 - 1.5 for z in range(4)] for y in range(3)] for x in range(2)],
    "c": [[[math.sin(x + y + z) for z in range(5)] for y in range(4)] for x in range(2)],
    "col": [[1.0], [2.0]],
    "one": [[[1.0, 2.0, 3.0]]],
    "flag": [True, False, True],
}


def torch_inputs() -> dict[str, torch.Tensor]:
    return {name: torch.tensor(value) for name, value in INPUTS.items()}


Ref = Callable[[dict[str, torch.Tensor]], Any]

# (id, step without "out", reference). The step stores under "r"; the reference's result is
# a tensor ("r"), a tuple ("r.0", "r.1", …) or a values/indices pair ("r", "r.indices").
OP_CASES: list[tuple[str, dict[str, Any], Ref]] = [
    # factories
    (
        "tensor",
        {"op": "tensor", "data": [[1, 2], [3, 4]]},
        lambda t: torch.tensor([[1, 2], [3, 4]]),
    ),
    (
        "tensor-float-data",
        {"op": "tensor", "data": [1, 2.5]},
        lambda t: torch.tensor([1, 2.5]),
    ),
    (
        "tensor-bool-data",
        {"op": "tensor", "data": [True, False]},
        lambda t: torch.tensor([True, False]),
    ),
    (
        "tensor-dtype",
        {"op": "tensor", "data": [[1, 2], [3, 4]], "dtype": "float64"},
        lambda t: torch.tensor([[1, 2], [3, 4]], dtype=torch.float64),
    ),
    (
        "tensor-object-form",
        {"op": "tensor", "data": {"data": [1, 2, 3, 4], "shape": [2, 2], "dtype": "int32"}},
        lambda t: torch.tensor([1, 2, 3, 4], dtype=torch.int32).reshape(2, 2),
    ),
    ("eye", {"op": "eye", "n": 3}, lambda t: torch.eye(3)),
    ("eye-n-m", {"op": "eye", "n": 2, "m": 4}, lambda t: torch.eye(2, 4)),
    (
        "eye-dtype",
        {"op": "eye", "n": 3, "dtype": "int64"},
        lambda t: torch.eye(3, dtype=torch.int64),
    ),
    ("zeros", {"op": "zeros", "size": [2, 3]}, lambda t: torch.zeros(2, 3)),
    (
        "zeros-dtype",
        {"op": "zeros", "size": [2, 3], "dtype": "int32"},
        lambda t: torch.zeros(2, 3, dtype=torch.int32),
    ),
    ("zeros-empty", {"op": "zeros", "size": [0, 3]}, lambda t: torch.zeros(0, 3)),
    ("zeros-0d", {"op": "zeros", "size": []}, lambda t: torch.zeros([])),
    ("ones", {"op": "ones", "size": [3]}, lambda t: torch.ones(3)),
    (
        "ones-oip-dtype",
        {"op": "ones", "size": [3], "dtype": "BOOL"},
        lambda t: torch.ones(3, dtype=torch.bool),
    ),
    ("full-int", {"op": "full", "size": [2, 2], "fill_value": 7}, lambda t: torch.full((2, 2), 7)),
    (
        "full-float",
        {"op": "full", "size": [2], "fill_value": 2.5},
        lambda t: torch.full((2,), 2.5),
    ),
    (
        "full-bool",
        {"op": "full", "size": [2], "fill_value": True},
        lambda t: torch.full((2,), True),
    ),
    (
        "full-dtype",
        {"op": "full", "size": [2], "fill_value": 3, "dtype": "float64"},
        lambda t: torch.full((2,), 3, dtype=torch.float64),
    ),
    ("arange", {"op": "arange", "end": 5}, lambda t: torch.arange(5)),
    (
        "arange-start-step",
        {"op": "arange", "start": 1, "end": 10, "step": 3},
        lambda t: torch.arange(1, 10, 3),
    ),
    (
        "arange-float",
        {"op": "arange", "start": 0, "end": 1, "step": 0.25},
        lambda t: torch.arange(0, 1, 0.25),
    ),
    (
        "arange-negative-step",
        {"op": "arange", "start": 5, "end": 0, "step": -1.5},
        lambda t: torch.arange(5, 0, -1.5),
    ),
    (
        "arange-dtype",
        {"op": "arange", "end": 4, "dtype": "float64"},
        lambda t: torch.arange(4, dtype=torch.float64),
    ),
    (
        "arange-empty",
        {"op": "arange", "start": 3, "end": 3},
        lambda t: torch.arange(3, 3),
    ),
    (
        "linspace",
        {"op": "linspace", "start": -6, "end": 6, "steps": 5},
        lambda t: torch.linspace(-6, 6, 5),
    ),
    (
        "linspace-dtype",
        {"op": "linspace", "start": 0, "end": 1, "steps": 7, "dtype": "float64"},
        lambda t: torch.linspace(0, 1, 7, dtype=torch.float64),
    ),
    (
        "linspace-one",
        {"op": "linspace", "start": 2, "end": 3, "steps": 1},
        lambda t: torch.linspace(2, 3, 1),
    ),
    # shape
    ("reshape", {"op": "reshape", "x": "a", "shape": [3, -1]}, lambda t: t["a"].reshape(3, -1)),
    ("view", {"op": "view", "x": "a", "shape": [-1]}, lambda t: t["a"].view(-1)),
    ("view-2d", {"op": "view", "x": "b", "shape": [4, 6]}, lambda t: t["b"].view(4, 6)),
    ("flatten", {"op": "flatten", "x": "b"}, lambda t: torch.flatten(t["b"])),
    (
        "flatten-start",
        {"op": "flatten", "x": "b", "start_dim": 1},
        lambda t: torch.flatten(t["b"], 1),
    ),
    (
        "flatten-start-end",
        {"op": "flatten", "x": "b", "start_dim": 0, "end_dim": 1},
        lambda t: torch.flatten(t["b"], 0, 1),
    ),
    ("squeeze", {"op": "squeeze", "x": "one"}, lambda t: torch.squeeze(t["one"])),
    (
        "squeeze-dim",
        {"op": "squeeze", "x": "one", "dim": 0},
        lambda t: torch.squeeze(t["one"], 0),
    ),
    (
        "squeeze-dims",
        {"op": "squeeze", "x": "one", "dim": [0, 1]},
        lambda t: torch.squeeze(t["one"], (0, 1)),
    ),
    (
        "squeeze-not-one",
        {"op": "squeeze", "x": "a", "dim": 1},
        lambda t: torch.squeeze(t["a"], 1),
    ),
    ("unsqueeze", {"op": "unsqueeze", "x": "v", "dim": 0}, lambda t: torch.unsqueeze(t["v"], 0)),
    (
        "unsqueeze-negative",
        {"op": "unsqueeze", "x": "v", "dim": -1},
        lambda t: torch.unsqueeze(t["v"], -1),
    ),
    (
        "permute",
        {"op": "permute", "x": "b", "dims": [2, 0, 1]},
        lambda t: torch.permute(t["b"], (2, 0, 1)),
    ),
    ("transpose", {"op": "transpose", "x": "a"}, lambda t: torch.transpose(t["a"], 0, 1)),
    (
        "transpose-dims",
        {"op": "transpose", "x": "b", "dim0": 0, "dim1": -1},
        lambda t: torch.transpose(t["b"], 0, -1),
    ),
    ("t", {"op": "t", "x": "a"}, lambda t: torch.t(t["a"])),
    ("t-1d", {"op": "t", "x": "v"}, lambda t: torch.t(t["v"])),
    ("cat", {"op": "cat", "tensors": ["a", "p"]}, lambda t: torch.cat([t["a"], t["p"]])),
    (
        "cat-dim1",
        {"op": "cat", "tensors": ["a", "p", "a"], "dim": 1},
        lambda t: torch.cat([t["a"], t["p"], t["a"]], dim=1),
    ),
    (
        "cat-inline",
        {"op": "cat", "tensors": ["a", [[9.0, 8.0, 7.0]]], "dim": 0},
        lambda t: torch.cat([t["a"], torch.tensor([[9.0, 8.0, 7.0]])]),
    ),
    (
        "cat-promotes",
        {"op": "cat", "tensors": ["a", "i"]},
        lambda t: torch.cat([t["a"], t["i"]]),
    ),
    ("stack", {"op": "stack", "tensors": ["a", "p"]}, lambda t: torch.stack([t["a"], t["p"]])),
    (
        "stack-last",
        {"op": "stack", "tensors": ["v", "w"], "dim": -1},
        lambda t: torch.stack([t["v"], t["w"]], dim=-1),
    ),
    (
        "split-size",
        {"op": "split", "x": "a", "split_size_or_sections": 1},
        lambda t: torch.split(t["a"], 1),
    ),
    (
        "split-sections",
        {"op": "split", "x": "a", "split_size_or_sections": [1, 2], "dim": 1},
        lambda t: torch.split(t["a"], [1, 2], dim=1),
    ),
    (
        "chunk",
        {"op": "chunk", "x": "b", "chunks": 2, "dim": 2},
        lambda t: torch.chunk(t["b"], 2, dim=2),
    ),
    (
        "chunk-uneven",
        {"op": "chunk", "x": "m", "chunks": 2, "dim": 0},
        lambda t: torch.chunk(t["m"], 2, dim=0),
    ),
    ("expand", {"op": "expand", "x": "col", "size": [2, 3]}, lambda t: t["col"].expand(2, 3)),
    (
        "expand-new-dim",
        {"op": "expand", "x": "col", "size": [4, -1, 3]},
        lambda t: t["col"].expand(4, -1, 3),
    ),
    ("repeat", {"op": "repeat", "x": "a", "repeats": [2, 1]}, lambda t: t["a"].repeat(2, 1)),
    (
        "repeat-more-dims",
        {"op": "repeat", "x": "v", "repeats": [2, 2]},
        lambda t: t["v"].repeat(2, 2),
    ),
    ("contiguous", {"op": "contiguous", "x": "a"}, lambda t: t["a"].contiguous()),
    ("clone", {"op": "clone", "x": "i"}, lambda t: torch.clone(t["i"])),
    ("index-int", {"op": "index", "x": "a", "index": "[1]"}, lambda t: t["a"][1]),
    ("index-scalar", {"op": "index", "x": "a", "index": "[1, 2]"}, lambda t: t["a"][1, 2]),
    ("index-step", {"op": "index", "x": "a", "index": "[:, ::2]"}, lambda t: t["a"][:, ::2]),
    (
        "index-ellipsis-none",
        {"op": "index", "x": "b", "index": "[..., ::2, None]"},
        lambda t: t["b"][..., ::2, None],
    ),
    (
        "index-no-brackets",
        {"op": "index", "x": "b", "index": "-1, 1:"},
        lambda t: t["b"][-1, 1:],
    ),
    ("index-empty", {"op": "index", "x": "a", "index": "[]"}, lambda t: t["a"][()]),
    (
        "index-inline-x",
        {"op": "index", "x": [[1, 2], [3, 4]], "index": "[:, 0]"},
        lambda t: torch.tensor([[1, 2], [3, 4]])[:, 0],
    ),
    ("to-int", {"op": "to", "x": "a", "dtype": "int64"}, lambda t: t["a"].to(torch.int64)),
    ("to-float64", {"op": "to", "x": "i", "dtype": "float64"}, lambda t: t["i"].double()),
    ("to-bool", {"op": "to", "x": "a", "dtype": "bool"}, lambda t: t["a"].to(torch.bool)),
    ("to-half", {"op": "to", "x": "a", "dtype": "FP16"}, lambda t: t["a"].half()),
    ("to-bfloat16", {"op": "to", "x": "a", "dtype": "bfloat16"}, lambda t: t["a"].bfloat16()),
    # elementwise
    ("add", {"op": "add", "x": "a", "y": "p"}, lambda t: torch.add(t["a"], t["p"])),
    ("add-scalar", {"op": "add", "x": "a", "y": 1.5}, lambda t: t["a"] + 1.5),
    (
        "add-inline-broadcast",
        {"op": "add", "x": "a", "y": [[10.0], [20.0]]},
        lambda t: t["a"] + torch.tensor([[10.0], [20.0]]),
    ),
    ("add-broadcast-row", {"op": "add", "x": "a", "y": "v"}, lambda t: t["a"] + t["v"]),
    ("add-outer", {"op": "add", "x": "col", "y": "v"}, lambda t: t["col"] + t["v"]),
    (
        "add-alpha",
        {"op": "add", "x": "a", "y": "p", "alpha": 2},
        lambda t: torch.add(t["a"], t["p"], alpha=2),
    ),
    ("add-int", {"op": "add", "x": "i", "y": 1}, lambda t: t["i"] + 1),
    ("add-int-float-scalar", {"op": "add", "x": "i", "y": 0.5}, lambda t: t["i"] + 0.5),
    ("add-int-float-tensor", {"op": "add", "x": "i", "y": "a"}, lambda t: t["i"] + t["a"]),
    (
        "sub",
        {"op": "sub", "x": "a", "y": "p", "alpha": 0.5},
        lambda t: torch.sub(t["a"], t["p"], alpha=0.5),
    ),
    ("sub-scalar", {"op": "sub", "x": "a", "y": 1}, lambda t: t["a"] - 1),
    ("mul", {"op": "mul", "x": "a", "y": "v"}, lambda t: t["a"] * t["v"]),
    ("mul-scalar", {"op": "mul", "x": "a", "y": 2}, lambda t: t["a"] * 2),
    ("mul-int", {"op": "mul", "x": "i", "y": "i"}, lambda t: t["i"] * t["i"]),
    ("mul-bool", {"op": "mul", "x": "flag", "y": "v"}, lambda t: t["flag"] * t["v"]),
    ("div", {"op": "div", "x": "a", "y": "p"}, lambda t: t["a"] / t["p"]),
    ("div-int", {"op": "div", "x": "i", "y": 2}, lambda t: torch.div(t["i"], 2)),
    (
        "div-floor",
        {"op": "div", "x": "i", "y": 2, "rounding_mode": "floor"},
        lambda t: torch.div(t["i"], 2, rounding_mode="floor"),
    ),
    (
        "div-trunc",
        {"op": "div", "x": "i", "y": 2, "rounding_mode": "trunc"},
        lambda t: torch.div(t["i"], 2, rounding_mode="trunc"),
    ),
    ("div-by-zero", {"op": "div", "x": "a", "y": 0}, lambda t: t["a"] / 0),
    ("pow", {"op": "pow", "x": "a", "exponent": 2}, lambda t: torch.pow(t["a"], 2)),
    ("pow-float", {"op": "pow", "x": "p", "exponent": 0.5}, lambda t: torch.pow(t["p"], 0.5)),
    ("pow-tensor", {"op": "pow", "x": "p", "exponent": "w"}, lambda t: torch.pow(t["p"], t["w"])),
    (
        "pow-inline",
        {"op": "pow", "x": "p", "exponent": [2.0, 1.0, 0.0]},
        lambda t: torch.pow(t["p"], torch.tensor([2.0, 1.0, 0.0])),
    ),
    ("pow-int", {"op": "pow", "x": "i", "exponent": 2}, lambda t: torch.pow(t["i"], 2)),
    ("neg", {"op": "neg", "x": "a"}, lambda t: torch.neg(t["a"])),
    ("neg-int", {"op": "neg", "x": "i"}, lambda t: torch.neg(t["i"])),
    ("abs", {"op": "abs", "x": "a"}, lambda t: torch.abs(t["a"])),
    ("abs-int", {"op": "abs", "x": "i"}, lambda t: torch.abs(t["i"])),
    ("exp", {"op": "exp", "x": "a"}, lambda t: torch.exp(t["a"])),
    ("exp-int", {"op": "exp", "x": "i"}, lambda t: torch.exp(t["i"])),
    ("log", {"op": "log", "x": "p"}, lambda t: torch.log(t["p"])),
    ("log-nan", {"op": "log", "x": "a"}, lambda t: torch.log(t["a"])),
    (
        "log-zero",
        {"op": "log", "x": [0.0, 1.0]},
        lambda t: torch.log(torch.tensor([0.0, 1.0])),
    ),
    ("sqrt", {"op": "sqrt", "x": "p"}, lambda t: torch.sqrt(t["p"])),
    ("sqrt-int", {"op": "sqrt", "x": "i"}, lambda t: torch.sqrt(t["i"])),
    ("sin", {"op": "sin", "x": "a"}, lambda t: torch.sin(t["a"])),
    ("cos", {"op": "cos", "x": "a"}, lambda t: torch.cos(t["a"])),
    ("tanh", {"op": "tanh", "x": "a"}, lambda t: torch.tanh(t["a"])),
    ("sigmoid", {"op": "sigmoid", "x": "a"}, lambda t: torch.sigmoid(t["a"])),
    ("relu", {"op": "relu", "x": "a"}, lambda t: torch.relu(t["a"])),
    ("relu-int", {"op": "relu", "x": "i"}, lambda t: torch.relu(t["i"])),
    ("clamp-min", {"op": "clamp", "x": "a", "min": 0}, lambda t: torch.clamp(t["a"], min=0)),
    ("clamp-max", {"op": "clamp", "x": "a", "max": 1}, lambda t: torch.clamp(t["a"], max=1)),
    (
        "clamp-both",
        {"op": "clamp", "x": "a", "min": -1, "max": 1.5},
        lambda t: torch.clamp(t["a"], -1, 1.5),
    ),
    (
        "clamp-int",
        {"op": "clamp", "x": "i", "min": 0, "max": 5},
        lambda t: torch.clamp(t["i"], 0, 5),
    ),
    # reductions
    ("sum", {"op": "sum", "x": "a"}, lambda t: torch.sum(t["a"])),
    ("sum-dim", {"op": "sum", "x": "a", "dim": 0}, lambda t: torch.sum(t["a"], 0)),
    (
        "sum-keepdim",
        {"op": "sum", "x": "a", "dim": 1, "keepdim": True},
        lambda t: torch.sum(t["a"], 1, keepdim=True),
    ),
    (
        "sum-all-keepdim",
        {"op": "sum", "x": "b", "keepdim": True},
        lambda t: torch.sum(t["b"], dim=None, keepdim=True),
    ),
    (
        "sum-dims",
        {"op": "sum", "x": "b", "dim": [0, 2]},
        lambda t: torch.sum(t["b"], (0, 2)),
    ),
    ("sum-int", {"op": "sum", "x": "i"}, lambda t: torch.sum(t["i"])),
    ("sum-bool", {"op": "sum", "x": "flag"}, lambda t: torch.sum(t["flag"])),
    (
        "sum-dtype",
        {"op": "sum", "x": "a", "dtype": "float64"},
        lambda t: torch.sum(t["a"], dtype=torch.float64),
    ),
    ("mean", {"op": "mean", "x": "a"}, lambda t: torch.mean(t["a"])),
    ("mean-dim", {"op": "mean", "x": "a", "dim": 1}, lambda t: torch.mean(t["a"], 1)),
    (
        "mean-dims-keepdim",
        {"op": "mean", "x": "b", "dim": [0, 1], "keepdim": True},
        lambda t: torch.mean(t["b"], (0, 1), keepdim=True),
    ),
    (
        "mean-int-dtype",
        {"op": "mean", "x": "i", "dtype": "float64"},
        lambda t: torch.mean(t["i"], dtype=torch.float64),
    ),
    ("std", {"op": "std", "x": "a"}, lambda t: torch.std(t["a"])),
    ("std-dim", {"op": "std", "x": "a", "dim": 1}, lambda t: torch.std(t["a"], 1)),
    (
        "std-population",
        {"op": "std", "x": "a", "correction": 0},
        lambda t: torch.std(t["a"], correction=0),
    ),
    (
        "std-dims-keepdim",
        {"op": "std", "x": "b", "dim": [1, 2], "keepdim": True},
        lambda t: torch.std(t["b"], (1, 2), keepdim=True),
    ),
    (
        "std-all-keepdim",
        {"op": "std", "x": "a", "keepdim": True},
        lambda t: torch.std(t["a"], dim=None, keepdim=True),
    ),
    ("var", {"op": "var", "x": "a"}, lambda t: torch.var(t["a"])),
    ("var-dim", {"op": "var", "x": "a", "dim": 0}, lambda t: torch.var(t["a"], 0)),
    (
        "var-population",
        {"op": "var", "x": "b", "dim": -1, "correction": 0, "keepdim": True},
        lambda t: torch.var(t["b"], -1, correction=0, keepdim=True),
    ),
    ("max", {"op": "max", "x": "a"}, lambda t: torch.max(t["a"])),
    ("max-dim", {"op": "max", "x": "a", "dim": 1}, lambda t: torch.max(t["a"], 1)),
    (
        "max-dim-keepdim",
        {"op": "max", "x": "a", "dim": 0, "keepdim": True},
        lambda t: torch.max(t["a"], 0, keepdim=True),
    ),
    ("max-int", {"op": "max", "x": "i", "dim": -1}, lambda t: torch.max(t["i"], -1)),
    ("min", {"op": "min", "x": "a"}, lambda t: torch.min(t["a"])),
    ("min-dim", {"op": "min", "x": "a", "dim": 1}, lambda t: torch.min(t["a"], 1)),
    (
        "min-dim-keepdim",
        {"op": "min", "x": "b", "dim": 2, "keepdim": True},
        lambda t: torch.min(t["b"], 2, keepdim=True),
    ),
    ("argmax", {"op": "argmax", "x": "a"}, lambda t: torch.argmax(t["a"])),
    ("argmax-dim", {"op": "argmax", "x": "a", "dim": 1}, lambda t: torch.argmax(t["a"], 1)),
    (
        "argmax-keepdim",
        {"op": "argmax", "x": "a", "dim": 0, "keepdim": True},
        lambda t: torch.argmax(t["a"], 0, keepdim=True),
    ),
    ("argmin", {"op": "argmin", "x": "i"}, lambda t: torch.argmin(t["i"])),
    ("argmin-dim", {"op": "argmin", "x": "b", "dim": 2}, lambda t: torch.argmin(t["b"], 2)),
    ("norm", {"op": "norm", "x": "a"}, lambda t: torch.norm(t["a"])),
    ("norm-p1", {"op": "norm", "x": "a", "p": 1}, lambda t: torch.norm(t["a"], p=1)),
    ("norm-p3", {"op": "norm", "x": "v", "p": 3}, lambda t: torch.norm(t["v"], p=3)),
    ("norm-dim", {"op": "norm", "x": "a", "dim": 1}, lambda t: torch.norm(t["a"], dim=1)),
    ("norm-nuc", {"op": "norm", "x": "m", "p": "nuc"}, lambda t: torch.norm(t["m"], p="nuc")),
    (
        "norm-dims-keepdim",
        {"op": "norm", "x": "b", "dim": [1, 2], "keepdim": True},
        lambda t: torch.norm(t["b"], dim=(1, 2), keepdim=True),
    ),
    ("cumsum", {"op": "cumsum", "x": "a", "dim": 1}, lambda t: torch.cumsum(t["a"], 1)),
    ("cumsum-int", {"op": "cumsum", "x": "i", "dim": 0}, lambda t: torch.cumsum(t["i"], 0)),
    (
        "cumsum-dtype",
        {"op": "cumsum", "x": "i", "dim": -1, "dtype": "float32"},
        lambda t: torch.cumsum(t["i"], -1, dtype=torch.float32),
    ),
    ("softmax", {"op": "softmax", "x": "a", "dim": -1}, lambda t: torch.softmax(t["a"], -1)),
    ("softmax-dim0", {"op": "softmax", "x": "b", "dim": 0}, lambda t: torch.softmax(t["b"], 0)),
    (
        "softmax-dtype",
        {"op": "softmax", "x": "a", "dim": 1, "dtype": "float64"},
        lambda t: torch.softmax(t["a"], 1, dtype=torch.float64),
    ),
    # matmul
    ("matmul-1d", {"op": "matmul", "x": "v", "y": "w"}, lambda t: torch.matmul(t["v"], t["w"])),
    ("matmul-2d", {"op": "matmul", "x": "m", "y": "n"}, lambda t: torch.matmul(t["m"], t["n"])),
    (
        "matmul-1d-2d",
        {"op": "matmul", "x": "v", "y": "m"},
        lambda t: torch.matmul(t["v"], t["m"]),
    ),
    (
        "matmul-2d-inline-1d",
        {"op": "matmul", "x": "m", "y": [1.0, 0.0, -1.0, 2.0]},
        lambda t: torch.matmul(t["m"], torch.tensor([1.0, 0.0, -1.0, 2.0])),
    ),
    (
        "matmul-batched",
        {"op": "matmul", "x": "b", "y": "c"},
        lambda t: torch.matmul(t["b"], t["c"]),
    ),
    (
        "matmul-batch-broadcast",
        {"op": "matmul", "x": "b", "y": "n"},
        lambda t: torch.matmul(t["b"], t["n"]),
    ),
    (
        "matmul-int",
        {"op": "matmul", "x": "i", "y": [[1], [2], [3]]},
        lambda t: t["i"] @ torch.tensor([[1], [2], [3]]),
    ),
]


def expected_outputs(result: Any, out: str = "r") -> dict[str, torch.Tensor]:
    """Name each reference result as the service stores it."""
    if isinstance(result, torch.Tensor):
        return {out: result}
    if hasattr(result, "indices") and hasattr(result, "values"):
        return {out: result.values, f"{out}.indices": result.indices}
    assert isinstance(result, tuple)
    return {f"{out}.{i}": piece for i, piece in enumerate(result)}


def case_body(step: Mapping[str, Any]) -> dict[str, Any]:
    return {"inputs": INPUTS, "steps": [{**step, "out": "r"}]}


def test_every_schema_op_has_a_case() -> None:
    union = get_args(TensorStepUnion)[0]
    schema_ops = {get_args(model.model_fields["op"].annotation)[0] for model in get_args(union)}
    covered = {step["op"] for _, step, _ in OP_CASES} | {"rand", "randn", "randint", "info"}
    assert schema_ops == covered


@pytest.mark.parametrize(
    ("step", "reference"),
    [pytest.param(step, ref, id=name) for name, step, ref in OP_CASES],
)
def test_op_matches_torch(client: TestClient, step: dict[str, Any], reference: Ref) -> None:
    expected = expected_outputs(reference(torch_inputs()))
    result = run_ops(client, case_body(step))
    outputs = result["outputs"]
    assert set(outputs) == set(expected)  # the default return: everything the step stored
    for name, tensor in expected.items():
        assert_tensor(outputs[name], tensor)


@pytest.mark.parametrize(
    ("step", "reference"),
    [
        pytest.param(step, ref, id=name)
        for name, step, ref in OP_CASES
        if name in {"add-inline-broadcast", "max-dim", "to-bfloat16", "div-by-zero", "sum-int"}
    ],
)
def test_op_b64_encoding(client: TestClient, step: dict[str, Any], reference: Ref) -> None:
    expected = expected_outputs(reference(torch_inputs()))
    outputs = run_ops(client, case_body(step), encoding="b64")["outputs"]
    for name, tensor in expected.items():
        assert "b64" in outputs[name] and "data" not in outputs[name]
        assert_tensor(outputs[name], tensor)


def test_info_reports_layout(client: TestClient) -> None:
    body = {
        "inputs": {"b": INPUTS["b"], "col": INPUTS["col"]},
        "steps": [
            {"op": "info", "x": "b", "out": "plain"},
            {"op": "transpose", "x": "b", "dim0": 0, "dim1": 2, "out": "bt"},
            {"op": "info", "x": "bt", "out": "transposed"},
            {"op": "contiguous", "x": "bt", "out": "bc"},
            {"op": "info", "x": "bc", "out": "made_contiguous"},
            {"op": "expand", "x": "col", "size": [2, 5], "out": "ex"},
            {"op": "info", "x": "ex", "out": "expanded"},
            {"op": "index", "x": "b", "index": "[:, ::2]", "out": "sliced"},
            {"op": "info", "x": "sliced", "out": "sliced_info"},
            {"op": "to", "x": "b", "dtype": "float16", "out": "half"},
            {"op": "info", "x": "half", "out": "half_info"},
            {"op": "info", "x": 5.0, "out": "inline"},
        ],
        "return": [
            "plain",
            "transposed",
            "made_contiguous",
            "expanded",
            "sliced_info",
            "half_info",
        ],
    }
    out = run_ops(client, body)["outputs"]
    b = torch.tensor(INPUTS["b"])
    col = torch.tensor(INPUTS["col"])
    bt = b.transpose(0, 2)

    def info(t: torch.Tensor) -> dict[str, Any]:
        return {
            "shape": list(t.shape),
            "size": list(t.size()),
            "stride": list(t.stride()),
            "numel": t.numel(),
            "dtype": NAME_BY_DTYPE[t.dtype],
            "is_contiguous": t.is_contiguous(),
        }

    assert out["plain"] == info(b)
    assert out["transposed"] == info(bt)
    assert out["transposed"]["is_contiguous"] is False
    assert out["made_contiguous"] == info(bt.contiguous())
    assert out["made_contiguous"]["is_contiguous"] is True
    assert out["expanded"] == info(col.expand(2, 5))
    assert out["expanded"]["stride"][1] == 0
    assert out["sliced_info"] == info(b[:, ::2])
    assert out["half_info"] == info(b.half())


def test_info_is_the_default_return(client: TestClient) -> None:
    out = run_ops(client, {"steps": [{"op": "eye", "n": 3}, {"op": "info", "x": "out"}]})["outputs"]
    assert out == {
        "out": {
            "shape": [3, 3],
            "size": [3, 3],
            "stride": [3, 1],
            "numel": 9,
            "dtype": "float32",
            "is_contiguous": True,
        }
    }


def test_chained_program_and_overwritten_names(client: TestClient) -> None:
    """Names are rebound by later steps; split pieces are usable by name."""
    body = {
        "inputs": {"x": INPUTS["b"]},
        "steps": [
            {"op": "split", "x": "x", "split_size_or_sections": [1, 2], "dim": 1, "out": "s"},
            {"op": "matmul", "x": "s.1", "y": {"data": [1, 1, 1, 1], "dtype": "float32"}},
            {"op": "mul", "x": "out", "y": "out"},
            {"op": "max", "x": "out", "dim": -1, "out": "best"},
            {"op": "add", "x": "best.indices", "y": "best", "out": "mix"},
        ],
        "return": ["s.0", "out", "best", "best.indices", "mix"],
    }
    out = run_ops(client, body)["outputs"]
    x = torch.tensor(INPUTS["b"])
    pieces = torch.split(x, [1, 2], dim=1)
    y = torch.matmul(pieces[1], torch.ones(4))
    y = y * y
    best = torch.max(y, dim=-1)
    assert_tensor(out["s.0"], pieces[0])
    assert_tensor(out["out"], y)
    assert_tensor(out["best"], best.values)
    assert_tensor(out["best.indices"], best.indices)
    assert_tensor(out["mix"], best.indices + best.values)


def test_device_and_elapsed(client: TestClient) -> None:
    result = run_ops(client, {"device": "cpu", "steps": [{"op": "ones", "size": [2]}]})
    assert result["device"] == "cpu"
    assert isinstance(result["elapsed_ms"], float) and result["elapsed_ms"] >= 0


# --- random factories ------------------------------------------------------------------------


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


RANDOM_CASES: list[tuple[str, dict[str, Any], Callable[[torch.Generator], torch.Tensor]]] = [
    ("rand", {"op": "rand", "size": [3, 4]}, lambda g: torch.rand(3, 4, generator=g)),
    (
        "rand-float64",
        {"op": "rand", "size": [5], "dtype": "float64"},
        lambda g: torch.rand(5, generator=g, dtype=torch.float64),
    ),
    ("randn", {"op": "randn", "size": [2, 3, 2]}, lambda g: torch.randn(2, 3, 2, generator=g)),
    (
        "randn-float16",
        {"op": "randn", "size": [6], "dtype": "float16"},
        lambda g: torch.randn(6, generator=g, dtype=torch.float16),
    ),
    (
        "randint",
        {"op": "randint", "high": 10, "size": [4, 4]},
        lambda g: torch.randint(0, 10, (4, 4), generator=g),
    ),
    (
        "randint-low-dtype",
        {"op": "randint", "low": -5, "high": 5, "size": [7], "dtype": "int32"},
        lambda g: torch.randint(-5, 5, (7,), generator=g, dtype=torch.int32),
    ),
]


@pytest.mark.parametrize(
    ("step", "reference"), [pytest.param(s, r, id=n) for n, s, r in RANDOM_CASES]
)
def test_random_request_seed(
    client: TestClient, step: dict[str, Any], reference: Callable[[torch.Generator], torch.Tensor]
) -> None:
    body = {"seed": 1234, "steps": [step]}
    first = run_ops(client, body)["outputs"]
    second = run_ops(client, body)["outputs"]
    assert first == second
    assert_tensor(first["out"], reference(_gen(1234)))


@pytest.mark.parametrize(
    ("step", "reference"), [pytest.param(s, r, id=n) for n, s, r in RANDOM_CASES]
)
def test_random_step_seed(
    client: TestClient, step: dict[str, Any], reference: Callable[[torch.Generator], torch.Tensor]
) -> None:
    """A step's own seed wins over the request's, and over no seed at all."""
    with_request_seed = run_ops(client, {"seed": 1, "steps": [{**step, "seed": 99}]})["outputs"]
    without = run_ops(client, {"steps": [{**step, "seed": 99}]})["outputs"]
    assert with_request_seed == without
    assert_tensor(with_request_seed["out"], reference(_gen(99)))


def test_request_seed_is_one_stream_and_step_seeds_stand_apart(client: TestClient) -> None:
    body = {
        "seed": 7,
        "steps": [
            {"op": "rand", "size": [3], "out": "a"},
            {"op": "randn", "size": [2, 2], "seed": 11, "out": "b"},
            {"op": "randint", "low": 0, "high": 100, "size": [4], "out": "c"},
            {"op": "rand", "size": [3], "seed": 11, "out": "d"},
            {"op": "randn", "size": [3], "out": "e"},
        ],
        "return": ["a", "b", "c", "d", "e"],
    }
    out = run_ops(client, body)["outputs"]
    stream = _gen(7)
    assert_tensor(out["a"], torch.rand(3, generator=stream))
    assert_tensor(out["b"], torch.randn(2, 2, generator=_gen(11)))
    assert_tensor(out["c"], torch.randint(0, 100, (4,), generator=stream))
    assert_tensor(out["d"], torch.rand(3, generator=_gen(11)))
    assert_tensor(out["e"], torch.randn(3, generator=stream))
    # Two consecutive draws without a step seed differ (one stream, not a reseed per step).
    twice = {"seed": 7, "steps": [{"op": "rand", "size": [3]}] * 2}
    assert run_ops(client, twice)["outputs"]["out"] != out["a"]


def test_random_without_seed_differs(client: TestClient) -> None:
    body = {"steps": [{"op": "rand", "size": [16]}]}
    assert run_ops(client, body)["outputs"] != run_ops(client, body)["outputs"]


def test_different_seeds_differ(client: TestClient) -> None:
    one = run_ops(client, {"seed": 1, "steps": [{"op": "randn", "size": [16]}]})["outputs"]
    two = run_ops(client, {"seed": 2, "steps": [{"op": "randn", "size": [16]}]})["outputs"]
    assert one != two


# --- 3. errors and limits --------------------------------------------------------------------


def test_view_of_non_contiguous_is_torchs_error(client: TestClient) -> None:
    x = torch.tensor(INPUTS["a"]).t()
    with pytest.raises(RuntimeError) as torch_error:
        x.view(-1)
    steps: list[dict[str, Any]] = [
        {"op": "t", "x": "a", "out": "at"},
        {"op": "view", "x": "at", "shape": [-1], "out": "flat"},
    ]
    body = {"inputs": {"a": INPUTS["a"]}, "steps": steps}
    payload = assert_error(client, body, 422, "op_failed")
    assert str(torch_error.value) in payload["error"]
    assert payload["error"].startswith("step 1 (view)")
    assert payload["details"]["step"] == 1
    # reshape copies instead
    steps[1]["op"] = "reshape"
    assert_tensor(run_ops(client, body)["outputs"]["flat"], x.reshape(-1))
    assert_healthy(client)


@pytest.mark.parametrize(
    "step",
    [
        pytest.param({"op": "frobnicate", "x": "a"}, id="unknown-op"),
        pytest.param({"op": "__import__", "x": "a"}, id="dunder-op"),
        pytest.param({"x": "a"}, id="no-op"),
        pytest.param({"op": "neg", "x": "a", "bogus": 1}, id="unknown-field"),
        pytest.param({"op": "reshape", "x": "a"}, id="missing-field"),
        pytest.param({"op": "neg", "x": "a", "out": "1bad"}, id="bad-out-name"),
        pytest.param({"op": "zeros", "size": [-1]}, id="negative-size"),
        pytest.param({"op": "zeros", "size": [1] * 9}, id="nine-dims"),
        pytest.param({"op": "div", "x": "a", "y": 1, "rounding_mode": "round"}, id="bad-mode"),
        pytest.param({"op": "to", "x": "a", "dtype": "complex64"}, id="bad-dtype"),
    ],
)
def test_invalid_step_is_422(client: TestClient, step: dict[str, Any]) -> None:
    payload = assert_error(client, {"inputs": {"a": [1.0]}, "steps": [step]}, 422)
    assert payload["code"] == "validation_error"
    assert payload["details"]["errors"]


def test_empty_program_is_422(client: TestClient) -> None:
    assert_error(client, {"steps": []}, 422, "validation_error")


def test_unknown_name(client: TestClient) -> None:
    payload = assert_error(
        client,
        {"inputs": {"a": [1.0]}, "steps": [{"op": "add", "x": "a", "y": "nope"}]},
        422,
        "unknown_name",
    )
    assert payload["details"]["name"] == "nope"
    assert payload["details"]["known"] == ["a"]
    assert "nope" in payload["error"]


def test_unknown_name_in_tensors_list(client: TestClient) -> None:
    body = {"inputs": {"a": [1.0]}, "steps": [{"op": "cat", "tensors": ["a", "b"]}]}
    assert_error(client, body, 422, "unknown_name")


def test_name_used_before_it_is_defined(client: TestClient) -> None:
    body = {
        "steps": [
            {"op": "neg", "x": "later", "out": "early"},
            {"op": "ones", "size": [2], "out": "later"},
        ]
    }
    assert_error(client, body, 422, "unknown_name")


def test_return_of_unknown_name(client: TestClient) -> None:
    body = {"steps": [{"op": "ones", "size": [2], "out": "o"}], "return": ["o", "ghost"]}
    payload = assert_error(client, body, 422, "unknown_name")
    assert payload["details"]["unknown"] == ["ghost"]
    assert "o" in payload["details"]["known"]


def test_info_result_is_not_a_tensor(client: TestClient) -> None:
    body = {
        "steps": [
            {"op": "ones", "size": [2], "out": "o"},
            {"op": "info", "x": "o", "out": "meta"},
            {"op": "neg", "x": "meta"},
        ]
    }
    payload = assert_error(client, body, 422)
    assert "info" in payload["error"]


@pytest.mark.parametrize(
    "index",
    ["[::-1]", "[:, ::-2]", "[1:0:-1]"],
)
def test_negative_slice_step_is_invalid_index(client: TestClient, index: str) -> None:
    body = {"inputs": {"a": INPUTS["a"]}, "steps": [{"op": "index", "x": "a", "index": index}]}
    payload = assert_error(client, body, 422, "invalid_index")
    assert "flip" in payload["error"]


@pytest.mark.parametrize(
    "index",
    [
        "[1.5]",
        "[x]",
        "[__import__('os')]",
        "[1,,2]",
        "[[0, 1]]",
        "[1:2:3:4]",
        "[1",
        "1]",
        "[..., ...]",
        "[True]",
        "[::0]",
        "[0, 0, 0]",
        "[2]",
        "[-3]",
        "[:, 3]",
    ],
)
def test_bad_index_is_invalid_index(client: TestClient, index: str) -> None:
    body = {"inputs": {"a": INPUTS["a"]}, "steps": [{"op": "index", "x": "a", "index": index}]}
    assert_error(client, body, 422, "invalid_index")


@pytest.mark.parametrize(
    ("x", "y"),
    [
        pytest.param([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0]], id="2d-2d"),
        pytest.param([1.0, 2.0], [1.0, 2.0, 3.0], id="1d-1d"),
        pytest.param(
            [[[1.0, 2.0]], [[3.0, 4.0]]], [[[1.0]], [[2.0]], [[3.0]]], id="batch-mismatch"
        ),
        pytest.param(2.0, [1.0], id="0d"),
    ],
)
def test_matmul_shape_mismatch(client: TestClient, x: Any, y: Any) -> None:
    with pytest.raises(RuntimeError) as torch_error:
        torch.matmul(torch.tensor(x), torch.tensor(y))
    body = {"steps": [{"op": "tensor", "data": x, "out": "x"}, {"op": "matmul", "x": "x", "y": y}]}
    payload = assert_error(client, body, 422, "op_failed")
    # The refusal comes from the meta-device pass, whose wording may differ from the CPU
    # kernel's (e.g. "a and b must have same reduction dim" vs "mat1 and mat2 shapes cannot
    # be multiplied"), so only the step is checked here.
    assert torch_error.value is not None
    assert payload["error"].startswith("step 1 (matmul): ")
    assert payload["details"] == {"step": 1, "op": "matmul"}
    assert_healthy(client)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param(
            [{"op": "ones", "size": [2, 3]}, {"op": "add", "x": "out", "y": [1.0, 2.0]}],
            id="broadcast",
        ),
        pytest.param(
            [{"op": "ones", "size": [2, 3]}, {"op": "reshape", "x": "out", "shape": [4, -1]}],
            id="reshape",
        ),
        pytest.param(
            [{"op": "ones", "size": [2, 3]}, {"op": "cat", "tensors": ["out", [1.0]]}],
            id="cat",
        ),
        pytest.param(
            [{"op": "ones", "size": [2, 3]}, {"op": "stack", "tensors": ["out", [[1.0]]]}],
            id="stack",
        ),
        pytest.param(
            [{"op": "ones", "size": [2, 3]}, {"op": "permute", "x": "out", "dims": [0]}],
            id="permute",
        ),
        pytest.param(
            [{"op": "ones", "size": [2, 3]}, {"op": "transpose", "x": "out", "dim1": 5}],
            id="transpose-dim",
        ),
        pytest.param(
            [{"op": "ones", "size": [2, 3]}, {"op": "expand", "x": "out", "size": [4, 3]}],
            id="expand",
        ),
        pytest.param([{"op": "arange", "end": 4}, {"op": "mean", "x": "out"}], id="mean-of-int"),
        pytest.param(
            [{"op": "arange", "end": 4}, {"op": "pow", "x": "out", "exponent": -1}],
            id="int-negative-power",
        ),
        pytest.param(
            [
                {"op": "arange", "end": 4},
                {"op": "div", "x": "out", "y": 0, "rounding_mode": "floor"},
            ],
            id="int-division-by-zero",
        ),
        pytest.param(
            [{"op": "randint", "low": 5, "high": 5, "size": [2]}], id="randint-empty-range"
        ),
        pytest.param([{"op": "rand", "size": [2], "dtype": "int64"}], id="rand-int"),
        pytest.param([{"op": "zeros", "size": [0, 2**70]}], id="size-beyond-int64"),
    ],
)
def test_torch_refusals_are_422(client: TestClient, steps: list[dict[str, Any]]) -> None:
    assert_error(client, {"steps": steps}, 422)
    assert_healthy(client)


@pytest.mark.parametrize("end", ["inf", "-inf", "nan"])
def test_arange_non_finite_is_422(client: TestClient, end: str) -> None:
    payload = assert_error(client, {"steps": [{"op": "arange", "end": end}]}, 422)
    assert payload["code"] in {"invalid_input", "validation_error"}


def test_too_many_steps(client: TestClient, settings: Any) -> None:
    steps = [{"op": "ones", "size": [1]}] * (settings.limits.max_steps + 1)
    payload = assert_error(client, {"steps": steps}, 413)
    assert payload["details"]["limit"] == "max_steps"
    assert payload["details"]["allowed"] == settings.limits.max_steps
    assert payload["details"]["requested"] == settings.limits.max_steps + 1
    assert_healthy(client)
    # exactly at the limit is fine
    run_ops(client, {"steps": steps[: settings.limits.max_steps]})


def test_matmul_charges_the_copies_of_operands_it_broadcasts(
    client: TestClient, settings: Any
) -> None:
    """[n, 1, 1, k] @ [1, n, k, 1] is an n×n batch of dot products: n² + 2nk elements of
    operands and output, but torch copies each operand out to the n² batch first."""
    steps = [
        {"op": "ones", "size": [256, 1, 1, 256], "out": "x"},
        {"op": "ones", "size": [1, 256, 256, 1], "out": "y"},
        {"op": "matmul", "x": "x", "y": "y", "out": "o"},
    ]
    payload = assert_error(client, {"steps": steps}, 413, "elements_limit")
    assert payload["details"]["requested"] == 256 * 256 * 256
    assert settings.limits.max_elements < 256**3
    x = torch.randn(8, 1, 3, 5, generator=torch.Generator().manual_seed(0))
    y = torch.randn(1, 4, 5, 2, generator=torch.Generator().manual_seed(1))
    small = {
        "inputs": {"x": x.tolist(), "y": y.tolist()},
        "steps": [{"op": "matmul", "x": "x", "y": "y"}],
    }
    got = torch.tensor(run_ops(client, small)["outputs"]["out"]["data"])
    torch.testing.assert_close(got, torch.matmul(x, y))


def test_a_plan_of_many_pieces_is_made_off_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tiny body may ask for 300,000 pieces, each built by the plan: past INLINE_OBJECTS
    objects, a plan begun on the event loop is made again in a thread."""
    on_loop: list[bool] = []
    chunk = OPS["chunk"]

    def watched(args: Any, ctx: Any) -> Any:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        return chunk(args, ctx)

    monkeypatch.setitem(OPS, "chunk", watched)
    for chunks, planned_on_loop in ((3, True), (INLINE_OBJECTS + 1, False)):
        on_loop.clear()
        steps = [
            {"op": "zeros", "size": [0], "out": "x"},
            {"op": "chunk", "x": "x", "chunks": chunks, "out": "p"},
        ]
        answer = run_ops(client, {"steps": steps})
        assert len(answer["outputs"]) == chunks
        assert on_loop[0] is planned_on_loop
    assert on_loop == [False]  # the real pass of many pieces: in a worker process


def test_one_input_too_many_is_refused_before_any_is_decoded(client: TestClient) -> None:
    inputs = {f"a{i}": [i] for i in range(MAX_TENSORS + 1)}
    payload = assert_error(client, {"inputs": inputs, "steps": [{"op": "clone", "x": "a0"}]}, 422)
    assert payload["code"] == "validation_error"
    assert payload["details"]["errors"][0]["type"] == "too_long"
    del inputs[f"a{MAX_TENSORS}"]
    answer = run_ops(client, {"inputs": inputs, "steps": [{"op": "clone", "x": "a7"}]})
    assert answer["outputs"]["out"]["data"] == [7]


def test_zeros_over_the_element_limit_is_refused_fast(client: TestClient, settings: Any) -> None:
    start = time.perf_counter()
    payload = assert_error(client, {"steps": [{"op": "zeros", "size": [1000000, 1000000]}]}, 413)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, elapsed
    assert payload["details"]["limit"] == "max_elements"
    assert payload["details"]["requested"] == 10**12
    assert payload["details"]["allowed"] == settings.limits.max_elements
    assert_healthy(client)


LIMIT_CASES = [
    pytest.param(
        [
            {"op": "zeros", "size": [100000, 1], "out": "x"},
            {"op": "zeros", "size": [1, 100000], "out": "y"},
            {"op": "add", "x": "x", "y": "y"},
        ],
        "max_elements",
        10**10,
        id="broadcast-add",
    ),
    pytest.param(
        [{"op": "ones", "size": [1, 1]}, {"op": "expand", "x": "out", "size": [10**5, 10**5]}],
        "max_elements",
        10**10,
        id="expand",
    ),
    pytest.param(
        [{"op": "ones", "size": [1, 1]}, {"op": "expand", "x": "out", "size": [10**5, -1, 10**5]}],
        "max_elements",
        10**10,
        id="expand-new-dim",
    ),
    pytest.param(
        [{"op": "ones", "size": [10, 10]}, {"op": "repeat", "x": "out", "repeats": [10**4, 10**4]}],
        "max_elements",
        10**10,
        id="repeat",
    ),
    pytest.param(
        [{"op": "ones", "size": [2]}, {"op": "repeat", "x": "out", "repeats": [10**5, 10**5, 1]}],
        "max_elements",
        2 * 10**10,
        id="repeat-new-dims",
    ),
    pytest.param(
        [
            {"op": "randn", "size": [2000, 2000], "out": "x"},
            {"op": "randn", "size": [2000, 2000], "out": "y"},
            {"op": "matmul", "x": "x", "y": "y"},
        ],
        "max_flops",
        None,
        id="matmul-flops",
    ),
    pytest.param(
        [
            {"op": "randn", "size": [64, 2000, 8], "out": "x"},
            {"op": "randn", "size": [8, 2000], "out": "y"},
            {"op": "matmul", "x": "x", "y": "y"},
        ],
        "max_elements",
        64 * 2000 * 2000,
        id="matmul-output",
    ),
    pytest.param([{"op": "eye", "n": 10**6}], "max_elements", 10**12, id="eye"),
    pytest.param([{"op": "arange", "end": 10**12}], "max_elements", 10**12, id="arange"),
    pytest.param(
        [{"op": "linspace", "start": 0, "end": 1, "steps": 10**9}],
        "max_elements",
        10**9,
        id="linspace",
    ),
    pytest.param(
        [{"op": "full", "size": [10**6, 10**6], "fill_value": 1}],
        "max_elements",
        10**12,
        id="full",
    ),
    pytest.param([{"op": "rand", "size": [10**6, 10**6]}], "max_elements", 10**12, id="rand"),
    pytest.param(
        [{"op": "randint", "high": 3, "size": [10**6, 10**6]}],
        "max_elements",
        10**12,
        id="randint",
    ),
    pytest.param(
        [{"op": "ones", "size": [2048, 2048], "out": f"t{i}"} for i in range(5)],
        "max_total_elements",
        None,
        id="total-elements",
    ),
]


@pytest.mark.parametrize(("steps", "limit", "requested"), LIMIT_CASES)
def test_limits_are_413_and_fast(
    client: TestClient,
    settings: Any,
    steps: list[dict[str, Any]],
    limit: str,
    requested: int | None,
) -> None:
    start = time.perf_counter()
    payload = assert_error(client, {"steps": steps}, 413)
    elapsed = time.perf_counter() - start
    assert elapsed < 1.0, elapsed
    assert payload["details"]["limit"] == limit
    assert payload["details"]["allowed"] == getattr(settings.limits, limit)
    if requested is not None:
        assert payload["details"]["requested"] == requested
    assert payload["details"]["requested"] > payload["details"]["allowed"]
    assert payload["details"]["step"] == len(steps) - 1
    assert payload["error"].startswith(f"step {len(steps) - 1} ")
    assert_healthy(client)


def test_matmul_flop_estimate(client: TestClient, settings: Any) -> None:
    """2·m·k·n of [2000, 2000] @ [2000, 2000] is over the fixture's limit; each operand fits."""
    m = k = n = 2000
    assert m * k <= settings.limits.max_elements
    assert 2 * m * k * n > settings.limits.max_flops
    payload = assert_error(client, {"steps": LIMIT_CASES[5].values[0]}, 413)
    assert payload["code"] == "flops_limit"
    # The estimate is the product's, plus at most a few FLOPs per element of the factories.
    assert 2 * m * k * n <= payload["details"]["requested"] <= 2 * m * k * n + 10 * m * k


@pytest.mark.parametrize(
    "step",
    [
        pytest.param({"op": "zeros", "size": [2**62]}, id="zeros"),
        pytest.param({"op": "eye", "n": 10**18}, id="eye"),
        pytest.param({"op": "arange", "end": 1e300}, id="arange"),
    ],
)
def test_astronomical_sizes_are_413(client: TestClient, step: dict[str, Any]) -> None:
    payload = assert_error(client, {"steps": [step]}, 413)
    assert payload["details"]["limit"] == "max_elements"
    assert payload["details"]["requested"] > payload["details"]["allowed"]
    assert_healthy(client)


# --- 4. index parser against torch and numpy -------------------------------------------------


@st.composite
def shapes_and_indices(draw: st.DrawFn) -> tuple[list[int], tuple[IndexItem, ...]]:
    """A shape of 1–4 dims and a basic index for it (positive steps, ints maybe out of range)."""
    shape = draw(st.lists(st.integers(0, 5), min_size=1, max_size=4))
    ndim = len(shape)
    consuming = draw(st.integers(0, ndim))
    ellipsis_at = draw(st.none() | st.integers(0, consuming))
    items: list[IndexItem] = []
    for position in range(consuming):
        dim = (
            position
            if ellipsis_at is None or position < ellipsis_at
            else ndim - consuming + position
        )
        size = shape[dim]
        bound = st.none() | st.integers(-size - 3, size + 3)
        if draw(st.booleans()):
            items.append(draw(st.integers(-size - 1, size)))
        else:
            step = draw(st.none() | st.integers(1, 4))
            items.append(slice(draw(bound), draw(bound), step))
    if ellipsis_at is not None:
        items.insert(ellipsis_at, Ellipsis)
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), None)
    return shape, tuple(items)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=shapes_and_indices(), brackets=st.booleans())
def test_index_matches_torch_and_numpy(
    client: TestClient, case: tuple[list[int], tuple[IndexItem, ...]], brackets: bool
) -> None:
    shape, index = case
    text = format_index(index)
    if not brackets:
        text = text[1:-1]
    numel = math.prod(shape)
    body = {
        "inputs": {"x": {"data": list(range(numel)), "shape": shape, "dtype": "int64"}},
        "steps": [{"op": "index", "x": "x", "index": text, "out": "r"}],
    }
    x = torch.arange(numel).reshape(shape)
    try:
        expected = x[index]
    except IndexError:
        with pytest.raises(IndexError):
            np.arange(numel).reshape(shape)[index]
        event("torch refuses the index")
        assert_error(client, body, 422, "invalid_index")
        return
    event("torch accepts the index")
    numpy_result = np.arange(numel).reshape(shape)[index]
    assert np.array_equal(expected.numpy(), numpy_result)
    assert list(expected.shape) == list(np.shape(numpy_result))
    out = run_ops(client, body)["outputs"]
    assert_tensor(out["r"], expected)


def test_non_finite_scalars_are_written_as_strings(client: TestClient) -> None:
    steps = [
        {"op": "ones", "size": [3], "out": "x"},
        {"op": "mul", "x": "x", "y": "Infinity", "out": "a"},
        {"op": "add", "x": "x", "y": "NaN", "out": "b"},
        {"op": "pow", "x": "x", "exponent": "-Infinity", "out": "c"},
    ]
    body = client.post("/tensor/ops", json={"steps": steps, "return": ["a", "b", "c"]}).json()
    x = torch.ones(3)
    for name, expected in (
        ("a", x * math.inf),
        ("b", x + math.nan),
        ("c", torch.pow(x, -math.inf)),
    ):
        out = body["outputs"][name]["data"]
        got = torch.tensor(
            [
                {"NaN": math.nan, "Infinity": math.inf}.get(v, v) if isinstance(v, str) else v
                for v in out
            ]
        )
        torch.testing.assert_close(got, expected, equal_nan=True)


def test_inline_tensors_count_toward_the_total_element_limit(settings: Any) -> None:
    app = create_app(make_settings(max_elements=1000, max_total_elements=1500))
    with TestClient(app) as small:
        inline = {"data": [0.0] * 1000, "shape": [1000]}
        steps = [{"op": "add", "x": inline, "y": inline}]
        response = small.post("/tensor/ops", json={"steps": steps})
    assert response.status_code == 413, response.text
    assert response.json()["details"]["limit"] == "max_total_elements"


@pytest.mark.parametrize("text", ["NaN", "Infinity", "-Infinity"])
def test_a_bare_non_finite_string_is_a_0d_tensor(client: TestClient, text: str) -> None:
    body = client.post("/tensor/ops", json={"steps": [{"op": "clone", "x": text}]}).json()
    assert body["outputs"]["out"] == {"shape": [], "dtype": "float32", "data": text}


# --- 5. every step charged by what it really does ------------------------------------------

# A calibrated CPU: float16 matrix multiplies 100 times slower than float32 ones.
CALIBRATION = {"cpu/float32": 1e11, "cpu/float16": 1e9, "cpu/elements": 1e9}


@pytest.fixture(scope="module")
def calibrated() -> Iterator[TestClient]:
    """An app with fixed device rates, the default time limit and room for many 4096²
    tensors (so that time, not elements, is the limit reached)."""
    settings = make_settings(
        device="cpu",
        calibration=CALIBRATION,
        request_timeout_s=30.0,
        max_elements=1 << 24,
        max_total_elements=1 << 30,
        max_flops=2e12,
        isolate=False,  # every refusal here is the plan's, made before any worker is used
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as app:
        yield app


def refused_fast(
    client: TestClient, body: Mapping[str, Any], status: int, code: str
) -> dict[str, Any]:
    start = time.perf_counter()
    payload = assert_error(client, body, status, code)
    assert time.perf_counter() - start < 1.0
    assert_healthy(client)
    return payload


@pytest.mark.parametrize(
    "step",
    [
        pytest.param({"op": "split", "x": "z", "split_size_or_sections": 1}, id="split"),
        pytest.param({"op": "chunk", "x": "z", "chunks": 4_000_000}, id="chunk"),
        pytest.param({"op": "chunk", "x": "e", "chunks": 2**62}, id="chunk-of-empty"),
    ],
)
def test_millions_of_pieces_are_refused_before_they_are_built(
    client: TestClient, settings: Any, step: dict[str, Any]
) -> None:
    """``split`` of zeros [4000000] into pieces of 1 once took 24 s and 2.9 GB."""
    body = {
        "steps": [
            {"op": "zeros", "size": [4_000_000], "out": "z"},
            {"op": "zeros", "size": [0], "out": "e"},
            step,
        ],
        "return": ["e"],
    }
    payload = refused_fast(client, body, 413, "objects_limit")
    assert payload["details"]["limit"] == "max_objects"
    assert payload["details"]["allowed"] == settings.limits.max_objects
    assert payload["details"]["step"] == 2


def test_pieces_under_the_limits_are_returned(client: TestClient) -> None:
    body = {
        "steps": [
            {"op": "arange", "end": 5000, "out": "z"},
            {"op": "split", "x": "z", "split_size_or_sections": 1, "out": "p"},
        ]
    }
    outputs = run_ops(client, body)["outputs"]
    assert len(outputs) == 5000
    assert outputs["p.4999"] == {"shape": [1], "dtype": "int64", "data": [4999]}


def test_a_ninth_dimension_is_422_at_any_step(client: TestClient) -> None:
    unsqueeze = {"op": "unsqueeze", "x": "a", "dim": 0, "out": "a"}
    steps = [{"op": "zeros", "size": [1], "out": "a"}] + [unsqueeze] * 31
    payload = refused_fast(client, {"steps": steps}, 422, "too_many_dims")
    assert payload["details"] == {"ndim": 9, "max_ndim": 8, "step": 8}
    out = run_ops(client, {"steps": steps[:8]})["outputs"]["a"]
    assert out["shape"] == [1] * 8


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([{"op": "zeros", "size": [0, 2**40]}], id="zeros"),
        pytest.param([{"op": "eye", "n": 0, "m": 2**63 - 1}], id="eye"),
        pytest.param(
            [
                {"op": "zeros", "size": [0], "out": "e"},
                {"op": "view", "x": "e", "shape": [0, 2**62]},
            ],
            id="view",
        ),
        pytest.param(
            [
                {"op": "zeros", "size": [0], "out": "e"},
                {"op": "reshape", "x": "e", "shape": [2**62, 0]},
            ],
            id="reshape",
        ),
        pytest.param(
            [
                {"op": "zeros", "size": [0, 1], "out": "e"},
                {"op": "expand", "x": "e", "size": [0, 2**62]},
            ],
            id="expand",
        ),
        pytest.param(
            [
                {"op": "zeros", "size": [0, 1], "out": "e"},
                {"op": "repeat", "x": "e", "repeats": [1, 2**62]},
            ],
            id="repeat",
        ),
    ],
)
def test_empty_tensors_with_astronomical_dimensions_are_413(
    client: TestClient, steps: list[dict[str, Any]]
) -> None:
    """Each of these once answered 500 (numpy could not hold the empty array)."""
    payload = refused_fast(client, {"steps": steps}, 413, "elements_limit")
    assert payload["details"]["limit"] == "max_elements"
    assert payload["details"]["requested"] > payload["details"]["allowed"]


def _square_matmul(side: int, dtype: str) -> dict[str, Any]:
    return {
        "steps": [
            {"op": "zeros", "size": [side, side], "dtype": dtype, "out": "a"},
            {"op": "matmul", "x": "a", "y": "a", "out": "p"},
            {"op": "sum", "x": "p", "out": "s"},
        ],
        "return": ["s"],
    }


def test_a_float16_matmul_is_predicted_at_the_float16_rate(calibrated: TestClient) -> None:
    """4096³ in float16 at 1 GFLOP/s is 137 s: refused in milliseconds, not run for minutes."""
    payload = refused_fast(calibrated, _square_matmul(4096, "float16"), 413, "over_time_budget")
    assert payload["details"]["limit"] == "request_timeout_s"
    assert payload["details"]["allowed"] == 30.0
    assert payload["details"]["requested"] == pytest.approx(2 * 4096**3 / 1e9, rel=0.01)
    assert payload["details"]["step"] == 1
    # A float32 product is planned at its own rate and runs.
    out = run_ops(calibrated, _square_matmul(512, "float32"))["outputs"]["s"]
    assert out == {"shape": [], "dtype": "float32", "data": 0.0}


def test_element_passes_count_toward_the_time_limit(calibrated: TestClient) -> None:
    """16.7M float16 elements through pow are 1 s each on the calibrated CPU: 31 of them are
    refused, a few run."""
    pow_step = {"op": "pow", "x": "x", "exponent": 2.0, "out": "y"}
    steps = [{"op": "ones", "size": [4096, 4096], "dtype": "float16", "out": "x"}] + [pow_step] * 31
    payload = refused_fast(calibrated, {"steps": steps, "return": ["x"]}, 413, "over_time_budget")
    assert payload["details"]["limit"] == "request_timeout_s"
    small = [{"op": "ones", "size": [64, 64], "dtype": "float16", "out": "x"}, pow_step]
    assert run_ops(calibrated, {"steps": small})["outputs"]["y"]["shape"] == [64, 64]


def test_a_nuclear_norm_is_charged_its_singular_value_decomposition(
    calibrated: TestClient,
) -> None:
    """``norm(p="nuc")`` runs an SVD, O(m·n·min(m, n)): a 4096² one took 8 to 30 s on 2
    cores where it was charged as 32 passes over its elements."""
    steps = [
        {"op": "rand", "size": [4096, 4096], "out": "x"},
        {"op": "norm", "x": "x", "p": "nuc"},
    ]
    response = calibrated.post("/tensor/ops", json={"steps": steps})
    assert response.status_code == 413, response.text
    assert response.json()["details"]["limit"] in {"max_flops", "request_timeout_s"}
    frobenius = calibrated.post("/tensor/ops", json={"steps": [steps[0], {**steps[1], "p": "fro"}]})
    assert frobenius.status_code == 200, frobenius.text
    x = torch.randn(6, 5, 4, generator=torch.Generator().manual_seed(0))
    small = {
        "inputs": {"x": x.tolist()},
        "steps": [{"op": "norm", "x": "x", "p": "nuc", "dim": [1, 2]}],
    }
    got = torch.tensor(run_ops(calibrated, small)["outputs"]["out"]["data"])
    torch.testing.assert_close(got, torch.norm(x, p="nuc", dim=(1, 2)))


def test_an_empty_tensor_of_many_rows_is_charged_the_lists_json_writes(
    client: TestClient, settings: Any
) -> None:
    """[2**22, 0] has no element, but its JSON is 2**22 empty lists, made one by one (100 MB
    of ``[]`` for [2**25, 0] took orjson 2.8 s and 3 GB, on the event loop: no element, so
    the work looked tiny)."""
    rows = settings.limits.max_objects + 1
    steps = [{"op": "zeros", "size": [rows, 0]}]
    payload = assert_error(client, {"steps": steps}, 413, "objects_limit")
    assert payload["details"]["requested"] >= rows
    answer = run_ops(client, {"steps": [{"op": "zeros", "size": [3, 0]}]})
    assert answer["outputs"]["out"]["data"] == [[], [], []]


def test_a_thin_integer_matmul_is_charged_its_reads(calibrated: TestClient) -> None:
    """Integers are multiplied without BLAS, and a matrix by a vector is bound by its reads:
    an int64 [4096, 4096] @ [4096, 1] took 359 ms where its FLOPs at the (square) int64
    rate predicted 2 ms, and 61 of them ran to the 504."""
    steps = [
        {"op": "ones", "size": [4096, 4096], "dtype": "int64", "out": "x"},
        {"op": "ones", "size": [4096, 1], "dtype": "int64", "out": "y"},
        *[{"op": "matmul", "x": "x", "y": "y", "out": "z"}] * 20,
    ]
    response = calibrated.post("/tensor/ops", json={"steps": steps})
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "over_time_budget"
    floats = [{**step, "dtype": "float32"} if "dtype" in step else step for step in steps]
    assert calibrated.post("/tensor/ops", json={"steps": floats[:8]}).status_code == 200
    x = torch.arange(12).reshape(4, 3)
    small = {
        "inputs": {"x": x.tolist(), "y": [[1], [2], [3]]},
        "steps": [{"op": "matmul", "x": "x", "y": "y"}],
    }
    got = run_ops(calibrated, small)["outputs"]["out"]["data"]
    assert got == (x @ torch.tensor([[1], [2], [3]])).tolist()
