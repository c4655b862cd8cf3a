"""Calls that go wrong fail at the call, in the client's own terms (issue 15): a misspelt
keyword is a ``TypeError`` that names the parameter meant, an expression input the
expression never reads is a warning, every validation error of a 422 is listed, a closed
client raises a :class:`ClientClosedError`, a foreign error page is quoted short, and
``with_options`` changes the timeout and retries of a call. Each reproducer of the issue
fails on the client before it."""

from __future__ import annotations

import asyncio
import warnings
from typing import Any

import httpx
import numpy as np
import pytest
import torchlab_client as tl
from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.clients.conftest import run_async
from tests.clients.test_retries import OK, Script, error, sleeps  # noqa: F401 (a fixture)


def no_requests() -> tuple[tl.Client, list[httpx.Request]]:
    """A client whose transport records what reaches it (nothing, in these tests)."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(500)

    return tl.Client("http://mock", transport=httpx.MockTransport(handler)), calls


# --- typos -------------------------------------------------------------------------------------


def test_a_misspelt_option_of_grad_is_a_type_error() -> None:
    client, calls = no_requests()
    with pytest.raises(TypeError, match="did you mean 'hessian'"):  # returned no hessian
        client.grad("sum(x**2)", x=[1.0, 2.0], hesian=True)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="did you mean 'hessian'"):
        client.grad("sum(x**2)", inputs={"x": [1.0, 2.0]}, hesian=True)  # type: ignore[arg-type]
    assert calls == []


def test_grad_takes_inputs_and_options_apart(sync_client: tl.Client) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = sync_client.grad("sum(x**2)", inputs={"x": [1.0, 2.0]}, hessian=True)
    assert result.hessians is not None
    np.testing.assert_allclose(result.hessians["x"]["x"], 2 * np.eye(2))
    # Inputs that clash with the parameters' names are no problem either.
    clash = sync_client.grad("sum(hessian * wrt)", inputs={"hessian": [2.0], "wrt": [3.0]})
    assert float(clash.value) == 6.0


def test_keyword_inputs_still_work_with_a_deprecation_warning(sync_client: tl.Client) -> None:
    with pytest.warns(DeprecationWarning, match=r"inputs=\{") as caught:
        result = sync_client.grad("sum(x * y)", x=[1.0, 2.0], y=[3.0, 4.0])  # type: ignore[arg-type]
    np.testing.assert_array_equal(result.grads["x"], [3.0, 4.0])
    # only the matching warning: the record also holds any other warning raised meanwhile
    # (an unclosed resource collected then is attributed to whatever line runs)
    (deprecation,) = [w for w in caught if "inputs={" in str(w.message)]
    assert deprecation.filename == __file__  # the warning points at the call


def test_an_input_the_expression_never_uses_is_a_warning(sync_client: tl.Client) -> None:
    with pytest.warns(tl.TorchlabWarning, match=r"'weights' is not used.*did you mean 'weight'"):
        sync_client.grad("sum(weight * x)", inputs={"weight": [1.0], "x": [2.0], "weights": [3.0]})


@pytest.mark.parametrize(
    ("call", "meant"),
    [
        (lambda c: c.conv(input=np.ones((4, 4)), kernel_sizes=3), "kernel_size"),
        (lambda c: c.pool(input=np.ones((4, 4)), knd="avg"), "kind"),
        (lambda c: c.linear_regression(dataset="exam", fit_intercpt=False), "fit_intercept"),
        (lambda c: c.logistic_regression(dataset="iris", C=1.0), None),
        (lambda c: c.data_loader("iris", batchsize=10), "batch_size"),
        (lambda c: c.tensor_ops({"op": "ones", "size": [2]}, return_="out"), "returns"),
        (lambda c: c.benchmark(repeat=3), "repeats"),
        (lambda c: c.images(dataset="digits", transform=[]), "transforms"),
        (lambda c: c.activate_png("relu", column=2), "columns"),
    ],
)
def test_every_method_refuses_unknown_keywords_at_the_call(call: Any, meant: str | None) -> None:
    client, calls = no_requests()
    with pytest.raises(TypeError, match="unexpected keyword argument") as caught:  # a 422
        call(client)
    if meant:
        assert f"did you mean {meant!r}" in str(caught.value)
    assert calls == []


def test_the_async_client_refuses_them_too(app: FastAPI) -> None:
    async def scenario(client: tl.AsyncClient) -> None:
        await client.conv(input=np.ones((4, 4)), kernel_sizes=3)  # type: ignore[call-arg]

    with pytest.raises(TypeError, match="did you mean 'kernel_size'"):
        run_async(app, scenario)


def test_extra_fields_send_what_the_client_does_not_know(sync_client: tl.Client) -> None:
    with pytest.raises(tl.ValidationError, match="not_a_field"):
        sync_client.benchmark(8, 8, 8, devices="cpu", extra_fields={"not_a_field": 1})
    with pytest.raises(TypeError, match="pass it as one"):
        sync_client.benchmark(8, 8, 8, extra_fields={"m": 16})


# --- what a 422 says ---------------------------------------------------------------------------


def test_every_validation_error_is_listed(sync_client: tl.Client) -> None:
    with pytest.raises(tl.ValidationError) as caught:
        sync_client.tensor_ops({"op": "matmul", "a": "p", "b": "q"})  # showed the first only
    text = str(caught.value)
    for line in (
        "steps.0.matmul.x: Field required",
        "steps.0.matmul.y: Field required",
        "steps.0.matmul.a: Extra inputs are not permitted",
        "steps.0.matmul.b: Extra inputs are not permitted",
    ):
        assert line in text
    assert len(caught.value.errors) == 4


def test_a_foreign_error_page_is_quoted_short() -> None:
    page = "<html><head><title>502 Bad Gateway</title><style>p{}</style></head><body>"
    page += "<p>upstream failed</p>" * 2000 + "</body></html>"
    plain = "x" * 10_000

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/health":
            return httpx.Response(502, text=page, headers={"content-type": "text/html"})
        return httpx.Response(500, text=plain)

    with tl.Client("http://mock", transport=httpx.MockTransport(handler), retries=0) as client:
        with pytest.raises(tl.ServerError) as caught:  # was the whole page
            client.health()
        assert caught.value.message == "502 Bad Gateway"
        with pytest.raises(tl.ServerError) as caught:
            client.info()
    assert len(str(caught.value)) < 300
    assert "10,000 bytes" in str(caught.value)


# --- a closed client ---------------------------------------------------------------------------


def test_a_closed_client_raises_the_clients_error(test_client: TestClient) -> None:
    client = tl.Client("http://mock", transport=httpx.MockTransport(lambda r: httpx.Response(200)))
    client.close()
    with pytest.raises(tl.ClientClosedError, match="closed") as caught:  # httpx's RuntimeError
        client.health()
    assert isinstance(caught.value, tl.TorchlabError)
    assert isinstance(caught.value, RuntimeError)


def test_a_closed_async_client_raises_the_clients_error(app: FastAPI) -> None:
    async def main() -> None:
        transport = httpx.ASGITransport(app=app)
        async with tl.AsyncClient("http://testserver", transport=transport) as client:
            assert (await client.health()).ok
        await client.health()

    with pytest.raises(tl.ClientClosedError):
        asyncio.run(main())


# --- options per call --------------------------------------------------------------------------


def test_with_options_changes_timeout_and_retries_per_call(sleeps: list[float]) -> None:  # noqa: F811
    script = Script(
        (429, error("too_many_requests"), {"Retry-After": "1"}),
        (429, error("too_many_requests"), {"Retry-After": "1"}),
        (200, OK, {}),
    )
    with tl.Client("http://mock", transport=httpx.MockTransport(script), retries=2) as client:
        impatient = client.with_options(retries=0, timeout=1.5)
        with pytest.raises(tl.RateLimitedError):
            impatient.health()
        assert script.calls[-1].extensions["timeout"]["read"] == 1.5
        assert client.health().ok  # the client's own retries, over the same connections
        assert script.calls[-1].extensions["timeout"]["read"] == 60.0
        impatient.close()  # closes nothing that the client uses
        assert client.health().ok
    assert len(script.calls) == 4
    assert sleeps == [1.0]
    assert isinstance(impatient, tl.Client)
    assert repr(impatient) == "Client(base_url='http://mock')"


def test_with_options_on_the_async_client(app: FastAPI) -> None:
    async def scenario(client: tl.AsyncClient) -> Any:
        quick = client.with_options(timeout=5.0, as_torch=False, headers={"X-Request-ID": "r7"})
        assert isinstance(quick, tl.AsyncClient)
        assert quick.headers["X-Request-ID"] == "r7"
        assert "X-Request-ID" not in client.headers
        return await quick.health()

    assert run_async(app, scenario).ok
