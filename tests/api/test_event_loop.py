"""What runs on the event loop: small plans and tiny work, bounded in time as well as in
size; and what threads do at once there (the parsing of long expressions)."""

from __future__ import annotations

import ast
import asyncio
import base64
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from service.api import compute
from service.api.compute import LOOP_PLAN_SECONDS
from service.config import Limits
from service.device import DeviceManager
from service.ops.autograd.parse import parse_expression
from service.ops.tensors.table import OPS
from service.ops.vision import handlers
from tests.conftest import ops


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_a_plan_slow_on_the_event_loop_is_made_again_in_a_thread(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each step of a small body may be slow to plan (torch's meta floor division is Python
    code, milliseconds a step): past LOOP_PLAN_SECONDS the plan goes to a thread."""
    calls: list[tuple[bool, bool]] = []  # (on the event loop, planning on meta)
    clone = OPS["clone"]

    def slow_to_plan(args: Any, ctx: Any) -> Any:
        calls.append((_on_loop(), ctx.is_meta))
        if ctx.is_meta and _on_loop():
            time.sleep(2 * LOOP_PLAN_SECONDS)
        return clone(args, ctx)

    monkeypatch.setitem(OPS, "clone", slow_to_plan)
    steps = [{"op": "arange", "end": 7, "out": "x"}]
    steps += [{"op": "clone", "x": "x", "out": f"c{i}"} for i in range(20)]
    answer = ops(client, {"steps": steps, "return": ["c19"]})
    assert answer["outputs"]["c19"]["data"] == list(range(7))
    planned = [on_loop for on_loop, meta in calls if meta]
    assert planned[0] is True  # begun on the loop
    assert planned.count(True) == 1  # then made again, whole, in a thread
    assert len(planned) == 1 + 20

    calls.clear()

    def quick(args: Any, ctx: Any) -> Any:
        calls.append((_on_loop(), ctx.is_meta))
        return clone(args, ctx)

    monkeypatch.setitem(OPS, "clone", quick)
    ops(client, {"steps": steps[:3], "return": ["c1"]})
    assert calls[:2] == [(True, True), (True, True)]  # a quick plan stays on the loop


def test_work_predicted_over_a_millisecond_is_not_run_on_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hessian of 14 scalars through 1,000 syntax nodes is tiny by its elements, FLOPs and
    objects, and is predicted at about 0.3 s: it held the event loop for 140 to 240 ms."""
    inline: list[str] = []
    run_inline = DeviceManager.run_inline

    def watched(self: DeviceManager, fn: Any, arg: Any, **kwargs: Any) -> Any:
        inline.append("inline")
        return run_inline(self, fn, arg, **kwargs)

    monkeypatch.setattr(DeviceManager, "run_inline", watched)
    names = [f"v{i}" for i in range(14)]
    terms = [f"pow({names[i % 14]},{names[(i * 5 + 3) % 14]})" for i in range(40)]
    body = {
        "expression": "+".join(terms),
        "inputs": {n: {"data": 0.5 + i / 100, "dtype": "float64"} for i, n in enumerate(names)},
        "hessian": True,
    }
    response = client.post("/grad", json=body)
    assert response.status_code == 200, response.text
    assert inline == []
    leaves = {n: torch.tensor(0.5 + i / 100, dtype=torch.float64) for i, n in enumerate(names)}

    def value(*xs: torch.Tensor) -> torch.Tensor:
        env = dict(zip(names, xs, strict=True))
        return sum(env[names[i % 14]] ** env[names[(i * 5 + 3) % 14]] for i in range(40))

    expected = torch.autograd.functional.hessian(value, tuple(leaves.values()))
    got = response.json()["hessians"]["v3"]["v0"]["data"]
    assert got == pytest.approx(float(expected[3][0]), rel=1e-9)

    tiny = {"expression": "x * x", "inputs": {"x": {"data": 3.0}}}
    assert client.post("/grad", json=tiny).json()["grads"]["x"]["data"] == 6.0
    assert inline == ["inline"]


def test_long_expressions_are_parsed_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """CPython 3.11's parser keeps its recursion depth in state the threads share: two long
    expressions parsed in threads at once failed with a SystemError (a 500)."""
    parse = ast.parse
    inside = 0
    most = 0
    guard = threading.Lock()

    def watched(*args: Any, **kwargs: Any) -> Any:
        nonlocal inside, most
        with guard:
            inside += 1
            most = max(most, inside)
        time.sleep(0.002)
        try:
            return parse(*args, **kwargs)
        finally:
            with guard:
                inside -= 1

    monkeypatch.setattr(ast, "parse", watched)
    text = "+".join(f"pow(x,{1 + i % 3})" for i in range(60))
    with ThreadPoolExecutor(8) as pool:
        parsed = list(pool.map(lambda _: parse_expression(text, ["x"], limits=Limits()), range(32)))
    assert most == 1
    assert all(p.nodes == parsed[0].nodes for p in parsed)


def test_a_plan_that_builds_a_large_tensor_is_made_off_the_event_loop(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A /conv body of a few hundred bytes asks for 64 random kernels of 63×63 over 132
    channels: a weight of 33 million values, drawn while planning (0.3 to 1 s)."""
    built: list[tuple[bool, int]] = []
    build = handlers.build_weight

    def watched(*args: Any, **kwargs: Any) -> Any:
        weight = build(*args, **kwargs)
        built.append((_on_loop(), weight.weight.numel()))
        return weight

    monkeypatch.setattr(handlers, "build_weight", watched)
    # The size decides here, not the time: a small plan that overran LOOP_PLAN_SECONDS on a
    # loaded machine went to a thread too (that path has its own test, above).
    monkeypatch.setattr(compute, "LOOP_PLAN_SECONDS", 10.0)
    small = {"input": [[[0.5] * 3] * 3] * 2, "kernels": ["random", "box"], "kernel_size": 3}
    assert client.post("/conv", json=small).status_code == 200
    wide = {
        "input": [[[0.5]]] * 64,
        "kernels": ["random"] * 64,
        "kernel_size": 17,
        "padding": 8,
        "seed": 3,
    }
    answer = client.post("/conv", json=wide, params={"encoding": "b64"})
    assert answer.status_code == 200, answer.text
    assert built[0] == (True, 2 * 2 * 9)  # a small weight: planned on the loop
    assert built[1:] == [(False, 64 * 64 * 17 * 17)]  # over LOOP_PLAN_ELEMENTS: in a thread
    weight = answer.json()["weight"]
    torch.manual_seed(3)
    expected = torch.nn.Conv2d(64, 64, 17, padding=8).weight.detach()
    got = np.frombuffer(base64.b64decode(weight["b64"]), dtype=np.float32).reshape(expected.shape)
    np.testing.assert_array_equal(got, expected.numpy())
