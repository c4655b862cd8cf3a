"""Retries and error answers that the real app does not give on demand, through
``httpx.MockTransport``: 429 with ``Retry-After`` then 200, 503s, connection errors, and the
answers that are never retried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import torchlab_client as tl
from torchlab_client import _retry

OK = {"status": "ok"}


class Script:
    """A mock service that answers from a list (the last answer repeats) and counts calls.

    Each entry is ``(status, body, headers)`` or an httpx exception class to raise.
    """

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.calls: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        if isinstance(answer, type) and issubclass(answer, httpx.RequestError):
            raise answer("scripted failure", request=request)
        status, body, headers = answer
        return httpx.Response(status, json=body, headers=headers)


def error(code: str, message: str = "no") -> dict[str, Any]:
    return {"error": message, "code": code, "details": {}}


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Records the waits between tries instead of sleeping (both clients)."""
    waits: list[float] = []
    monkeypatch.setattr(_retry, "sleep", waits.append)

    async def async_sleep(seconds: float) -> None:
        waits.append(seconds)

    monkeypatch.setattr(_retry, "async_sleep", async_sleep)
    return waits


def sync_client(script: Script, **options: Any) -> tl.Client:
    return tl.Client("http://mock", transport=httpx.MockTransport(script), **options)


def run_async(script: Script, call: Callable[[tl.AsyncClient], Any], **options: Any) -> Any:
    async def main() -> Any:
        transport = httpx.MockTransport(script)
        async with tl.AsyncClient("http://mock", transport=transport, **options) as client:
            return await call(client)

    return asyncio.run(main())


def test_429_with_retry_after_then_200(sleeps: list[float]) -> None:
    script = Script((429, error("too_many_requests"), {"Retry-After": "2"}), (200, OK, {}))
    with sync_client(script) as client:
        assert client.health().ok
    assert len(script.calls) == 2
    assert sleeps == [2.0]


def test_429_then_200_async(sleeps: list[float]) -> None:
    script = Script((429, error("too_many_requests"), {"Retry-After": "1"}), (200, OK, {}))
    health = run_async(script, lambda client: client.health())
    assert health.ok
    assert len(script.calls) == 2
    assert sleeps == [1.0]


def test_503_backs_off_exponentially(sleeps: list[float]) -> None:
    script = Script(
        (503, error("device_out_of_memory"), {}),
        (503, error("device_out_of_memory"), {}),
        (200, OK, {}),
    )
    retry = tl.Retry(total=2, backoff_factor=0.5, jitter=0)
    with sync_client(script, retries=retry) as client:
        assert client.health().ok
    assert sleeps == [0.5, 1.0]


def test_out_of_retries_raises_the_last_error(sleeps: list[float]) -> None:
    script = Script((503, error("device_out_of_memory"), {}))
    with sync_client(script, retries=2) as client, pytest.raises(tl.DeviceOutOfMemoryError):
        client.health()
    assert len(script.calls) == 3
    assert len(sleeps) == 2


def test_retries_zero_raises_at_once(sleeps: list[float]) -> None:
    script = Script((429, error("too_many_requests"), {"Retry-After": "1"}), (200, OK, {}))
    with sync_client(script, retries=0) as client, pytest.raises(tl.RateLimitedError) as caught:
        client.health()
    assert caught.value.retry_after == 1.0
    assert len(script.calls) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    ("status", "code", "family"),
    [
        (422, "validation_error", tl.ValidationError),
        (422, "invalid_tensor", tl.ValidationError),
        (422, "device_unavailable", tl.DeviceUnavailableError),
        (400, "malformed_body", tl.ValidationError),
        (401, "unauthorized", tl.UnauthorizedError),
        (404, "not_found", tl.NotFoundError),
        (413, "elements_limit", tl.TooLargeError),
        (504, "timeout", tl.ComputeTimeoutError),
        (500, "internal_error", tl.ServerError),
    ],
)
def test_never_retried(
    status: int, code: str, family: type[tl.APIError], sleeps: list[float]
) -> None:
    script = Script((status, error(code), {}), (200, OK, {}))
    with sync_client(script, retries=5) as client, pytest.raises(family) as caught:
        client.health()
    assert type(caught.value) is family
    assert caught.value.code == code
    assert len(script.calls) == 1
    assert sleeps == []


def test_connection_errors_are_retried(sleeps: list[float]) -> None:
    script = Script(httpx.ConnectError, httpx.ConnectError, (200, OK, {}))
    with sync_client(script, retries=tl.Retry(total=2, jitter=0)) as client:
        assert client.health().ok
    assert len(script.calls) == 3
    assert sleeps == [0.5, 1.0]


def test_connection_errors_become_transport_errors(sleeps: list[float]) -> None:
    script = Script(httpx.ConnectError)
    with sync_client(script, retries=1) as client, pytest.raises(tl.ConnectError) as caught:
        client.health()
    assert isinstance(caught.value, tl.TransportError)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(script.calls) == 2


def test_read_timeouts_are_not_retried(sleeps: list[float]) -> None:
    script = Script(httpx.ReadTimeout, (200, OK, {}))
    with sync_client(script, retries=3) as client, pytest.raises(tl.TransportTimeoutError):
        client.health()
    assert len(script.calls) == 1


def test_async_transport_errors(sleeps: list[float]) -> None:
    script = Script(httpx.ConnectError)
    with pytest.raises(tl.ConnectError):
        run_async(script, lambda client: client.health(), retries=1)
    assert len(script.calls) == 2


def test_a_long_retry_after_is_not_waited(sleeps: list[float]) -> None:
    script = Script((429, error("too_many_requests"), {"Retry-After": "600"}), (200, OK, {}))
    with sync_client(script) as client, pytest.raises(tl.RateLimitedError):
        client.health()
    assert sleeps == []


def test_success_that_is_not_the_contract() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>a proxy page</html>")

    with tl.Client("http://mock", transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(tl.ProtocolError):
            client.info()
        with pytest.raises(tl.ProtocolError):
            client.activate_png()


def test_the_request_carries_key_and_json(sleeps: list[float]) -> None:
    script = Script((200, {"outputs": {}, "device": "cpu", "elapsed_ms": 0.1}, {}))
    with sync_client(script, api_key="k1", headers={"X-Request-ID": "r1"}) as client:
        client.tensor_ops({"op": "ones", "size": [2]}, returns="out", seed=3)
    sent = script.calls[0]
    assert sent.url.path == "/tensor/ops"
    assert sent.headers["authorization"] == "Bearer k1"
    assert sent.headers["x-request-id"] == "r1"
    assert sent.headers["content-type"] == "application/json"
    body = httpx.Response(200, content=sent.content).json()
    assert body == {"steps": [{"op": "ones", "size": [2]}], "return": ["out"], "seed": 3}
