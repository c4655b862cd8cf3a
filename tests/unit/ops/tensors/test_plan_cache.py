"""Plans kept for programs planned before (:class:`~service.ops.tensors.program.PlanCache`):
a kept plan charges what planning would, and nothing planning depends on is left out of
its key (a small program's plan must never let a large one in)."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.calibration import Throughput
from service.errors import InvalidInput, LimitExceeded
from service.limits import Budget
from service.main import create_app
from service.ops.tensors.program import KEY_ROOM, PlanCache, plan_program
from tests.api.test_tensor_ops import INPUTS, OP_CASES
from tests.conftest import make_settings, ops
from tests.unit.ops.tensors.test_program import compile_program

RATES = Throughput("cpu", {"float32": 1e10}, 1e9)


def budget(max_elements: int = 1 << 24, max_flops: float = 1e12) -> Budget:
    return Budget(max_elements, 1 << 26, max_flops, throughput=RATES, max_seconds=30.0)


def plan(body: dict[str, Any], plans: PlanCache | None, charged: Budget) -> list[str]:
    inputs, steps = compile_program(body)
    return plan_program(inputs, steps, body.get("return"), charged, plans)


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"inputs": INPUTS, "steps": [{**step, "out": "r"}]}, id=name)
        for name, step, _ in OP_CASES
    ],
)
def test_a_kept_plan_charges_what_planning_charges(body: dict[str, Any]) -> None:
    plans = PlanCache()
    planned, fresh = budget(), budget()
    names = plan(body, None, fresh)
    assert plan(body, plans, planned) == names  # planned, and kept
    kept = budget()
    assert plan(body, plans, kept) == names  # the kept plan
    assert len(plans._plans) == 1
    assert planned.charged() == fresh.charged() == kept.charged()


def matmul(rows: int) -> dict[str, Any]:
    return {
        "inputs": {"a": {"shape": [rows, 64], "dtype": "float32", "data": [0.0] * (rows * 64)}},
        "steps": [{"op": "matmul", "x": "a", "y": {"shape": [64, 64], "data": [1.0] * 4096}}],
    }


def test_inputs_of_another_shape_are_planned_and_charged_anew() -> None:
    plans = PlanCache()
    small, large = budget(max_flops=2e6), budget(max_flops=2e6)
    plan(matmul(2), plans, small)  # 2·2·64·64 flops: fits
    with pytest.raises(LimitExceeded) as refused:  # 2·300·64·64 flops: over the limit
        plan(matmul(300), plans, large)
    assert refused.value.details["limit"] == "max_flops"
    assert large.flops > small.flops


def test_the_same_program_under_other_limits_is_planned_anew() -> None:
    plans = PlanCache()
    program = {"steps": [{"op": "zeros", "size": [100, 100]}]}
    plan(program, plans, budget())
    with pytest.raises(LimitExceeded):
        plan(program, plans, budget(max_elements=1000))


def test_what_was_charged_before_is_part_of_the_key() -> None:
    plans = PlanCache()
    program = {"steps": [{"op": "zeros", "size": [100]}]}
    fresh = budget()
    plan(program, plans, fresh)
    charged_before = budget()
    charged_before.charge_tensor(1000, "an input")
    plan(program, plans, charged_before)
    assert charged_before.elements == fresh.elements + 1000


def test_numbers_of_another_type_are_another_program() -> None:
    plans = PlanCache()
    for end in (4, 4.0, 0, 0.0, -0.0):  # as the interpreter takes them (the schema's are ints)
        step = {"op": "arange", "start": 0, "end": end, "step": 1, "dtype": None, "out": "r"}
        plan_program({}, [step], None, budget(), plans)
    assert len(plans._plans) == 5


def test_a_refused_program_is_not_kept_and_is_refused_again() -> None:
    plans = PlanCache()
    program = {"steps": [{"op": "zeros", "size": [1 << 13, 1 << 13]}]}
    for _ in range(2):
        with pytest.raises(LimitExceeded):
            plan(program, plans, budget())
    assert not plans._plans


def test_other_rates_are_not_reused() -> None:
    plans = PlanCache()
    program = {"steps": [{"op": "ones", "size": [1000]}]}
    plan(program, plans, budget())
    slower = Budget(1 << 24, 1 << 26, 1e12, throughput=Throughput("cpu", {}, 1e3))
    plan(program, plans, slower)
    assert slower.seconds > budget().seconds + 0.5  # 1000 elements at 1000 per second
    assert len(plans._plans) == 2


def test_long_programs_are_not_kept_and_the_oldest_plans_go_first() -> None:
    plans = PlanCache(entries=3, max_steps=2)
    plan({"steps": [{"op": "ones", "size": [1]}] * 3}, plans, budget())
    assert not plans._plans
    for size in range(1, 5):
        plan({"steps": [{"op": "ones", "size": [size]}]}, plans, budget())
    plan({"steps": [{"op": "ones", "size": [2]}]}, plans, budget())  # used again: kept longest
    plan({"steps": [{"op": "ones", "size": [5]}]}, plans, budget())
    sizes = [dict(key[3][0])["size"][1][0][1] for key in plans._plans]
    assert sizes == [4, 2, 5]


def test_a_program_of_a_large_key_is_planned_each_time() -> None:
    plans = PlanCache()
    long_name = "n" * KEY_ROOM  # names and index expressions count by their characters
    step = {"op": "ones", "size": [2], "dtype": None, "out": long_name}
    assert plan_program({}, [step], None, budget(), plans) == [long_name]
    many = {"op": "ones", "size": [1] * (KEY_ROOM + 1), "dtype": None, "out": "x"}
    with pytest.raises(InvalidInput):  # over torch's dimensions: planned (and refused) at once
        plan_program({}, [many], None, budget(), plans)
    assert not plans._plans


def test_over_http_a_kept_plan_answers_as_before_and_lets_no_larger_input_in() -> None:
    settings = make_settings(max_flops=1e6)

    def program(rows: int) -> dict[str, Any]:
        data = base64.b64encode(np.ones((rows, 64), np.float32).tobytes()).decode()
        return {
            "inputs": {"a": {"b64": data, "shape": [rows, 64], "dtype": "float32"}},
            "steps": [{"op": "matmul", "x": "a", "y": {"shape": [64, 1], "data": [[1.0]] * 64}}],
        }

    with TestClient(create_app(settings)) as client:
        for _ in range(3):  # planned, then kept
            out = ops(client, program(3))["outputs"]["out"]  # type: ignore[index]
            assert out["shape"] == [3, 1] and out["data"] == [[64.0]] * 3
        rows = int(settings.limits.max_flops // (2 * 64)) + 1  # over the FLOP limit
        assert rows * 64 <= settings.limits.max_elements
        response = client.post("/tensor/ops", json=program(rows))
    assert response.status_code == 413, response.text
    assert response.json()["details"]["limit"] == "max_flops"
