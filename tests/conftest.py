"""Shared fixtures: an app with small limits, and a client that runs its lifespan."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings

from service.config import Settings
from service.device import DeviceManager
from service.main import create_app

CUDA = torch.cuda.is_available()

# `make test` (and so CI) runs the property tests on a fixed sequence of examples, so that a
# run's result does not depend on chance; run pytest alone to explore new examples.
hypothesis_settings.register_profile("ci", derandomize=True, deadline=None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords and not CUDA:
            item.add_marker(skip_gpu)


TEST_CALIBRATION = {
    **{f"cpu/{name}": 1e11 for name in ("float32", "float64", "complex64", "complex128")},
    **{f"cpu/{name}": 1e10 for name in ("bfloat16", "int64", "int32", "int16", "int8", "uint8")},
    "cpu/float16": 1e9,
    "cpu/elements": 1e9,
}


FAST_CALIBRATION = {key: rate * 1e4 for key, rate in TEST_CALIBRATION.items()}
"""A device thought ten thousand times faster than it is: plans are admitted that then run
past their deadline, for the tests of the deadline itself."""


def make_settings(**overrides: object) -> Settings:
    """Settings for tests: small limits so that refusals are cheap to provoke."""
    values: dict[str, object] = {
        "device": "auto",
        "max_body_bytes": 4 * 1024 * 1024,
        "max_elements": 1 << 22,
        "max_total_elements": 1 << 24,
        "max_flops": 1e10,
        "max_steps": 32,
        "request_timeout_s": 20.0,
        "max_inflight_per_device": 2,
        "queue_timeout_s": 0.5,
        "api_keys": [],
        "cors_origins": [],
        # Fixed device rates, so that predicted times (and so 413 over_time_budget) do not
        # depend on how busy the machine is when an app starts.
        "calibration": TEST_CALIBRATION,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@contextlib.contextmanager
def app_without_lifespan(settings: Settings) -> Iterator[FastAPI]:
    """An app used without its lifespan (its device manager starts on first use), whose
    worker processes end on leaving: left to the garbage collector, their sockets would be
    closed in the middle of a later test, with a ResourceWarning there."""
    app = create_app(settings)
    try:
        yield app
    finally:
        app.state.devices.close()


@pytest.fixture(scope="session")
def settings() -> Settings:
    return make_settings()


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    """One app for the whole session (building one warms torch's meta kernels, ~1 s)."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as test_client:
        yield test_client


def ops(client: TestClient, body: dict[str, object], **params: str) -> dict[str, object]:
    """POST /tensor/ops and return the JSON of a 200 answer."""
    response = client.post("/tensor/ops", json=body, params=params)
    assert response.status_code == 200, response.text
    result: dict[str, object] = response.json()
    return result


@pytest.fixture
def body_worker_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the functions sent to a body worker process (``DeviceManager.run_body``)
    while the test runs: where a test must know that a body was not read by the server."""
    calls: list[str] = []
    run_body = DeviceManager.run_body

    async def counted(self: DeviceManager, fn: Any, arg: Any) -> Any:
        calls.append(fn.__name__)
        return await run_body(self, fn, arg)

    monkeypatch.setattr(DeviceManager, "run_body", counted)
    return calls
