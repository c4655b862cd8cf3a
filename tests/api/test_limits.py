"""Limits through HTTP: body size (declared and streamed), time (504), concurrency (429)."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api import compute
from service.api.compute import (
    ONE_THREAD_SECONDS,
    ONE_THREAD_STEP_SECONDS,
    ComputeJob,
    runs_on_one_thread,
)
from service.device import DeviceManager
from service.limits import Budget, Deadline
from service.main import create_app
from service.ops.nn.rnn import STEP_SECONDS
from tests.api.test_binary import frame, placeholder, read_frame, tensors_of
from tests.api.test_system import assert_error
from tests.conftest import FAST_CALIBRATION, app_without_lifespan, make_settings

SLOW_BENCHMARK = {"m": 1536, "k": 1536, "n": 1536, "repeats": 100, "warmup": 0, "devices": ["cpu"]}


def test_declared_body_over_the_limit_is_413_before_reading(client: TestClient, settings) -> None:
    size = settings.limits.max_body_bytes + 1
    response = client.post(
        "/tensor/ops", content=b" " * size, headers={"Content-Type": "application/json"}
    )
    body = assert_error(response, 413, "body_size_limit")
    assert body["details"] == {
        "limit": "max_body_bytes",
        "allowed": settings.limits.max_body_bytes,
        "requested": size,
    }
    assert client.get("/health").status_code == 200


def test_chunked_body_over_the_limit_is_413_while_streaming(client: TestClient, settings) -> None:
    sent = 0

    def chunks():
        nonlocal sent
        piece = b"[" + b"1," * 32767 + b"1]"
        while sent <= settings.limits.max_body_bytes * 4:
            sent += len(piece)
            yield piece

    response = client.post(
        "/tensor/ops", content=chunks(), headers={"Content-Type": "application/json"}
    )
    body = assert_error(response, 413, "body_size_limit")
    assert body["details"]["limit"] == "max_body_bytes"
    assert client.get("/health").status_code == 200


def test_over_the_time_limit_is_504_and_the_server_recovers() -> None:
    settings = make_settings(request_timeout_s=0.3, max_flops=1e12, calibration=FAST_CALIBRATION)
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        start = time.perf_counter()
        response = client.post("/benchmark", json=SLOW_BENCHMARK)
        assert time.perf_counter() - start < 5
        body = assert_error(response, 504, "timeout")
        assert body["details"]["limit"] == "request_timeout_s"
        assert client.get("/health").status_code == 200
        # The abandoned work stops at its next check and gives its slot back.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            small = client.post("/tensor/ops", json={"steps": [{"op": "ones", "size": [2]}]})
            if small.status_code == 200:
                break
        assert small.status_code == 200
        assert 'torchlab_limit_refusals_total{limit="request_timeout_s"} 1.0' in (
            client.get("/metrics").text
        )


def test_more_compute_than_the_device_allows_is_429_with_retry_after() -> None:
    settings = make_settings(
        max_inflight_per_device=1, queue_timeout_s=0.2, request_timeout_s=30, max_flops=1e12
    )
    slow = {**SLOW_BENCHMARK, "repeats": 40}
    # Over the inline threshold, so it needs a compute slot like any real work.
    small = {"steps": [{"op": "ones", "size": [100, 100]}]}
    # Tiny programs run on the event loop and never wait for a slot.
    tiny = {"steps": [{"op": "ones", "size": [2]}]}

    async def scenario(app: FastAPI) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            first = asyncio.create_task(client.post("/benchmark", json=slow))
            await asyncio.sleep(0.1)  # let it take the only CPU slot
            refused = await client.post("/tensor/ops", json=small)
            answered = await client.post("/tensor/ops", json=tiny)
            health = await client.get("/health")
            return [await first, refused, answered, health]

    with app_without_lifespan(settings) as app:
        first, refused, answered, health = asyncio.run(scenario(app))
    assert first.status_code == 200, first.text
    body = assert_error(refused, 429, "too_many_requests")
    assert refused.headers["Retry-After"] == "1"
    assert body["details"]["limit"] == "max_inflight_per_device"
    assert answered.status_code == 200
    assert health.status_code == 200


@pytest.mark.parametrize(
    ("program", "limit"),
    [
        ({"steps": [{"op": "zeros", "size": [1000000, 1000000]}]}, "max_elements"),
        (
            {
                "steps": [
                    {"op": "rand", "size": [100000, 1]},
                    {"op": "rand", "size": [1, 100000], "out": "b"},
                    {"op": "add", "x": "out", "y": "b"},
                ]
            },
            "max_elements",
        ),
        (
            {
                "steps": [
                    {"op": "ones", "size": [2000, 2000]},
                    {"op": "ones", "size": [2000, 2000], "out": "b"},
                    {"op": "matmul", "x": "out", "y": "b"},
                ]
            },
            "max_flops",
        ),
        ({"steps": [{"op": "ones", "size": [2]}] * 33}, "max_steps"),
    ],
)
def test_limits_answer_in_milliseconds(client: TestClient, program, limit: str) -> None:
    start = time.perf_counter()
    response = client.post("/tensor/ops", json=program)
    elapsed = time.perf_counter() - start
    body = assert_error(response, 413, response.json()["code"])
    assert body["details"]["limit"] == limit
    assert body["details"]["requested"] > body["details"]["allowed"]
    assert elapsed < 0.5
    assert client.get("/health").status_code == 200


def test_serial_steps_run_on_one_thread_while_one_thread_takes_them_in_time() -> None:
    def budget(seconds: float, steps: int) -> Budget:
        planned = Budget(1 << 20, 1 << 22, 1e12)
        planned.seconds = seconds
        planned.count_serial_steps(steps - 1)
        return planned

    assert runs_on_one_thread(budget(0.004, 1), threads=64)  # small in all
    # A fit of 10 steps of 4 ms (on every thread): 8 ms a step on one of 2, 64 ms on one of
    # 16, where the threads pay off.
    assert runs_on_one_thread(budget(0.04, 10), threads=2)
    assert not runs_on_one_thread(budget(0.04, 10), threads=16)
    assert not runs_on_one_thread(budget(0.2, 10), threads=2)  # 40 ms a step on one


def test_work_predicted_small_runs_on_one_thread(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[bool] = []
    run_isolated = DeviceManager.run_isolated

    async def spy(self: DeviceManager, fn: object, job: ComputeJob[object], *a, **kw) -> object:
        seen.append(job.one_thread)
        return await run_isolated(self, fn, job, *a, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(DeviceManager, "run_isolated", spy)

    def matmul(side: int) -> None:
        steps = [
            {"op": "ones", "size": [side, side], "dtype": "float64", "out": "a"},
            {"op": "matmul", "x": "a", "y": "a", "out": "p"},
            {"op": "sum", "x": "p", "out": "s"},
        ]
        response = client.post("/tensor/ops", json={"steps": steps, "return": ["s"]})
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["s"]["data"] == side**3

    # At the tests' rate (1e11 FLOP/s): 64^3 * 2 FLOPs is 5 µs, 1024^3 * 2 is 21 ms.
    assert 2 * 64**3 / 1e11 < ONE_THREAD_SECONDS < 2 * 1024**3 / 1e11
    matmul(64)
    matmul(1024)
    assert seen == [True, False]

    # An LSTM of 400 steps: more than ONE_THREAD_SECONDS in all, a few µs per step.
    assert 400 * STEP_SECONDS > ONE_THREAD_SECONDS
    assert 2 * STEP_SECONDS * torch.get_num_threads() < ONE_THREAD_STEP_SECONDS
    lstm = {"mode": "lstm", "input_size": 8, "hidden_size": 16, "input": [[[0.5] * 8]] * 400}
    response = client.post("/layers/rnn", json={**lstm, "seed": 0})
    assert response.status_code == 200, response.text
    assert seen == [True, False, True]


MEMORY_LIMIT = 128 << 20


@pytest.fixture(scope="module")
def limited() -> Iterator[TestClient]:
    """An app whose workers may take 128 MiB beyond what they hold at rest."""
    settings = make_settings(
        worker_max_memory_bytes=MEMORY_LIMIT, max_elements=1 << 25, max_total_elements=1 << 27
    )
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def test_a_request_past_the_workers_memory_limit_is_503_and_the_worker_goes_on(
    limited: TestClient,
) -> None:
    """What the cost model admits but the worker's memory limit does not: the allocation
    fails in the worker and the answer is a 503 naming the limit, whichever route it was
    (each turns torch's other errors into 422s), and the next request is served."""
    big = 1 << 24  # 128 MiB of float64
    requests = [  # in binary: in JSON, the answer would be over max_response_bytes (a 413)
        (
            "/tensor/ops",
            {
                "steps": [
                    {"op": "ones", "size": [big], "dtype": "float64", "out": "x"},
                    {"op": "add", "x": "x", "y": "x", "out": "y"},
                    {"op": "mul", "x": "y", "y": "x", "out": "z"},
                    {"op": "sum", "x": "z"},
                ]
            },
        ),
        (
            "/activate",
            {
                "function": "tanh",
                "range": {"start": -3, "end": 3, "steps": big, "dtype": "float64"},
                "derivative": True,
            },
        ),
    ]
    for path, body in requests:
        response = limited.post(path, json=body, params={"encoding": "binary"})
        answer = assert_error(response, 503, "device_out_of_memory")
        assert answer["details"]["limit"] == "worker_max_memory_bytes"
        assert answer["details"]["allowed"] == MEMORY_LIMIT
        assert "can't allocate memory" in answer["details"]["reason"]
    small = {
        "steps": [
            {"op": "ones", "size": [big // 16], "dtype": "float64", "out": "x"},
            {"op": "sum", "x": "x"},
        ]
    }
    response = limited.post("/tensor/ops", json=small)
    assert response.status_code == 200, response.text
    assert response.json()["outputs"]["out"]["data"] == big // 16
    assert limited.get("/health").status_code == 200


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_half_precision_softmax_along_a_long_first_dimension_stays_small(
    limited: TestClient, dtype: torch.dtype
) -> None:
    """torch's CPU softmax of 16-bit floats along a dimension other than the last takes
    about 500 bytes per row of it (260 MB for this 2 MB input, past the workers' 128 MiB):
    every route computes it in float32 and casts back, which takes a few MB."""
    x = torch.randn(1 << 19, 2, generator=torch.Generator().manual_seed(3)).to(dtype)
    raw = x.view(torch.int16).numpy().tobytes() if dtype == torch.bfloat16 else x.numpy().tobytes()
    name = str(dtype).removeprefix("torch.")
    wire = placeholder(x, name)
    v2_input = {"name": "input", "parameters": {"binary_data_size": len(raw)}}
    v2_input |= {"shape": list(x.shape), "datatype": "FP16" if name == "float16" else "BF16"}
    requests = {
        "softmax": (
            "/tensor/ops",
            {"inputs": {"x": wire}, "steps": [{"op": "softmax", "x": "x", "dim": 0}]},
        ),
        "softmin": ("/activate", {"function": "softmin", "x": wire, "params": {"dim": 0}}),
        "softmax_v2": (
            "/v2/models/softmax/infer",
            {"inputs": [v2_input], "parameters": {"dim": 0}},
        ),
        "softmax_grad": ("/grad", {"expression": "sum(softmax(x, 0) * x)", "inputs": {"x": wire}}),
    }
    requests["softmax_v2"][1]["parameters"]["binary_data_output"] = True
    softmax = torch.softmax(x.float(), 0).to(dtype)
    leaf = x.clone().requires_grad_()
    value = (torch.softmax(leaf.float(), 0).to(dtype) * leaf).sum()
    (grad,) = torch.autograd.grad(value, leaf)
    expected = {
        "softmax": {".outputs.out": softmax},
        "softmin": {".results[0].y": torch.softmax(-x.float(), 0).to(dtype)},
        "softmax_v2": {"output": softmax},
        "softmax_grad": {".value": value.detach(), ".grads.x": grad},
    }
    for what, (path, body) in requests.items():
        content, headers = frame(body, [raw])
        params = {} if what == "softmax_v2" else {"encoding": "binary"}
        response = limited.post(path, content=content, headers=headers, params=params)
        answer, binary = read_frame(response)
        if what == "softmax_v2":
            got = {"output": torch.from_numpy(np.frombuffer(binary, np.int16).copy())}
            got["output"] = got["output"].view(dtype).reshape(x.shape)
        else:
            got = dict(tensors_of(answer, binary))
        for where, want in expected[what].items():
            torch.testing.assert_close(got[where], want, rtol=0.02, atol=1e-3, msg=what)
            if what != "softmax_grad":
                assert torch.equal(got[where], want), what  # the float32 result, rounded once


@pytest.mark.parametrize("elements", [4, 1 << 14])  # on the event loop, in a worker
def test_subnormal_floats_count_as_zero_in_arithmetic(client: TestClient, elements: int) -> None:
    """A CPU takes a slow path for each subnormal operand (a 1024² float32 matmul of them
    took 9.7 s, 70 ms otherwise, charged at the rate of the latter): the service computes
    as torch does after ``torch.set_flush_denormal(True)``."""
    x = torch.full((elements,), 1e-39)
    encoded = {"b64": base64.b64encode(x.numpy().tobytes()).decode(), "shape": [elements]}
    body = {
        "inputs": {"x": {**encoded, "dtype": "float32"}},
        "steps": [{"op": "mul", "x": "x", "y": 3.0}],
    }
    got = client.post("/tensor/ops", json=body, params={"encoding": "b64"})
    assert got.status_code == 200, got.text
    wire = got.json()["outputs"]["out"]
    values = np.frombuffer(base64.b64decode(wire["b64"]), dtype=np.float32)
    assert torch.set_flush_denormal(True)
    try:
        expected = (x * 3.0).numpy()
    finally:
        torch.set_flush_denormal(False)
    np.testing.assert_array_equal(values, expected)
    assert not expected.any() and (x * 3.0).numpy().any()  # flushed, where torch would not
    kept = client.post(
        "/tensor/ops",
        json={**body, "steps": [{"op": "clone", "x": "x"}]},
        params={"encoding": "b64"},
    ).json()["outputs"]["out"]
    assert kept["b64"] == encoded["b64"]  # a copy keeps them: only arithmetic flushes
    # Numbers in JSON keep them too, where a body worker parses a large body.
    listed = {"inputs": {"x": {"data": x.tolist()}}, "steps": [{"op": "clone", "x": "x"}]}
    parsed = client.post("/tensor/ops", json=listed, params={"encoding": "b64"})
    assert parsed.json()["outputs"]["out"]["b64"] == encoded["b64"]


def _leases(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The compute slots taken from now on (their devices), one entry a lease."""
    devices = client.app.state.devices  # type: ignore[attr-defined]
    leased: list[object] = []
    lease = devices.lease

    async def counted(*args: object, **kwargs: object) -> object:
        leased.append(args)
        return await lease(*args, **kwargs)

    monkeypatch.setattr(devices, "lease", counted)
    return leased


def test_an_answer_too_large_is_refused_before_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    # The plan knows the answer's tensors: a 5000×3000 by 3000×5000 float64 matmul in JSON
    # had computed for 2 s before its 413 (0.07 s now).
    settings = make_settings(max_response_bytes=64 * 1024)
    program = {
        "steps": [
            {"op": "ones", "size": [60, 60], "dtype": "float64", "out": "a"},
            {"op": "matmul", "x": "a", "y": "a", "out": "b"},
        ]
    }
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        leased = _leases(client, monkeypatch)
        for _ in range(2):  # planned, then from the plans kept
            body = assert_error(
                client.post("/tensor/ops", json=program), 413, "response_bytes_limit"
            )
            assert body["details"]["limit"] == "max_response_bytes"
            assert body["details"]["requested"] > 64 * 1024
        assert leased == []
        # 28.8 KB of bytes: the same program answers in binary, computed.
        response = client.post("/tensor/ops?encoding=binary", json=program)
        assert response.status_code == 200, response.text
        assert len(leased) == 1
        ok = client.post(
            "/tensor/ops", json={**program, "return": ["a"]}, params={"encoding": "b64"}
        )
        assert ok.status_code == 200
        np.testing.assert_array_equal(
            np.frombuffer(base64.b64decode(ok.json()["outputs"]["a"]["b64"])).reshape(60, 60),
            torch.ones(60, 60, dtype=torch.float64).numpy(),
        )


def test_a_programs_answer_is_sized_from_its_plan_not_again_after_the_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sized: list[object] = []
    after = compute.check_response_size

    def counted(content: object, *args: object) -> None:
        sized.append(content)
        after(content, *args)

    monkeypatch.setattr(compute, "check_response_size", counted)
    with TestClient(create_app(make_settings())) as client:  # tiny: run inline, here
        program = {"steps": [{"op": "arange", "end": 6, "out": "a"}]}
        response = client.post("/tensor/ops", json=program)
        assert response.status_code == 200, response.text
        assert response.json()["outputs"]["a"]["data"] == list(range(6))
        assert sized == []  # its plan knew the answer's shape and dtype
    # Work whose plan does not know its answer is sized after it.
    job = ComputeJob(_three_ones, None, "json", [torch.device("cpu")], 1 << 20)
    compute.run_job(job, Deadline(5.0))
    assert len(sized) == 1
    job.sized = True
    compute.run_job(job, Deadline(5.0))
    assert len(sized) == 1


def _three_ones(plan: object, deadline: Deadline) -> dict[str, torch.Tensor]:
    return {"t": torch.ones(3)}


def test_an_rnns_answer_too_large_is_refused_before_the_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An LSTM's weights in JSON had run for 6 s before their 413.
    settings = make_settings(max_response_bytes=64 * 1024)
    body = {"mode": "lstm", "input_size": 4, "hidden_size": 64, "input": [[0.5] * 4] * 3}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        leased = _leases(client, monkeypatch)
        refused = assert_error(client.post("/layers/rnn", json=body), 413, "response_bytes_limit")
        assert refused["details"]["limit"] == "max_response_bytes"
        assert leased == []
        # Without the weights (17,408 of them) the answer fits, and is computed.
        quiet = client.post("/layers/rnn", json={**body, "return_weights": False})
        assert quiet.status_code == 200, quiet.text
        assert quiet.json()["weights"] is None
        assert len(quiet.json()["output"]["data"]) == 3


def test_answers_too_large_are_refused_before_the_work_on_every_route_that_plans_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Their plans know the answer's tensors: a feature map (a Linear layer's output, an
    # activation's values) too large for JSON is a 413 without a compute slot taken, and
    # fits in binary.
    settings = make_settings(max_response_bytes=64 * 1024)
    x = {"data": [0.5] * (64 * 64), "shape": [1, 1, 64, 64]}
    conv = {"input": x, "kernels": ["edge", "random", "sobel_x"], "kernel_size": 3, "seed": 0}
    pool = {"input": x, "kind": "avg", "kernel_size": 1}
    linear = {"in_features": 4, "out_features": 64, "input": [[0.5] * 4] * 64, "seed": 0}
    activate = {"function": "relu", "range": {"steps": 4000}}
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        leased = _leases(client, monkeypatch)
        bodies = {"/conv": conv, "/pool": pool, "/layers/linear": linear, "/activate": activate}
        for path, body in bodies.items():
            refused = assert_error(client.post(path, json=body), 413, "response_bytes_limit")
            assert refused["details"]["limit"] == "max_response_bytes"
            assert refused["details"]["requested"] > 64 * 1024
        assert leased == []
        answer, binary = read_frame(client.post("/conv?encoding=binary", json=conv))
        outputs = dict(tensors_of(answer, binary))
        assert len(leased) == 1
        weight = outputs[".weight"].reshape(3, 1, 3, 3)
        expected = torch.nn.functional.conv2d(torch.full((1, 1, 64, 64), 0.5), weight)
        torch.testing.assert_close(outputs[".output"].reshape(1, 3, 62, 62), expected)
