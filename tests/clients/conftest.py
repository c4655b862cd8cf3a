"""Fixtures for the client's tests: the real app in-process, both clients over it, a way to
skip tests of routes the service does not have yet, and a live uvicorn for the slow tests."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.main import create_app
from tests.conftest import app_without_lifespan, make_settings
from tests.live import free_port, spawn_uvicorn, stop, wait_for_health

ROOT = Path(__file__).resolve().parents[2]
CLIENT_SOURCE = ROOT / "clients" / "python"
# The client under test is the source tree's, whether or not it is also pip-installed.
if str(CLIENT_SOURCE) not in sys.path:
    sys.path.insert(0, str(CLIENT_SOURCE))

import torchlab_client as tl  # noqa: E402

T = TypeVar("T")

ROUTES: frozenset[str] = frozenset(create_app(make_settings()).openapi()["paths"])
"""The routes the service has now: tests of the others skip until they land."""


def needs(*paths: str) -> pytest.MarkDecorator:
    """Skip unless the service has every one of ``paths`` (vision: issue 4; regression and
    data: issue 5); the test runs by itself once they land."""
    missing = [path for path in paths if path not in ROUTES]
    return pytest.mark.skipif(bool(missing), reason=f"the service has no {', '.join(missing)} yet")


@pytest.fixture(scope="session")
def app() -> Iterator[FastAPI]:
    """The real app with the test settings. Its lifespan is not run: ``create_app`` builds
    its state eagerly and the device manager starts on first use."""
    with app_without_lifespan(make_settings()) as app:
        yield app


@pytest.fixture(scope="session")
def test_client(app: FastAPI) -> TestClient:
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def sync_client(test_client: TestClient) -> Iterator[tl.Client]:
    """A :class:`torchlab_client.Client` over Starlette's TestClient."""
    with tl.Client(http_client=test_client) as client:
        yield client


def run_async(
    app: FastAPI, scenario: Callable[[tl.AsyncClient], Awaitable[T]], **options: Any
) -> T:
    """Run ``scenario`` with an :class:`torchlab_client.AsyncClient` over
    ``httpx.ASGITransport(app)``, in a fresh event loop."""

    async def main() -> T:
        transport = httpx.ASGITransport(app=app)
        async with tl.AsyncClient("http://testserver", transport=transport, **options) as client:
            return await scenario(client)

    return asyncio.run(main())


class Recorder:
    """Collects the requests an httpx client sends (as an event hook)."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> None:
        self.requests.append(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


@pytest.fixture
def recorded(app: FastAPI) -> Iterator[tuple[TestClient, Recorder]]:
    """A TestClient over the app whose requests are recorded."""
    recorder = Recorder()
    test_client = TestClient(app, raise_server_exceptions=False)
    test_client.event_hooks = {"request": [recorder], "response": []}
    yield test_client, recorder
    test_client.close()


# --- a live server, for the slow tests -------------------------------------------------------


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``uvicorn service.main:app`` on a free loopback port, with the default settings."""
    port = free_port()
    log = tmp_path_factory.mktemp("uvicorn") / "server.log"
    process = spawn_uvicorn(port, {}, log, protocol=False)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, log)
        yield url
    finally:
        stop(process)
